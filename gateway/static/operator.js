// The operators' DLQ page: list a queue of dead letters, show a body, replay, discard, and
// the audit trail. Every answer comes from /api/operator/*, which checks the role itself.
// `call` and `csrfToken` are static/api.js's, loaded before this script.
"use strict";

const $ = (id) => document.getElementById(id);
let queue = "dlq";
let page = 1;
let shownEventId = null;

function say(text) {
  $("message").textContent = text || "";
  $("message").hidden = !text;
}

async function describeFailure(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = (body && body.error && body.error.message) || "";
  } catch (ignored) {
    // not JSON
  }
  if (response.status === 401) return "You are not signed in: sign in on the main page first.";
  if (response.status === 403) return `Refused: ${detail || "this page is for operators"}.`;
  if (response.status === 503) {
    const after = response.headers.get("Retry-After");
    return `The broker cannot be reached right now.${after ? ` Try again in ${after} s.` : ""}`;
  }
  return detail ? `Error ${response.status}: ${detail}` : `Error ${response.status}.`;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function when(ms) {
  return ms === null || ms === undefined ? "-" : new Date(ms).toISOString().replace("T", " ").slice(0, 19);
}

async function load() {
  say("");
  const response = await call("GET", `/api/operator/queues/${queue}?page=${page}`);
  if (!response.ok) {
    say(await describeFailure(response));
    return false;
  }
  const data = await response.json();
  const body = $("letters").querySelector("tbody");
  body.replaceChildren();
  for (const item of data.items) {
    const row = document.createElement("tr");
    row.dataset.eventId = item.eventId;
    const pick = document.createElement("input");
    pick.type = "checkbox";
    pick.className = "pick";
    pick.value = item.eventId;
    pick.setAttribute("aria-label", `select ${item.eventId}`);
    cell(row, "").appendChild(pick);
    cell(row, item.position);
    cell(row, when(item.deadLetteredAt));
    cell(row, item.eventId);
    cell(row, item.reason);
    cell(row, item.attempts);
    cell(row, item.routingKey);
    cell(row, item.error, "error");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "small";
    open.textContent = "Body";
    open.addEventListener("click", () => showBody(item.eventId));
    cell(row, "").appendChild(open);
    body.appendChild(row);
  }
  const first = (data.page - 1) * data.pageSize + 1;
  const last = first + data.items.length - 1;
  const range = data.items.length ? `showing ${first}-${last}` : "nothing on this page";
  const beyond = data.beyondReadDepth
    ? ` ${data.beyondReadDepth} more lie beyond the read depth of ${data.readDepth} and are not shown;` +
      " replay or discard those before them to reach them."
    : "";
  $("summary").textContent = `${data.queue}: ${data.count} message(s), oldest first; ${range}.${beyond}`;
  $("previous").disabled = data.page <= 1;
  $("next").disabled = last >= Math.min(data.count, data.readDepth) || !data.items.length;
  $("select-all").checked = false;
  await loadAudit();
  return true;
}

async function loadAudit() {
  const response = await call("GET", "/api/operator/audit");
  if (!response.ok) return;
  const body = $("audit").querySelector("tbody");
  body.replaceChildren();
  for (const entry of (await response.json()).entries) {
    const row = document.createElement("tr");
    cell(row, when(entry.at));
    cell(row, entry.email);
    cell(row, entry.action);
    cell(row, entry.queue);
    cell(row, entry.eventId);
    cell(row, entry.outcome === "done" ? "done" : `failed: ${entry.detail}`);
    body.appendChild(row);
  }
}

async function showBody(eventId) {
  const response = await call("GET", `/api/operator/queues/${queue}/events/${encodeURIComponent(eventId)}`);
  if (!response.ok) {
    say(await describeFailure(response));
    return;
  }
  const data = await response.json();
  shownEventId = eventId;
  $("detail-id").textContent = eventId;
  const note = data.truncated ? `\n… (${data.bytes} bytes in all)` : "";
  $("detail-body").textContent = `${data.encoding === "base64" ? "[base64] " : ""}${data.body}${note}`;
  $("discard-confirm").value = "";
  $("detail").hidden = false;
}

