"""Routes that every request reaches through the middlewares, `Expect` header included.

aiohttp handles `Expect` before any middleware runs, with a handler of each route's own: by
default it answers anything but `100-continue` with a plain-text 417 built from the header's
text, and a value that is not valid UTF-8 made that a 500 (found by the framing fuzz). The
gateway's routes get `expect_continue` instead, which only ever sends `100 Continue`; any
other expectation is refused by the error middleware, in the error shape. A path no route
matches would still meet aiohttp's own handler, so `seal` adds one last route that matches
every path and answers what aiohttp would have: 405 with Allow for a known path, else 404.
"""

from __future__ import annotations

from typing import Any

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.typedefs import Handler
from aiohttp.web_routedef import _Deco

CONTINUE = "100-continue"


async def expect_continue(request: web.Request) -> None:
    """Send `100 Continue` when asked for it; leave every other expectation to the error
    middleware (gateway/middlewares.py), which answers 417 in the error shape."""
    if request.version == HttpVersion11 and request.headers[hdrs.EXPECT].lower() == CONTINUE:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response proper has not started


class RouteTable(web.RouteTableDef):
    """aiohttp's RouteTableDef, with `expect_continue` on every route."""

    def route(self, method: str, path: str, **kwargs: Any) -> _Deco:
        kwargs.setdefault("expect_handler", expect_continue)
        return super().route(method, path, **kwargs)


def add_get(app: web.Application, path: str, handler: Handler) -> None:
    app.router.add_get(path, handler, expect_handler=expect_continue)


async def _unmatched(request: web.Request) -> web.StreamResponse:
    """What aiohttp answers where no route matches: 405 for a path some route has, else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def seal(app: web.Application) -> None:
    """After every route is added: one more, for any method on any path, last."""
    app.router.add_route(
        hdrs.METH_ANY, "/{unmatched:.*}", _unmatched, expect_handler=expect_continue
    )


def is_catch_all(route: web.AbstractRoute) -> bool:
    """Whether this is the route `seal` adds, standing for every route that did not match."""
    return route.handler is _unmatched


def is_unmatched(request: web.Request) -> bool:
    """Whether no route of the gateway's own matched this request (a 404 or 405)."""
    return is_catch_all(request.match_info.route)
