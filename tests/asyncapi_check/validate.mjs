// Reads an AsyncAPI document on stdin and validates it with @asyncapi/parser (its JSON
// Schema of the spec and its Spectral rules). Prints every diagnostic on stderr, one JSON
// object a line, and a summary of the parsed document on stdout. Exit 1 on any error or
// warning: tests/unit/test_asyncapi.py holds our document to both.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const SEVERITY = ["error", "warning", "info", "hint"];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(0, "utf8"));
for (const d of diagnostics) {
  console.error(JSON.stringify({ severity: SEVERITY[d.severity], code: d.code, message: d.message, path: d.path }));
}
const failed = diagnostics.filter((d) => d.severity <= 1);
if (document === undefined || failed.length > 0) {
  process.exit(1);
}
console.log(
  JSON.stringify({
    version: document.version(),
    channels: document.channels().all().map((c) => c.id()),
    operations: document.operations().all().map((o) => o.id()),
    messages: document.messages().all().map((m) => m.id()),
  }),
);
