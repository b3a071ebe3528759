// GET /docs: Swagger UI (served from the swagger-ui-py package, never a CDN) over
// /openapi.json. "Try it out" runs in this page's origin, so the browser sends the session
// cookie itself; state-changing requests also need the session's CSRF token, which this
// page reads from GET /api/auth/csrf and adds as the X-CSRF-Token header.
"use strict";

let csrfToken = null;

async function readCsrfToken() {
  try {
    const response = await fetch("/api/auth/csrf", { credentials: "same-origin" });
    if (!response.ok) return null; // not signed in: requests then answer 401, as they should
    const body = await response.json();
    return body.csrfToken || null;
  } catch (ignored) {
    return null;
  }
}

window.addEventListener("DOMContentLoaded", async () => {
  csrfToken = await readCsrfToken();
  const note = document.getElementById("signed-in");
  note.textContent = csrfToken
    ? "Signed in: Try it out sends your session and its CSRF token."
    : "Not signed in: Try it out answers 401 until you sign in on the page.";
  note.hidden = false;
  document.getElementById("api").textContent = "";
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#api",
    deepLinking: true,
    // The document's own example values, not made-up ones.
    defaultModelsExpandDepth: 0,
    requestInterceptor: (request) => {
      const method = (request.method || "GET").toUpperCase();
      if (csrfToken && !["GET", "HEAD", "OPTIONS"].includes(method)) {
        request.headers["X-CSRF-Token"] = csrfToken;
      }
      request.credentials = "same-origin";
      return request;
    },
  });
});
