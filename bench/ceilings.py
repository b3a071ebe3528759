"""Ceilings A and B: the least an aiohttp process can do per request, as tiny servers.

    python -m bench.ceilings static  --port P           # A: a handler returning static JSON
    python -m bench.ceilings session --port P --key K   # B: A behind the gateway's session layer

B uses the gateway's own `RotatingCookieStorage` through aiohttp-session's middleware, and
answers 401 unless the cookie decrypts to a session, so every request pays the real decrypt.
"""

from __future__ import annotations

import argparse
import time

from aiohttp import web
from aiohttp_session import get_session, session_middleware

from gateway.sessions import RotatingCookieStorage

STATIC_BODY = {"success": "true", "id": "00000000-0000-4000-8000-000000000000"}


async def static_json(request: web.Request) -> web.Response:
    return web.json_response(STATIC_BODY, status=202)


async def session_json(request: web.Request) -> web.Response:
    session = await get_session(request)
    if session.new:
        return web.json_response({"error": "no session"}, status=401)
    return web.json_response(STATIC_BODY, status=202)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def static_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/api/sync", static_json)
    app.router.add_get("/healthz", healthz)
    return app


def session_app(key: str, *, max_age: int = 8 * 60 * 60) -> web.Application:
    storage = RotatingCookieStorage(
        [key], clock=time.time, max_age=max_age, secure=False, samesite="Lax"
    )
    app = web.Application(middlewares=[session_middleware(storage)])
    app.router.add_post("/api/sync", session_json)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceilings")
    parser.add_argument("kind", choices=["static", "session"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", help="the Fernet session key (session only)")
    args = parser.parse_args()
    if args.kind == "session":
        if not args.key:
            parser.error("session needs --key")
        app = session_app(args.key)
    else:
        app = static_app()
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
