"""The web page: GET / and its static files, plain HTML and JS with no build step."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.routing import add_get

STATIC_DIR = Path(__file__).parent / "static"


def _swagger_ui_dir() -> Path:
    """Swagger UI's files as the swagger-ui-py package ships them, found without importing it
    (its __init__ pulls in handlers for other frameworks)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


# GET /docs draws the OpenAPI document with these, and nothing else of the package is served.
SWAGGER_UI_DIR = _swagger_ui_dir()
SWAGGER_UI_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css"})

# Everything the page loads comes from the gateway itself: no inline script, no CDN.
_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


async def index(request: web.Request) -> web.FileResponse:
    return _page("index.html")


async def operator_page(request: web.Request) -> web.FileResponse:
    """The operators' DLQ page. The HTML is public like the sign-in page; every answer it
    shows comes from /api/operator/*, which checks the role (gateway/operator_views.py)."""
    return _page("operator.html")


def _page(name: str) -> web.FileResponse:
    return web.FileResponse(
        STATIC_DIR / name,
        headers={
            "Content-Security-Policy": _CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


def static_files(directory: Path, *, only: frozenset[str] | None = None) -> Handler:
    """The files directly in `directory` (or those of them named in `only`), by name;
    anything else is a 404 in the error shape.

    Not add_static: its FileResponse answers a missing file with an empty 404 of its own,
    after the error middleware has already let the response through.
    """
    files = {
        path.name: path
        for path in directory.iterdir()
        if path.is_file() and (only is None or path.name in only)
    }
    if only is not None and (missing := only - files.keys()):
        raise RuntimeError(f"{directory} lacks {sorted(missing)}")

    async def view(request: web.Request) -> web.FileResponse:
        path = files.get(request.match_info["filename"])
        if path is None:
            raise web.HTTPNotFound(reason="there is no such file")
        return web.FileResponse(path, headers={"X-Content-Type-Options": "nosniff"})

    return view


# The AsyncAPI React component's standalone bundle and stylesheet, committed as fetched from
# the npm registry by scripts/vendor-asyncapi-viewer.sh (gateway/viewer/VERSION says which).
VIEWER_DIR = Path(__file__).parent / "viewer"
VIEWER_FILES = frozenset({"asyncapi-standalone.js", "asyncapi.css"})
# The bundle carries the AsyncAPI parser, whose schema validators (Ajv) compile to code with
# `new Function`: this page alone allows that ('unsafe-eval'); it runs no request of its own
# but the GET of /asyncapi.json, and nothing it evaluates comes from a client.
_VIEWER_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; font-src 'self' data:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)


async def asyncapi_viewer(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC_DIR / "asyncapi.html",
        headers={
            "Content-Security-Policy": _VIEWER_CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


def setup_page(app: web.Application) -> None:
    add_get(app, "/", index)
    add_get(app, "/operator", operator_page)
    add_get(app, "/static/{filename}", static_files(STATIC_DIR))
    add_get(app, "/asyncapi", asyncapi_viewer)
    add_get(app, "/asyncapi/assets/{filename}", static_files(VIEWER_DIR, only=VIEWER_FILES))
