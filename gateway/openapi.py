"""The OpenAPI 3.1 document, generated from the route table and the pydantic models.

Nothing here restates a schema: request and response bodies come from the same pydantic models
the gateway validates with (`models_json_schema`). What the models cannot say (which routes
exist, what each answers, which need the session) is in OPERATIONS, one entry per route. The
paths come from `app.router`: a route without an entry is left out of the document, and
tests/unit/test_openapi.py fails until it gets one.

Served at GET /openapi.json, and rendered for people at GET /docs (gateway/static/docs.*).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway.body import NoBody
from gateway.csrf import HEADER as CSRF_HEADER
from gateway.events_view import EventsRequest
from gateway.idempotency import HEADER as IDEMPOTENCY_HEADER
from gateway.idempotency import MAX_KEY_LENGTH
from gateway.keys import SETTINGS
from gateway.operator_views import DiscardRequest, ReplayRequest
from gateway.page import STATIC_DIR, SWAGGER_UI_DIR, SWAGGER_UI_FILES, static_files
from gateway.responses import (
    AuditTrailBody,
    BatchResults,
    CsrfTokenResponse,
    DeadLetterBody,
    ErrorBody,
    EventsAccepted,
    Health,
    LoggedOut,
    LoginResponse,
    OperatorOutcome,
    QueuePage,
    Readiness,
    ReplayResult,
    RunStatus,
    SessionResponse,
    SyncAccepted,
    json_response,
)
from gateway.routing import add_get, is_catch_all
from gateway.sessions import cookie_name
from gateway.views import LoginRequest, SyncRequest

REF_TEMPLATE = "#/components/schemas/{model}"
JSON = "application/json"

Auth = Literal["none", "session", "session+csrf"]
"""What a route needs: nothing, the session cookie, or the cookie and the CSRF header."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One status a route can answer: its JSON model (or another media type) and headers."""

    description: str
    model: type[BaseModel] | None = ErrorBody
    media_type: str = JSON
    headers: tuple[str, ...] = ()
    schema: Mapping[str, Any] | None = None
    """The body's schema where there is no model (default: a string)."""


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    answers: Mapping[int, Answer]
    auth: Auth = "none"
    body: type[BaseModel] | None = None
    body_required: bool = False
    """False: no body (or an empty one) counts as `{}`."""
    idempotency_key: bool = False
    tag: str = "gateway"
    description: str = ""


@dataclass(frozen=True, slots=True)
class Header:
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})


RESPONSE_HEADERS = {
    "X-Request-Id": Header("The request's id: the client's if sane, else a new one."),
    "Retry-After": Header("Seconds to wait before retrying.", {"type": "integer"}),
    "Idempotent-Replayed": Header(
        "`true` when the answer replays an earlier request with the same key.",
        {"const": "true"},
    ),
    "Set-Cookie": Header("The session cookie."),
}

# Every route but the probes and /metrics may shed load (gateway/shedding.py).
_SHEDDING = (
    "the gateway is shedding load (`overloaded`: too many requests in flight or connections"
    " open), or the request passed its deadline (`deadline_exceeded`)"
)
_SHED = {503: Answer(f"{_SHEDDING[0].upper()}{_SHEDDING[1:]}; retry.", headers=("Retry-After",))}

# The answers most routes share.
_ANY = {
    417: Answer("An Expect header other than 100-continue."),
    500: Answer("A bug; it is logged with the request id."),
}
_SIGNED_IN = {
    401: Answer("No session, or a bad, forged or expired one."),
    503: Answer(
        f"The gateway has not yet loaded the logged-out sessions, or {_SHEDDING}; retry.",
        headers=("Retry-After",),
    ),
}
_CSRF = {403: Answer("Another site's origin, or no valid X-CSRF-Token.")}
_OPERATOR = {403: Answer("Signed in without the operator role (or, on a POST, a CSRF failure).")}
_BODY = {
    400: Answer(
        "Not JSON, bad UTF-8, a charset other than UTF-8, past the JSON limits, or a compressed"
        " body that does not decode or is cut short."
    ),
    408: Answer(
        "The body did not arrive within SYNCGATE_BODY_TIMEOUT of its headers"
        " (`request_timeout`); nothing was done, and the connection is closed."
    ),
    413: Answer("The body is over SYNCGATE_MAX_BODY_BYTES (once inflated, too)."),
    415: Answer(
        "A body that is not application/json, or a Content-Encoding other than identity,"
        " gzip or deflate."
    ),
    422: Answer("A JSON body that is not an object or does not match the contract."),
}