async function replay(body, what) {
  $("progress").textContent = `Replaying ${what}…`;
  for (const id of ["replay-selected", "replay-all"]) $(id).disabled = true;
  try {
    const response = await call("POST", `/api/operator/queues/${queue}/replay`, body);
    if (!response.ok) {
      $("progress").textContent = "";
      say(await describeFailure(response));
      return;
    }
    const result = await response.json();
    const failures = result.results.filter((r) => r.outcome === "failed").map((r) => r.error);
    $("progress").textContent =
      `Replayed ${result.replayed}, failed ${result.failed}.` + (failures.length ? ` ${failures.join("; ")}` : "");
    $("detail").hidden = true;
    await load();
  } finally {
    for (const id of ["replay-selected", "replay-all"]) $(id).disabled = false;
  }
}

// A long queue is replayed in steps, with progress; the total is the count at the start,
// so an event that fails again and lands behind the others is not replayed in a loop.
const REPLAY_STEP = 25;

async function replayAll() {
  const buttons = ["replay-selected", "replay-all"];
  for (const id of buttons) $(id).disabled = true;
  try {
    const first = await call("GET", `/api/operator/queues/${queue}?page=1`);
    if (!first.ok) return say(await describeFailure(first));
    const total = (await first.json()).count;
    let done = 0;
    let failed = 0;
    const failures = [];
    while (done + failed < total) {
      $("progress").textContent = `Replaying: ${done} of ${total} done…`;
      const limit = Math.min(REPLAY_STEP, total - done - failed);
      const response = await call("POST", `/api/operator/queues/${queue}/replay`, { all: true, limit });
      if (!response.ok) {
        say(await describeFailure(response));
        break;
      }
      const result = await response.json();
      done += result.replayed;
      failed += result.failed;
      failures.push(...result.results.filter((r) => r.outcome === "failed").map((r) => r.error));
      if (result.failed || result.replayed === 0) break; // the head cannot be replayed: stop
    }
    $("progress").textContent =
      `Replayed ${done} of ${total}, failed ${failed}.` + (failures.length ? ` ${failures.join("; ")}` : "");
    $("detail").hidden = true;
    await load();
  } finally {
    for (const id of buttons) $(id).disabled = false;
  }
}

async function discard(event) {
  event.preventDefault();
  const typed = $("discard-confirm").value;
  if (typed !== shownEventId) {
    say("Type the event id exactly to discard it; nothing was removed.");
    return;
  }
  const response = await call("POST", `/api/operator/queues/${queue}/discard`, { eventId: shownEventId, confirm: typed });
  if (!response.ok) {
    say(await describeFailure(response));
    return;
  }
  $("progress").textContent = `Discarded ${shownEventId}.`;
  $("detail").hidden = true;
  await load();
}

function choose(name) {
  queue = name;
  page = 1;
  $("show-dlq").setAttribute("aria-pressed", String(name === "dlq"));
  $("show-unrouted").setAttribute("aria-pressed", String(name === "unrouted"));
  $("detail").hidden = true;
  $("progress").textContent = "";
  load();
}

async function start() {
  try {
    const session = await call("GET", "/api/auth/session");
    const who = session.ok ? await session.json() : {};
    if (!who.user) {
      say("You are not signed in: sign in on the main page first.");
      return;
    }
    $("user-name").textContent = who.user.name;
    const token = await call("GET", "/api/auth/csrf");
    if (token.ok) csrfToken = (await token.json()).csrfToken || null;
    if (await load()) $("operator").hidden = false;
  } catch (error) {
    say("The gateway cannot be reached. Reload the page to try again.");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("show-dlq").addEventListener("click", () => choose("dlq"));
  $("show-unrouted").addEventListener("click", () => choose("unrouted"));
  $("refresh").addEventListener("click", () => load());
  $("previous").addEventListener("click", () => { page = Math.max(1, page - 1); load(); });
  $("next").addEventListener("click", () => { page += 1; load(); });
  $("select-all").addEventListener("change", (event) => {
    for (const box of document.querySelectorAll("input.pick")) box.checked = event.target.checked;
  });
  $("replay-selected").addEventListener("click", () => {
    const ids = [...document.querySelectorAll("input.pick:checked")].map((box) => box.value);
    if (!ids.length) return say("Select the events to replay first.");
    replay({ eventIds: ids }, `${ids.length} event(s)`);
  });
  $("replay-all").addEventListener("click", replayAll);
  $("discard-form").addEventListener("submit", discard);
  start();
});
