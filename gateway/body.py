"""Reading request bodies strictly: every way a body can be wrong is a 4xx, never a 500.

The parser is pydantic-core's `from_json` (jiter): it rejects invalid UTF-8, lone surrogates,
NaN and Infinity, and parses integers exactly, so an over-long integer is found rather than
silently rounded to a float (which is what orjson does past 64 bits). Depth and number limits
are checked on the result.
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Any, TypeVar

import pydantic_core
from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.errors import (
    ClientGone,
    MalformedJson,
    PayloadTooLarge,
    UnreadableBody,
    UnsupportedMediaType,
    ValidationFailed,
)
from gateway.keys import BUDGET

M = TypeVar("M", bound=BaseModel)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class NoBody(BaseModel):
    """The body of a route that takes none: nothing, or `{}`. Anything else is a 422."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def is_json_content_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def check_json_limits(value: object, *, max_depth: int) -> None:
    """Depth and numbers, walked iteratively so a deep document cannot blow the stack."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > max_depth:
                raise MalformedJson(f"the JSON is nested deeper than {max_depth} levels")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(node, bool):
            continue
        elif isinstance(node, int):
            if not INT64_MIN <= node <= INT64_MAX:
                raise MalformedJson("a JSON integer is outside the signed 64-bit range")
        elif isinstance(node, float) and node in (float("inf"), float("-inf")):
            raise MalformedJson("a JSON number is too large to represent")


def parse_json(body: bytes, *, max_depth: int) -> Any:
    try:
        value = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None
    check_json_limits(value, max_depth=max_depth)
    return value


async def read_body(request: web.Request) -> bytes:
    """The body, inflated if it was compressed, within client_max_size; every way reading it
    fails is a 4xx (or, for a client that went away, a 499 that nobody receives)."""
    limit = request.client_max_size
    # A declared length over the limit is refused before reading: otherwise the gateway would
    # wait for bytes a client announced but may never send.
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body may be at most {limit} bytes")
    budget = request.get(BUDGET)
    try:
        # Within the body's own deadline (gateway/deadlines.py): BodyTimeout, a 408, past it.
        async with budget.reading_body() if budget is not None else contextlib.nullcontext():
            body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        # Chunked bodies are counted as they arrive.
        raise PayloadTooLarge(f"the body may be at most {limit} bytes") from None
    except RequestPayloadError:
        # The framing broke after the headers were read (a bad chunk in a later packet);
        # aiohttp leaves that to the handler, which would be a 500.
        raise UnreadableBody(
            "the body could not be read: its encoding or framing is broken"
        ) from None
    except ConnectionResetError:
        # The client closed the connection before its body was in: its problem, not ours.
        raise ClientGone("the client closed the connection before sending its body") from None
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    return body if encoding == "identity" else inflate(body, encoding, limit=limit)


# aiohttp's own decompression (auto_decompress) is turned off for the gateway (gateway/app.py):
# it accepts a gzip stream whose CRC and length trailer never arrived, so a truncated body
# would pass as a whole one. Here a compressed body must end where its stream ends.
_GZIP_WBITS = zlib.MAX_WBITS | 16


def inflate(body: bytes, encoding: str, *, limit: int) -> bytes:
    """The body under `Content-Encoding: encoding`, at most `limit` bytes once inflated."""
    if encoding in ("gzip", "x-gzip"):
        # Several gzip members in a row are one body (RFC 1952), as aiohttp reads them.
        return _inflate(body, _GZIP_WBITS, limit, members=True)
    if encoding == "deflate":
        # RFC 9110's deflate is zlib-wrapped; some clients send raw deflate, and aiohttp took
        # both, so both are read.
        wbits = zlib.MAX_WBITS if _zlib_header(body) else -zlib.MAX_WBITS
        return _inflate(body, wbits, limit, members=False)
    raise UnsupportedMediaType(
        "the Content-Encoding may be identity, gzip or deflate, nothing else"
    )


def _zlib_header(body: bytes) -> bool:
    return len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0


def _inflate(body: bytes, wbits: int, limit: int, *, members: bool) -> bytes:
    inflated = bytearray()
    rest = body
    while True:
        stream = zlib.decompressobj(wbits)
        try:
            # One byte past the limit is enough to know it is too large: a gzip bomb is never
            # inflated further than that.
            inflated += stream.decompress(rest, limit + 1 - len(inflated))
        except zlib.error:
            raise UnreadableBody("the body is not valid under its Content-Encoding") from None
        if len(inflated) > limit or stream.unconsumed_tail:
            raise PayloadTooLarge(f"the body may be at most {limit} bytes once inflated")
        if not stream.eof:
            raise UnreadableBody("the compressed body ends before its stream does")
        rest = stream.unused_data
        if not rest:
            return bytes(inflated)
        if not members:
            raise UnreadableBody("the body goes on after its compressed stream ends")


async def read_json(request: web.Request, *, max_depth: int, empty: Any) -> Any:
    """The body as any JSON value; `empty` for an absent or empty body.

    Empty means zero bytes, however they were framed (no body, `Content-Length: 0`, or a
    chunked body with no chunks), so the answer does not depend on the client's framing.
    """
    if not request.body_exists:
        return empty
    if not is_json_content_type(request.content_type):
        raise UnsupportedMediaType("send the body as application/json")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise MalformedJson(f"JSON bodies must be UTF-8, not {charset!r}")
    body = await read_body(request)
    if not body:
        return empty
    return parse_json(body, max_depth=max_depth)


async def read_json_object(request: web.Request, *, max_depth: int) -> dict[str, Any]:
    """The body as a JSON object; an absent or empty body counts as `{}`."""
    value = await read_json(request, max_depth=max_depth, empty={})
    if not isinstance(value, dict):
        raise ValidationFailed("the body must be a JSON object")
    return value


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """One `{loc, msg, type}` per violation, quoting none of the input."""
    return [
        {
            "loc": ".".join(str(part) for part in error["loc"]),
            "msg": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]


def validate_body(model: type[M], value: dict[str, Any]) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ValidationFailed(
            "the body does not match the contract", details=validation_details(exc)
        ) from None
