// Shared by the gateway's pages (index.html, operator.html), loaded before each page's own
// script: JSON requests to the gateway, the state-changing ones with the session's CSRF token
// once the page has it. Plain browser JavaScript: no build step, no dependencies.
"use strict";

// The session's CSRF token; each page sets it from the login answer or GET /api/auth/csrf.
let csrfToken = null;

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  return fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}