_SYNC = Operation(
    summary="Publish a sync event for the signed-in user",
    description="202 only after the broker confirmed the persistent message.",
    auth="session+csrf",
    body=SyncRequest,
    idempotency_key=True,
    tag="sync",
    answers={
        202: Answer("Published and confirmed.", SyncAccepted, headers=("Idempotent-Replayed",)),
        **_BODY,
        400: Answer("Malformed JSON, or an invalid Idempotency-Key."),
        422: Answer(
            "A JSON body that is not an object or does not match the contract, or an "
            "Idempotency-Key first sent with another body (`idempotency_key_reused`)."
        ),
        **_SIGNED_IN,
        **_CSRF,
        503: Answer(
            "The broker did not confirm in time (`broker_unavailable`), the store of "
            "Idempotency-Keys did not answer (`store_unavailable`, only with a key), "
            f"sessions are still loading, or {_SHEDDING}; retry.",
            headers=("Retry-After",),
        ),
        **_ANY,
    },
)
_EVENTS = Operation(
    summary="Publish registered events for the signed-in user: one, or a batch",
    description=(
        "The body is one event request or an array of them (at most "
        "SYNCGATE_EVENTS_MAX_BATCH, in at most SYNCGATE_EVENTS_MAX_BODY_BYTES). The gateway "
        "makes the event id, `ts` and `user` (from the session), and for "
        "`confluence/app.sync` its `appSettings`, as POST /api/sync does; `data` is validated "
        "by the event's registered model. One event: 202 once confirmed, else an error. A "
        "batch: each item is validated alone, the valid ones are published in parallel, each "
        "confirmed; 202 when every item was accepted, else 207 with each item's own status "
        "and error. A client `id` is an idempotency key for its event, per user: a retry "
        "with it is not published again and answers with the first event id."
    ),
    auth="session+csrf",
    body=EventsRequest,
    body_required=True,
    tag="events",
    answers={
        202: Answer(
            "Every event was published and confirmed: its id, or one result per item.",
            EventsAccepted,
            headers=("Idempotent-Replayed",),
        ),
        207: Answer(
            "A batch with at least one item not accepted: one result per item; the items "
            "with status 202 were published. Retry-After is set when an item got a 503.",
            BatchResults,
            headers=("Retry-After",),
        ),
        **_BODY,
        400: Answer("Malformed JSON, or an Idempotency-Key header (use each event's `id`)."),
        413: Answer(
            "The body is over SYNCGATE_EVENTS_MAX_BODY_BYTES (once inflated, too), or the "
            "batch holds more than SYNCGATE_EVENTS_MAX_BATCH events."
        ),
        422: Answer(
            "One event that does not match its contract (`validation_failed`), an unknown "
            "name or version (`unknown_event`, naming the known ones), a client id first sent "
            "with another event (`idempotency_key_reused`), or an empty batch."
        ),
        **_SIGNED_IN,
        403: Answer(
            "Another site's origin or no valid X-CSRF-Token (`csrf_failed`), or an event that "
            "clients may not publish (`not_publishable`)."
        ),
        503: Answer(
            "One event: the broker did not confirm in time (`broker_unavailable`), the "
            "idempotency store did not answer (`store_unavailable`), or sessions are still "
            "loading; retry.",
            headers=("Retry-After",),
        ),
        **_ANY,
    },
)
_HTML = Answer("An HTML page.", None, "text/html")
# A file served by name (the page's, a viewer's): any route may be shed, as every other.
_FILE = {
    200: Answer("The file.", None, "*/*"),
    404: Answer("No such file."),
    **_SHED,
    **_ANY,
}

