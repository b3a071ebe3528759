"""The routes. Each reads its inputs, calls one thing, and answers; errors are raised."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.body import NoBody, read_json_object, validate_body
from gateway.csrf import csrf_token
from gateway.errors import InvalidCredentials, NotAuthenticated
from gateway.idempotency import idempotency_key
from gateway.keys import (
    APP_SETTINGS,
    IDEMPOTENCY,
    LOGIN_LIMITS,
    PUBLISHER,
    REQUEST_ID,
    REVOCATIONS,
    SETTINGS,
    USERS,
)
from gateway.responses import json_response
from gateway.routing import RouteTable
from gateway.sessions import end_session, require_user, start_session
from schemas.events import ConfluenceAppSync, EventData

routes = RouteTable()


class SyncRequest(BaseModel):
    """The body of POST /api/sync. The user is never read from here: only from the session."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: EventData = Field(
        default=None,
        description=(
            "Free JSON passed through to the event. Every number in it lies within the signed "
            "64-bit range, -2^63 to 2^63-1 (an integer past it is a 400, a float a 422)."
        ),
    )


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
    key = idempotency_key(request)
    body: SyncRequest = await _body(request, SyncRequest)

    def build() -> ConfluenceAppSync:
        return ConfluenceAppSync.new(
            user=signed_in.user,
            app_settings=request.app[APP_SETTINGS].current(),
            data=body.data,
        )

    async def publish(event: ConfluenceAppSync) -> None:
        await request.app[PUBLISHER].publish(event, correlation_id=request[REQUEST_ID])

    # With a key: a confirmed key gets its event id back and nothing is published; after a
    # failure the same event is published again. `data` is compared across requests with the
    # key: it is all of the body that reaches the event.
    outcome = await request.app[IDEMPOTENCY].run_once(
        signed_in.user.id,
        key,
        data=body.data,
        build=build,
        publish=publish,
        decode=ConfluenceAppSync.model_validate_json,
    )
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    # "success" stays the string "true": the original clients compare it as a string.
    return json_response({"success": "true", "id": outcome.event_id}, status=202, headers=headers)


@routes.post("/api/auth/login")
async def login(request: web.Request) -> web.Response:
    body: LoginRequest = await _body(request, LoginRequest)
    limits, address = request.app[LOGIN_LIMITS], request.remote or "unknown"
    await limits.check(body.email, address)
    # scrypt takes tens of milliseconds on purpose; keep it off the event loop.
    record = await asyncio.to_thread(request.app[USERS].authenticate, body.email, body.password)
    if record is None:
        await limits.failed(body.email, address)
        raise InvalidCredentials("the email or password is wrong")
    await limits.succeeded(body.email)
    signed_in = await start_session(request, record.public)
    token = csrf_token(request.app[SETTINGS].fernet_keys, signed_in.session_id)
    return json_response({"user": signed_in.user.model_dump(mode="json"), "csrfToken": token})


@routes.get("/api/auth/csrf")
async def csrf(request: web.Request) -> web.Response:
    signed_in = await require_user(request)
    token = csrf_token(request.app[SETTINGS].fernet_keys, signed_in.session_id)
    return json_response({"csrfToken": token})


@routes.get("/api/auth/session")
async def session(request: web.Request) -> web.Response:
    try:
        signed_in = await require_user(request)
    except NotAuthenticated:
        return json_response({})
    return json_response({"user": signed_in.user.model_dump(mode="json")})


@routes.post("/api/auth/logout")
async def logout(request: web.Request) -> web.Response:
    signed_in = await require_user(request)
    await _body(request, NoBody)  # a body here is a client bug: say so rather than ignore it
    await end_session(request, signed_in)
    return json_response({"success": "true"})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    if request.app[PUBLISHER].ready and request.app[REVOCATIONS].ready:
        return json_response({"status": "ready"})
    return json_response({"status": "broker unavailable"}, status=503)
