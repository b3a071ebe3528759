"""The AMQP properties of an event message, and their encoding on the wire.

pamqp encodes Basic.Properties generically: for each of the fourteen properties it looks up
the type and dispatches to an encoder. At the gateway's rate that came to about 5% of its CPU
(py-spy, README "Benchmarks"), for a header in which three values change from one event to
the next. EventProperties is an ordinary Basic.Properties (aiormq, aio-pika and the tests read
its attributes as usual); only `marshal` differs. The six values an event type always has are
encoded once per type, by pamqp itself, and the three that change (the event id, the
correlation id and the time) are packed directly. tests/unit/test_message_properties.py
holds the bytes to pamqp's own encoding.
"""

from __future__ import annotations

import functools
import struct
from datetime import UTC, datetime

import aio_pika
from pamqp.commands import Basic

from schemas.registry import Event

CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
APP_ID = "syncgate-gateway"
PERSISTENT = aio_pika.DeliveryMode.PERSISTENT.value

# The properties packed per event, between the fixed ones (see `_fixed_parts`).
_VARIABLE_FLAGS = (
    Basic.Properties.flags["correlation_id"]
    | Basic.Properties.flags["message_id"]
    | Basic.Properties.flags["timestamp"]
)
_FLAGS = struct.Struct(">H")
_SECONDS = struct.Struct(">Q")
_SHORTSTR_MAX = 255


@functools.cache
def _fixed_parts(message_type: str, version: str) -> tuple[bytes, bytes, bytes]:
    """(flags, before, after) for an event type: the flags of every property its messages
    carry, and the encoded properties it always has, those before the correlation id and
    those after the timestamp (AMQP fixes the order). pamqp encodes both halves."""
    before = Basic.Properties(
        content_type=CONTENT_TYPE,
        content_encoding=CONTENT_ENCODING,
        headers={"v": version},
        delivery_mode=PERSISTENT,
    ).marshal()
    after = Basic.Properties(message_type=message_type, app_id=APP_ID).marshal()
    (before_flags,), (after_flags,) = _FLAGS.unpack_from(before), _FLAGS.unpack_from(after)
    flags = _FLAGS.pack(before_flags | after_flags | _VARIABLE_FLAGS)
    return flags, before[_FLAGS.size :], after[_FLAGS.size :]


def _shortstr(value: str) -> bytes:
    encoded = value.encode()
    if not encoded:
        # pamqp leaves an empty property out altogether; the flags here say it is present.
        raise ValueError("an event message's ids are never empty")
    if len(encoded) > _SHORTSTR_MAX:
        # pamqp would raise the same only at the write, deep inside the publish.
        raise ValueError(f"an AMQP short string holds at most 255 bytes, not {len(encoded)}")
    return bytes((len(encoded),)) + encoded


class EventProperties(Basic.Properties):
    """The properties of one event message, encoded once when they are made.

    Its attributes are set once, here, and not changed after: `marshal` returns the bytes
    computed from them. (aiormq would set a message id only on properties without one.)
    """

    def __init__(self, event: Event, *, event_id: str, correlation_id: str) -> None:
        super().__init__(
            content_type=CONTENT_TYPE,
            content_encoding=CONTENT_ENCODING,
            headers={"v": event.v},
            delivery_mode=PERSISTENT,
            message_id=event_id,
            correlation_id=correlation_id,
            message_type=event.name,
            # AMQP's timestamp is whole seconds; the event's own ts keeps the milliseconds.
            timestamp=datetime.fromtimestamp(event.ts / 1000, tz=UTC),
            app_id=APP_ID,
        )
        flags, before, after = _fixed_parts(event.name, event.v)
        self._encoded = b"".join(
            (
                flags,
                before,
                _shortstr(correlation_id),
                _shortstr(event_id),
                _SECONDS.pack(event.ts // 1000),
                after,
            )
        )

    def marshal(self) -> bytes:
        return self._encoded


def message_properties(
    event: Event, *, correlation_id: str, event_id: str | None = None
) -> EventProperties:
    """The AMQP properties an operator sees in the management UI, and consumers read.

    `event_id` is `str(event.id)`, for a caller that has it already.
    """
    return EventProperties(
        event,
        event_id=str(event.id) if event_id is None else event_id,
        correlation_id=correlation_id,
    )