OPERATIONS: Mapping[tuple[str, str], Operation] = {
    ("POST", "/api/sync"): _SYNC,
    ("POST", "/api/route"): _SYNC,
    ("POST", "/api/events"): _EVENTS,
    ("POST", "/api/auth/login"): Operation(
        summary="Sign in: a new session cookie and its CSRF token",
        body=LoginRequest,
        body_required=True,
        tag="auth",
        answers={
            200: Answer("Signed in.", LoginResponse, headers=("Set-Cookie",)),
            **_BODY,
            401: Answer("Wrong email or password."),
            **_CSRF,
            429: Answer("Too many failed logins; wait.", headers=("Retry-After",)),
            503: Answer(
                f"The store of login limits did not answer (`store_unavailable`), or {_SHEDDING};"
                " retry.",
                headers=("Retry-After",),
            ),
            **_ANY,
        },
    ),
    ("GET", "/api/auth/csrf"): Operation(
        summary="The CSRF token of the current session",
        auth="session",
        tag="auth",
        answers={200: Answer("The token.", CsrfTokenResponse), **_SIGNED_IN, **_ANY},
    ),
    ("GET", "/api/auth/session"): Operation(
        summary="The signed-in user, or {} when signed out",
        tag="auth",
        answers={
            200: Answer("The user, or an empty object.", SessionResponse),
            503: _SIGNED_IN[503],
            **_ANY,
        },
    ),
    ("POST", "/api/auth/logout"): Operation(
        summary="End the session on every gateway",
        description="Takes no body: an empty one or `{}` at most.",
        auth="session+csrf",
        body=NoBody,
        tag="auth",
        answers={
            200: Answer("Signed out; the cookie is cleared.", LoggedOut),
            **_BODY,
            **_SIGNED_IN,
            **_CSRF,
            **_ANY,
        },
    ),
    ("GET", "/api/runs/{event_id}"): Operation(
        summary="Whether the consumer has handled this sync yet",
        auth="session",
        tag="sync",
        answers={
            200: Answer("Pending, or handled with its times.", RunStatus),
            404: Answer("The id is not a UUID."),
            **_SIGNED_IN,
            503: Answer(
                f"The run store cannot be read, sessions are still loading, or {_SHEDDING}.",
                headers=("Retry-After",),
            ),
            **_ANY,
        },
    ),
    ("GET", "/api/operator/queues/{queue}"): Operation(
        summary="A page of the DLQ (`dlq`) or the unrouted queue (`unrouted`), oldest first",
        description="Operators only. `?page=N` (50 a page); reads at most"
        " SYNCGATE_DLQ_READ_DEPTH messages from the head and hands them all back.",
        auth="session",
        tag="operator",
        answers={
            200: Answer("The page.", QueuePage),
            **_SIGNED_IN,
            **_OPERATOR,
            404: Answer("No such queue here, or it does not exist on the broker."),
            422: Answer("page is not a whole number from 1."),
            503: Answer(f"The broker cannot be reached, or {_SHEDDING}.", headers=("Retry-After",)),
            **_ANY,
        },
    ),
    ("GET", "/api/operator/queues/{queue}/events/{event_id}"): Operation(
        summary="One dead-lettered event with its body",
        auth="session",
        tag="operator",
        answers={
            200: Answer("The event and its body.", DeadLetterBody),
            **_SIGNED_IN,
            **_OPERATOR,
            404: Answer("No such queue, or no such event within the read depth."),
            503: Answer(f"The broker cannot be reached, or {_SHEDDING}.", headers=("Retry-After",)),
            **_ANY,
        },
    ),
    ("POST", "/api/operator/queues/{queue}/replay"): Operation(
        summary="Replay one event, a selection, or all of them",
        description="Each copy is confirmed by the broker before the event leaves the queue;"
        " `all` replays the count at the start, never in a loop. Every event is audited.",
        auth="session+csrf",
        body=ReplayRequest,
        body_required=True,
        tag="operator",
        answers={
            200: Answer("What was replayed and what stayed, per event.", ReplayResult),
            **_BODY,
            **_SIGNED_IN,
            **_OPERATOR,
            404: Answer("No such queue here."),
            503: Answer(f"The broker cannot be reached, or {_SHEDDING}.", headers=("Retry-After",)),
            **_ANY,
        },
    ),
    ("POST", "/api/operator/queues/{queue}/discard"): Operation(
        summary="Remove one event for good, after its id is typed again in `confirm`",
        auth="session+csrf",
        body=DiscardRequest,
        body_required=True,
        tag="operator",
        answers={
            200: Answer("Discarded (and audited).", OperatorOutcome),
            **_BODY,
            **_SIGNED_IN,
            **_OPERATOR,
            404: Answer("No such queue, or no such event in it."),
            503: Answer(f"The broker cannot be reached, or {_SHEDDING}.", headers=("Retry-After",)),
            **_ANY,
        },
    ),
    ("GET", "/api/operator/audit"): Operation(
        summary="The audit trail of replays and discards, newest first",
        auth="session",
        tag="operator",
        answers={
            200: Answer("The entries this gateway process keeps.", AuditTrailBody),
            **_SIGNED_IN,
            **_OPERATOR,
            **_ANY,
        },
    ),
    ("GET", "/healthz"): Operation(
        summary="The process is up",
        tag="operations",
        answers={200: Answer("Up.", Health), **_ANY},
    ),
    ("GET", "/readyz"): Operation(
        summary="The broker link is open and the topology declared",
        tag="operations",
        answers={
            200: Answer("Ready.", Readiness),
            503: Answer("Not ready: the broker is unreachable.", Readiness),
            **_ANY,
        },
    ),
    ("GET", "/metrics"): Operation(
        summary="Prometheus metrics",
        tag="operations",
        answers={200: Answer("The text exposition format.", None, "text/plain"), **_ANY},
    ),
    ("GET", "/"): Operation(
        summary="The web page", tag="pages", answers={200: _HTML, **_SHED, **_ANY}
    ),
    ("GET", "/operator"): Operation(
        summary="The operators' DLQ page", tag="pages", answers={200: _HTML, **_SHED, **_ANY}
    ),
    ("GET", "/static/{filename}"): Operation(
        summary="The web page's files",
        tag="pages",
        answers=_FILE,
    ),
    ("GET", "/schemas/{file}"): Operation(
        summary="The JSON Schema of a registered event",
        description=(
            "Each message's `cloudEvents:dataschema` header points here when "
            "SYNCGATE_PUBLIC_BASE_URL is set. Only the registered files are served, e.g. "
            "`confluence.app.sync.v1.schema.json`."
        ),
        tag="events",
        answers={
            200: Answer(
                "The schema (JSON Schema 2020-12).",
                None,
                "application/schema+json",
                schema={"type": "object"},
            ),
            404: Answer("No registered schema has this name."),
            **_ANY,
        },
    ),
    ("GET", "/asyncapi.json"): Operation(
        summary="The AsyncAPI 3.0 document of the events syncgate publishes",
        description=(
            "Generated from the event registry: the exchanges, every routing key, the message"
            " schemas, the CloudEvents and trace headers, and the AMQP bindings."
        ),
        tag="events",
        answers={200: Answer("AsyncAPI 3.0.", None, JSON, schema={"type": "object"}), **_ANY},
    ),
    ("GET", "/openapi.json"): Operation(
        summary="This document",
        tag="pages",
        answers={200: Answer("OpenAPI 3.1.", None, JSON), **_SHED, **_ANY},
    ),
    ("GET", "/docs"): Operation(
        summary="This document, for people: Swagger UI",
        tag="pages",
        answers={200: _HTML, **_SHED, **_ANY},
    ),
    ("GET", "/asyncapi"): Operation(
        summary="The AsyncAPI document of the events, for people",
        tag="pages",
        answers={200: _HTML, **_SHED, **_ANY},
    ),
    ("GET", "/asyncapi/assets/{filename}"): Operation(
        summary="The AsyncAPI viewer's own files (@asyncapi/react-component)",
        tag="pages",
        answers=_FILE,
    ),
    ("GET", "/docs/assets/{filename}"): Operation(
        summary="Swagger UI's own files, from the swagger-ui-py package",
        tag="pages",
        answers=_FILE,
    ),
}

