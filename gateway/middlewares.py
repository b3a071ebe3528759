"""Request ids and error rendering.

The order, outermost first, is deliberate (see app.py):
0. gateway/connections.py: the request's headers are in, so the header deadline stops; then,
   with SYNCGATE_TRUSTED_PROXIES set, gateway/client_address.py: request.remote is the client;
   the metrics middleware, which counts every answer; gateway/shedding.py, which sheds load
   before any work below it;
1. tracing_middleware: the request's server span, which every other span of it is under;
2. request_id_middleware: names the request, logs it, and is the last resort for a bug;
3. the aiohttp-session middleware: saves (or clears) the cookie, on error responses too;
4. error_middleware: turns every domain or HTTP error into the one JSON error shape.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import uuid_utils
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from common import tracing
from common.logs import request_id_var
from gateway.errors import ExpectationFailed, GatewayError
from gateway.keys import REQUEST_ID
from gateway.responses import ErrorBody, ErrorDetail, json_response
from gateway.routing import CONTINUE, is_unmatched

log = logging.getLogger("syncgate.gateway.http")
tracer = trace.get_tracer(__name__)

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Stable codes for the errors aiohttp itself raises (routing, sizes, methods).
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(code: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    # Through the model the OpenAPI document publishes, so the shape cannot drift from it.
    error = ErrorDetail(code=code, message=message, details=details or [])
    return ErrorBody(error=error).model_dump(mode="json")


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return json_response(error_body(code, message, details), status=status, headers=headers)


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request's server span, continuing the client's W3C `traceparent`/`tracestate`
    (common/tracing.py); without one, it starts a trace. Named by route, not path, so that
    span names stay few: `GET /api/runs/{event_id}`, or the method alone where no route
    matched."""
    route = None if is_unmatched(request) else request.match_info.route.resource
    name = request.method if route is None else f"{request.method} {route.canonical}"
    # The path is left out: it is the route's but for an id (in /api/runs/{event_id}), or
    # anything a client sends (where no route matched); the request's log line has it.
    attributes = {"http.request.method": request.method}
    if route is not None:
        attributes["http.route"] = route.canonical
    with tracer.start_as_current_span(
        name,
        context=tracing.extract(request.headers),
        kind=SpanKind.SERVER,
        attributes=attributes,
    ) as span:
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        return response


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    offered = request.headers.get("X-Request-Id", "")
    # uuid_utils' random v4 comes from a user-space generator: the stdlib's asks the kernel
    # (os.urandom) on every request. A request id needs to be unique, not secret.
    request_id = offered if _SANE_REQUEST_ID.match(offered) else uuid_utils.uuid4().hex
    request[REQUEST_ID] = request_id
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    try:
        response = await handler(request)
    except Exception:
        log.exception("unhandled error")
        response = error_response(500, "internal_error", "the gateway failed; it is logged")
    finally:
        request_id_var.reset(token)
    response.headers["X-Request-Id"] = request_id
    # The request line. For a sync it also names the event and its correlation id: the
    # publisher set them in this request's context (aiohttp runs each request in its own task,
    # so they never leak into the next request on the connection).
    log.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status,
        extra={
            "request_id": request_id,
            "client": request.remote,
            "status": response.status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        # Refused here, in the error shape: gateway/routing.py says why not before.
        expect = request.headers.get(hdrs.EXPECT)
        if expect is not None and expect.lower() != CONTINUE:
            raise ExpectationFailed("the only expectation the gateway meets is 100-continue")
        return await handler(request)
    except GatewayError as exc:
        if exc.status >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        return error_response(
            exc.status, exc.code, exc.message, details=exc.details, headers=exc.headers
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(
            exc.status,
            _HTTP_CODES.get(exc.status, f"http_{exc.status}"),
            exc.reason,
            headers=headers,
        )
