"""Ceilings A and B: the least an aiohttp process can do per request, as tiny servers.

    python -m bench.ceilings static  --port P           # A: a handler returning static JSON
    python -m bench.ceilings session --port P --key K   # B: A behind stock aiohttp-session

B is stock aiohttp-session: `EncryptedCookieStorage` with one Fernet under syncgate's cookie
name, through `session_middleware`, and answers 401 unless the cookie decrypts to a session,
so every request pays a decrypt. Stock storage reads the JSON our cookie holds, so syncgate's
cookie opens there; and since it is not the gateway's own cookie code, the floor stays put
when that code gets faster.
"""

from __future__ import annotations

import argparse

from aiohttp import web
from aiohttp_session import get_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet

COOKIE_NAME = "syncgate"  # gateway/sessions.py's name for plain-http cookies

STATIC_BODY = {"success": "true", "id": "00000000-0000-4000-8000-000000000000"}


async def static_json(request: web.Request) -> web.Response:
    return web.json_response(STATIC_BODY, status=202)


async def session_json(request: web.Request) -> web.Response:
    session = await get_session(request)
    # New: no cookie, or it did not decrypt. Empty: it decrypted, but past max_age.
    if session.new or session.empty:
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
    storage = EncryptedCookieStorage(
        Fernet(key),
        cookie_name=COOKIE_NAME,
        max_age=max_age,
        secure=False,
        httponly=True,
        samesite="Lax",
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
