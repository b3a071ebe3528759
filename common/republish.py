"""The republish wire format: the `x-syncgate-*` headers, and the copy of a delivered event
that the consumer publishes again (to a retry queue or the DLQ) and that a DLQ replay sends
back to the events exchange.

A copy keeps the body and the properties the gateway set (ids, type, time, content type),
is persistent, and carries the delivery's headers with these replaced or added.

Every copy is bounded before it is published, because the broker closes the whole
connection (FRAME_ERROR) over a content header that exceeds the negotiated `frame_max`:
each text value of ours is cut to HEADER_VALUE_LIMIT bytes, the delivery's own headers may
take COPIED_HEADERS_LIMIT bytes on the wire, and the content-header frame must stay within
`frame_limit(frame_max)`. A copy that cannot be made within these raises CopyDoesNotFit; the
consumer then leaves the message to the broker's own dead-lettering instead.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractMessage
from aiormq.abc import FieldValue
from pamqp.encode import field_table
from pamqp.frame import marshal
from pamqp.header import ContentHeader

ATTEMPT_HEADER = "x-syncgate-attempt"
ROUTING_KEY_HEADER = "x-syncgate-routing-key"
REASON_HEADER = "x-syncgate-reason"
ERROR_HEADER = "x-syncgate-error"
DEAD_LETTERED_AT_HEADER = "x-syncgate-dead-lettered-at"
SOURCE_QUEUE_HEADER = "x-syncgate-source-queue"
REPLAYED_HEADER = "x-syncgate-replayed"

# What a dead-lettering leaves on a message, ours and the broker's; a replayed event starts
# afresh without it.
DEAD_LETTER_HEADERS = frozenset(
    {
        ATTEMPT_HEADER,
        REASON_HEADER,
        ERROR_HEADER,
        ROUTING_KEY_HEADER,
        SOURCE_QUEUE_HEADER,
        DEAD_LETTERED_AT_HEADER,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
    }
)


HEADER_VALUE_LIMIT = 1024
"""Bytes of UTF-8 one text value of ours may take in a copy's headers, marker included."""
COPIED_HEADERS_LIMIT = 16 * 1024
"""Bytes the delivery's own headers may take in a copy, as their table is encoded on the wire."""


def frame_limit(frame_max: int) -> int | None:
    """The largest content-header frame a copy may have on a connection with this `frame_max`
    (None: the broker set no limit). Three quarters of it: the rest is room for what the
    broker adds on its own dead-letterings and expiries (x-death and the x-*-death-* headers)."""
    return frame_max - frame_max // 4 if frame_max > 0 else None


def truncated(text: str, limit: int = HEADER_VALUE_LIMIT) -> str:
    """`text` in at most `limit` bytes of UTF-8 (`limit` leaves room for the marker: 64 or
    more). Longer text is cut at a character boundary and ends with a `…[truncated N bytes]`
    marker, N being how many bytes of `text` were cut."""
    # A lone surrogate cannot be sent at all (pamqp encodes strictly): it becomes "?".
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return encoded.decode("utf-8")
    # The marker for the whole length has the most digits any cut can need.
    keep = max(0, limit - len(_marker(len(encoded)).encode()))
    while keep > 0 and encoded[keep] & 0xC0 == 0x80:  # a UTF-8 continuation byte
        keep -= 1
    # A shorter cut may need a marker with fewer digits: keep whole characters while they fit.
    while True:
        end = keep + 1
        while end < len(encoded) and encoded[end] & 0xC0 == 0x80:
            end += 1
        if end >= len(encoded) or end + len(_marker(len(encoded) - end).encode()) > limit:
            break
        keep = end
    return encoded[:keep].decode("utf-8") + _marker(len(encoded) - keep)


def _marker(cut: int) -> str:
    return f"…[truncated {cut} bytes]"


class CopyDoesNotFit(Exception):
    """A copy of this delivery cannot be made within the bounds; the message says why."""


class Delivered(Protocol):
    """What a copy is made from: aio-pika's IncomingMessage has all of it."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> dict[str, FieldValue]: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def content_encoding(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def type(self) -> str | None: ...
    @property
    def timestamp(self) -> datetime | None: ...
    @property
    def app_id(self) -> str | None: ...


def republished(
    message: Delivered,
    headers: Mapping[str, FieldValue],
    *,
    frame_max: int,
    without: Collection[str] = (),
) -> aio_pika.Message:
    """The persistent copy of `message`, its headers minus `without`, plus `headers` (their
    text cut to HEADER_VALUE_LIMIT). `frame_max` is the publishing connection's, as the
    broker negotiated it.

    Raises CopyDoesNotFit when the delivery's own headers exceed COPIED_HEADERS_LIMIT or
    cannot be encoded again, or when the content-header frame would exceed
    `frame_limit(frame_max)`.
    """
    kept = {
        k: v for k, v in (message.headers or {}).items() if k not in without and k not in headers
    }
    copied = _encoded_size(kept)
    if copied > COPIED_HEADERS_LIMIT:
        raise CopyDoesNotFit(
            f"its own headers take {copied} bytes, over the {COPIED_HEADERS_LIMIT} a copy may carry"
        )
    ours = {k: truncated(v) if isinstance(v, str) else v for k, v in headers.items()}
    copy = aio_pika.Message(
        body=message.body,
        headers={**kept, **ours},
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
    )
    limit = frame_limit(frame_max)
    if limit is not None:
        frame = content_header_size(copy)
        if frame > limit:
            raise CopyDoesNotFit(
                f"its content header would take {frame} bytes, over the {limit} allowed "
                f"under frame_max {frame_max}"
            )
    return copy


def content_header_size(message: AbstractMessage) -> int:
    """The bytes of the content-header frame that publishing `message` sends, as pamqp
    marshals it (aiormq adds a 32-character message id to a message without one)."""
    properties = message.properties
    if not properties.message_id:
        properties.message_id = "0" * 32
    return len(marshal(ContentHeader(properties=properties, body_size=len(message.body)), 0))


def _encoded_size(headers: Mapping[str, FieldValue]) -> int:
    """The bytes of `headers` as a field table on the wire (pamqp's own encoding)."""
    try:
        return len(field_table(dict(headers)))
    except (TypeError, ValueError) as exc:
        # pamqp decodes a long string that is not UTF-8 to bytes, which it cannot encode.
        raise CopyDoesNotFit(
            f"its own headers cannot be encoded again ({truncated(str(exc), 200)})"
        ) from None
