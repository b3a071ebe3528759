"""GET /schemas/{file}: the JSON Schema of each registered event, where `dataschema` points.

Only the files the registry names are served, read once when the app is made; any other name
(a traversal attempt included: nothing is looked up on disk by a name from the request) is a
404 in the error shape. A released version's schema never changes (a new version gets a new
file), so clients may cache it for a day.
"""

from __future__ import annotations

from aiohttp import web

from gateway.routing import add_get
from schemas.export import SCHEMA_DIR
from schemas.registry import REGISTRY, EventRegistry

MEDIA_TYPE = "application/schema+json"
_HEADERS = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}


def setup_schemas(app: web.Application, registry: EventRegistry = REGISTRY) -> None:
    files = {
        event_type.schema_file_name: (SCHEMA_DIR / event_type.schema_file_name).read_bytes()
        for event_type in registry
    }

    async def schema_file(request: web.Request) -> web.Response:
        body = files.get(request.match_info["file"])
        if body is None:
            raise web.HTTPNotFound(reason="there is no such schema")
        return web.Response(body=body, content_type=MEDIA_TYPE, headers=_HEADERS)

    add_get(app, "/schemas/{file}", schema_file)
