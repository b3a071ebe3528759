// GET /asyncapi: the AsyncAPI document of syncgate's events (/asyncapi.json), drawn by the
// AsyncAPI React component's standalone bundle, served by the gateway (gateway/viewer/),
// never from a CDN.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  AsyncApiStandalone.render(
    {
      schema: { url: "/asyncapi.json", requestOptions: { credentials: "same-origin" } },
      config: { show: { sidebar: true, errors: true }, sidebar: { showOperations: "byDefault" } },
    },
    document.getElementById("asyncapi"),
  );
});
