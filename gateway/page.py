"""The web page: GET / and its static files, plain HTML and JS with no build step."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.routing import add_get

STATIC_DIR = Path(__file__).parent / "static"

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


def static_files(directory: Path) -> Handler:
    """The files directly in `directory`, by name; anything else is a 404 in the error shape.

    Not add_static: its FileResponse answers a missing file with an empty 404 of its own,
    after the error middleware has already let the response through.
    """
    files = {path.name: path for path in directory.iterdir() if path.is_file()}

    async def view(request: web.Request) -> web.FileResponse:
        path = files.get(request.match_info["filename"])
        if path is None:
            raise web.HTTPNotFound(reason="there is no such file")
        return web.FileResponse(path, headers={"X-Content-Type-Options": "nosniff"})

    return view


def setup_page(app: web.Application) -> None:
    add_get(app, "/", index)
    add_get(app, "/operator", operator_page)
    add_get(app, "/static/{filename}", static_files(STATIC_DIR))
