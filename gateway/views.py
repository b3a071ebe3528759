"""The routes. Each reads its inputs, calls one thing, and answers; errors are raised."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from gateway.body import read_json_object, validate_body
from gateway.errors import InvalidCredentials, NotAuthenticated
from gateway.keys import APP_SETTINGS, PUBLISHER, REQUEST_ID, SETTINGS, USERS
from gateway.sessions import end_session, require_user, start_session
from schemas.events import ConfluenceAppSync

routes = web.RouteTableDef()


class SyncRequest(BaseModel):
    """The body of POST /api/sync. The user is never read from here: only from the session."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: JsonValue = Field(default=None, description="Free JSON passed through to the event.")


class LoginRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    email: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


async def _body(request: web.Request, model: type[Any]) -> Any:
    value = await read_json_object(request, max_depth=request.app[SETTINGS].max_json_depth)
    return validate_body(model, value)


@routes.post("/api/sync")
@routes.post("/api/route")
async def sync(request: web.Request) -> web.Response:
    signed_in = await require_user(request)
    body: SyncRequest = await _body(request, SyncRequest)
    event = ConfluenceAppSync.new(
        user=signed_in.user,
        app_settings=request.app[APP_SETTINGS].current(),
        data=body.data,
    )
    await request.app[PUBLISHER].publish(event, correlation_id=request[REQUEST_ID])
    # "success" stays the string "true": the original clients compare it as a string.
    return web.json_response({"success": "true", "id": str(event.id)}, status=202)


@routes.post("/api/auth/login")
async def login(request: web.Request) -> web.Response:
    body: LoginRequest = await _body(request, LoginRequest)
    # scrypt takes tens of milliseconds on purpose; keep it off the event loop.
    record = await asyncio.to_thread(request.app[USERS].authenticate, body.email, body.password)
    if record is None:
        raise InvalidCredentials("the email or password is wrong")
    signed_in = await start_session(request, record.public())
    return web.json_response({"user": signed_in.user.model_dump(mode="json")})


@routes.get("/api/auth/session")
async def session(request: web.Request) -> web.Response:
    try:
        signed_in = await require_user(request)
    except NotAuthenticated:
        return web.json_response({})
    return web.json_response({"user": signed_in.user.model_dump(mode="json")})


@routes.post("/api/auth/logout")
async def logout(request: web.Request) -> web.Response:
    await require_user(request)
    await end_session(request)
    return web.json_response({"success": "true"})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    if request.app[PUBLISHER].ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "broker unavailable"}, status=503)
