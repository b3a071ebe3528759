// Renders /openapi.json as plain HTML: no framework, no CDN, text only (no innerHTML).
"use strict";

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function schemaBlock(title, schema) {
  const details = el("details");
  details.append(el("summary", title), el("pre", JSON.stringify(schema, null, 2)));
  return details;
}

function renderOperation(method, path, op) {
  const section = el("section", undefined, "operation");
  const heading = el("h3");
  heading.append(el("span", method.toUpperCase(), "method"), el("span", path, "path"));
  section.append(heading, el("p", op.summary || ""));
  if (op.description) section.append(el("p", op.description));
  const security = (op.security || []).map((s) => Object.keys(s).join(" + ")).join(", ");
  section.append(el("p", "Needs: " + (security || "nothing")));
  if (op.requestBody) {
    for (const [type, media] of Object.entries(op.requestBody.content)) {
      section.append(schemaBlock("Body (" + type + ")", media.schema));
    }
  }
  const table = el("table");
  const head = el("tr");
  head.append(el("th", "status"), el("th", "meaning"), el("th", "body"));
  table.append(head);
  for (const [status, response] of Object.entries(op.responses)) {
    const row = el("tr");
    const body = el("td");
    for (const [type, media] of Object.entries(response.content || {})) {
      const ref = media.schema && media.schema.$ref;
      body.append(el("code", ref ? ref.split("/").pop() : type));
    }
    row.append(el("td", status), el("td", response.description), body);
    table.append(row);
  }
  section.append(table);
  return section;
}

async function main() {
  const root = document.getElementById("api");
  try {
    const response = await fetch("/openapi.json");
    const doc = await response.json();
    root.replaceChildren(el("p", doc.info.description));
    for (const [path, operations] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(operations)) {
        root.append(renderOperation(method, path, op));
      }
    }
    root.append(el("h2", "Schemas"));
    for (const [name, schema] of Object.entries(doc.components.schemas)) {
      root.append(schemaBlock(name, schema));
    }
  } catch (error) {
    root.replaceChildren(el("p", "Could not load /openapi.json: " + error));
  }
}

main();