_PATH_PARAMETER = re.compile(r"{(\w+)}")


def routed_operations(app: web.Application) -> Iterator[tuple[str, str]]:
    """(method, OpenAPI path) for every route in the router.

    HEAD is left out where the same path has a GET: aiohttp adds one for every GET.
    A static directory is one path with a `{filename}` parameter.
    """
    routes = [
        route
        for route in app.router.routes()
        if route.resource is not None and not is_catch_all(route)
    ]
    seen: set[tuple[str, str]] = set()
    for route in routes:
        assert route.resource is not None
        path = route.resource.canonical
        if isinstance(route.resource, web.StaticResource):
            path = f"{path.rstrip('/')}/{{filename}}"
        seen.add((route.method, path))
    for method, path in sorted(seen, key=lambda key: (key[1], key[0])):
        if method == "HEAD" and ("GET", path) in seen:
            continue
        yield method, path


Refs = Mapping[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]]
"""Each (model, mode) to its `$ref` into #/components/schemas."""


def _component_schemas() -> tuple[Refs, dict[str, Any]]:
    used: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for operation in OPERATIONS.values():
        if operation.body is not None:
            used.append((operation.body, "validation"))
        used.extend(
            (answer.model, "serialization")
            for answer in operation.answers.values()
            if answer.model is not None
        )
    refs, top = models_json_schema(list(dict.fromkeys(used)), ref_template=REF_TEMPLATE)
    # It accepts pydantic dataclasses too; only models are passed here.
    return cast(Refs, refs), dict(top.get("$defs", {}))


