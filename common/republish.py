"""The republish wire format: the `x-syncgate-*` headers, and the copy of a delivered event
that the consumer publishes again (to a retry queue or the DLQ) and that a DLQ replay sends
back to the events exchange.

A copy keeps the body and the properties the gateway set (ids, type, time, content type),
is persistent, and carries the delivery's headers with these replaced or added.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Protocol

import aio_pika
from aiormq.abc import FieldValue

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
    without: Collection[str] = (),
) -> aio_pika.Message:
    """The persistent copy of `message`, its headers minus `without`, plus `headers`."""
    kept = {k: v for k, v in (message.headers or {}).items() if k not in without}
    return aio_pika.Message(
        body=message.body,
        headers={**kept, **headers},
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
    )
