// The syncgate page: sign in, ask for a sync, and follow the run until the consumer handled it.
// Plain browser JavaScript: no build step, no dependencies; `call` and `csrfToken` are
// static/api.js's.
"use strict";

const POLL_EVERY_MS = 500;
const POLL_FOR_MS = 120000;

const $ = (id) => document.getElementById(id);
let pollTimer = null;

function show(id, visible) {
  $(id).hidden = !visible;
}

function say(text) {
  $("message").textContent = text || "";
  show("message", Boolean(text));
}

// A readable sentence for a failed response, from the gateway's {"error": {code, message}}.
async function describeFailure(response) {
  let code = "";
  let detail = "";
  try {
    const body = await response.json();
    code = (body && body.error && body.error.code) || "";
    detail = (body && body.error && body.error.message) || "";
  } catch (ignored) {
    // Not JSON (a proxy's error page, say): the status says enough.
  }
  const because = detail ? ` (${detail})` : "";
  if (code === "invalid_credentials") return `Sign-in failed: ${detail || "wrong email or password"}.`;
  switch (response.status) {
    case 401:
      return `You are not signed in${because}. Sign in again.`;
    case 403:
      return `The gateway refused the request${because}. Reload the page and try again.`;
    case 429:
      return `Too many attempts${because}. Wait ${response.headers.get("Retry-After") || "a while"} s and try again.`;
    case 503: {
      const after = response.headers.get("Retry-After");
      const wait = after ? ` Try again in ${after} s.` : " Try again shortly.";
      return `The service is unavailable right now${because}.${wait}`;
    }
    default:
      return detail ? `Error ${response.status}: ${detail}` : `Error ${response.status}.`;
  }
}

function signedOut(message) {
  csrfToken = null;
  stopPolling();
  show("signed-in", false);
  show("signed-out", true);
  say(message);
}

function signedIn(user) {
  $("user-name").textContent = user.name;
  $("user-email").textContent = `(${user.email})`;
  show("signed-out", false);
  show("signed-in", true);
  say("");
}

async function fetchCsrfToken() {
  const response = await call("GET", "/api/auth/csrf");
  if (response.ok) csrfToken = (await response.json()).csrfToken || null;
}

async function start() {
  try {
    const response = await call("GET", "/api/auth/session");
    const body = response.ok ? await response.json() : {};
    if (body.user) {
      signedIn(body.user);
      await fetchCsrfToken();
    } else {
      signedOut("");
    }
  } catch (error) {
    signedOut("The gateway cannot be reached. Reload the page to try again.");
  }
}

async function login(event) {
  event.preventDefault();
  const button = $("login-button");
  button.disabled = true;
  try {
    const response = await call("POST", "/api/auth/login", {
      email: $("email").value,
      password: $("password").value,
    });
    if (!response.ok) {
      say(await describeFailure(response));
      return;
    }
    const body = await response.json();
    csrfToken = body.csrfToken || null;
    $("password").value = "";
    signedIn(body.user);
  } catch (error) {
    say("The gateway cannot be reached. Check your connection and try again.");
  } finally {
    button.disabled = false;
  }
}

async function logout() {
  try {
    await call("POST", "/api/auth/logout");
  } finally {
    signedOut("You are signed out.");
  }
}

function showRun(eventId, status, detail) {
  $("event-id").textContent = eventId;
  const badge = $("run-status");
  badge.textContent = status;
  badge.className = `status ${status}`;
  $("run-detail").textContent = detail || "";
  show("run", true);
}

function stopPolling() {
  if (pollTimer !== null) clearTimeout(pollTimer);
  pollTimer = null;
}

function pollRun(eventId, until) {
  pollTimer = setTimeout(async () => {
    try {
      const response = await call("GET", `/api/runs/${encodeURIComponent(eventId)}`);
      if (response.status === 401) return signedOut(await describeFailure(response));
      if (response.ok) {
        const run = await response.json();
        if (run.status === "handled") {
          const at = new Date(run.handledAt).toLocaleTimeString();
          pollTimer = null;
          return showRun(eventId, "handled", `at ${at}`);
        }
      } else {
        say(await describeFailure(response));
      }
    } catch (error) {
      say("Lost contact with the gateway; still trying.");
    }
    if (Date.now() < until) return pollRun(eventId, until);
    pollTimer = null;
    showRun(eventId, "received", "not handled yet: is the consumer running?");
  }, POLL_EVERY_MS);
}

async function syncNow() {
  const button = $("sync-button");
  button.disabled = true;
  stopPolling();
  say("");
  try {
    if (!csrfToken) await fetchCsrfToken();
    const response = await call("POST", "/api/sync", {});
    if (response.status === 401) return signedOut(await describeFailure(response));
    if (response.status !== 202) {
      say(await describeFailure(response));
      return;
    }
    const { id } = await response.json();
    showRun(id, "received", "waiting for the consumer");
    pollRun(id, Date.now() + POLL_FOR_MS);
  } catch (error) {
    say("The gateway cannot be reached. Check your connection and try again.");
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout-button").addEventListener("click", logout);
  $("sync-button").addEventListener("click", syncNow);
  start();
});