def _parameters(path: str, operation: Operation) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAMETER.findall(path)
    ]
    parameters.append(
        {
            "name": "X-Request-Id",
            "in": "header",
            "required": False,
            "description": "Echoed when it matches ^[A-Za-z0-9._:-]{1,128}$; else replaced.",
            "schema": {"type": "string"},
        }
    )
    if operation.idempotency_key:
        parameters.append(
            {
                "name": IDEMPOTENCY_HEADER,
                "in": "header",
                "required": False,
                "description": (
                    "A retry with the same key and body gets the first event id back; after "
                    "a 503 it publishes the same event (same id) again. The key with another "
                    "body is a 422."
                ),
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_KEY_LENGTH,
                    "pattern": "^[\\x20-\\x7e]+$",
                },
            }
        )
    return parameters


def _response(answer: Answer, refs: Refs) -> dict[str, Any]:
    headers = {
        name: {"description": RESPONSE_HEADERS[name].description, "schema": dict(header.schema)}
        for name, header in (
            (name, RESPONSE_HEADERS[name]) for name in ("X-Request-Id", *answer.headers)
        )
    }
    if answer.model is not None:
        schema = refs[answer.model, "serialization"]
    else:
        schema = dict(answer.schema) if answer.schema is not None else {"type": "string"}
    return {
        "description": answer.description,
        "headers": headers,
        "content": {answer.media_type: {"schema": schema}},
    }


def _security(auth: Auth) -> list[dict[str, list[str]]]:
    if auth == "session":
        return [{"session": []}]
    if auth == "session+csrf":
        return [{"session": [], "csrfToken": []}]
    return []


def build_document(app: web.Application) -> dict[str, Any]:
    settings = app[SETTINGS]
    refs, components = _component_schemas()
    paths: dict[str, dict[str, Any]] = {}
    for method, path in routed_operations(app):
        operation = OPERATIONS.get((method, path))
        if operation is None:
            continue  # tests/unit/test_openapi.py fails on this route until it has an entry
        described: dict[str, Any] = {
            "summary": operation.summary,
            "operationId": f"{method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_')}",
            "tags": [operation.tag],
            "parameters": _parameters(path, operation),
            "security": _security(operation.auth),
            "responses": {
                str(status): _response(answer, refs)
                for status, answer in sorted(operation.answers.items())
            },
        }
        if operation.description:
            described["description"] = operation.description
        if operation.body is not None:
            described["requestBody"] = {
                "required": operation.body_required,
                "content": {JSON: {"schema": refs[(operation.body, "validation")]}},
            }
            if not operation.body_required:
                described["requestBody"]["description"] = "Optional: no body counts as `{}`."
            described["requestBody"]["description"] = " ".join(
                filter(
                    None,
                    [
                        described["requestBody"].get("description"),
                        "A key repeated in an object: its last value is read.",
                    ],
                )
            )
        paths.setdefault(path, {})[method.lower()] = described
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "syncgate",
            "version": "1",
            "description": (
                "An HTTP-to-RabbitMQ event gateway. Errors always have the shape of "
                f"`ErrorBody`. Bodies are at most {settings.max_body_bytes} bytes and JSON "
                f"nests at most {settings.max_json_depth} levels. In an object that repeats a "
                "key, the last value of that key is the one read (RFC 8259 leaves it open; "
                "refusing repeats would cost a second parse of every body). A compressed "
                "body (`Content-Encoding: gzip` or `deflate`) must be whole, its stream "
                "ending where the body ends."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": cookie_name(settings.cookie_secure),
                    "description": "The session cookie set by POST /api/auth/login.",
                },
                "csrfToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": CSRF_HEADER,
                    "description": "From the login answer or GET /api/auth/csrf.",
                },
            },
        },
    }


# Swagger UI's stylesheet draws its icons as data: SVG images; nothing else is loosened.
_DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def setup_openapi(app: web.Application) -> None:
    """GET /openapi.json and GET /docs. Call it after every other route is added."""
    document: dict[str, Any] = {}

    async def openapi_json(request: web.Request) -> web.Response:
        # Built once, on first use: by then the router is frozen and every route is in it.
        if not document:
            document.update(build_document(request.app))
        return json_response(document)

    async def docs(request: web.Request) -> web.FileResponse:
        return web.FileResponse(
            STATIC_DIR / "docs.html",
            headers={
                "Content-Security-Policy": _DOCS_CONTENT_SECURITY_POLICY,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache",
            },
        )

    add_get(app, "/openapi.json", openapi_json)
    add_get(app, "/docs", docs)
    add_get(app, "/docs/assets/{filename}", static_files(SWAGGER_UI_DIR, only=SWAGGER_UI_FILES))
