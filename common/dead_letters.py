"""Looking into a queue of dead letters (a consumer's DLQ, or the unrouted queue), and
replaying or discarding what is in it: `syncgate dlq` and the gateway's DLQ page share it.

Browsing never removes anything: messages are fetched without an ack on a channel of their
own, and closing that channel hands every one of them back to the queue, in their order.
A replay republishes a message to the events exchange on a confirming channel (mandatory,
returns raise) and acks it in the DLQ only once the broker confirmed the republish, so a
crash in between duplicates an event (the consumer dedupes on its id) and never loses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from common.amqp import negotiated_frame_max
from common.republish import (
    ATTEMPT_HEADER,
    DEAD_LETTER_HEADERS,
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    HEADER_VALUE_LIMIT,
    REASON_HEADER,
    REPLAYED_HEADER,
    ROUTING_KEY_HEADER,
    CopyDoesNotFit,
    republished,
    truncated,
)


class DeadLetterError(Exception):
    """The operator asked for something the broker or the queue cannot give."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    event_id: str
    reason: str
    attempts: int
    dead_lettered_at: datetime | None
    error: str
    routing_key: str | None


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# A reason or a routing key is a word; anything longer came from outside.
_SHORT = 256


def _shown(value: object, limit: int = HEADER_VALUE_LIMIT) -> str:
    """A header's value as one bounded line: control characters (newlines in a validation
    error, or anything a publisher put there) become a space."""
    return truncated(_CONTROL.sub(" ", _text(value)), limit)


# Why the broker itself dead-letters from the work queue, by x-death's reason.
_BROKER_REASONS = {
    "rejected": (
        "rejected without requeue by the consumer: its retry or dead-letter copy would not "
        "fit in a frame (the consumer logged a WARNING with the reason)"
    ),
    "delivery_limit": (
        "delivered more often than the work queue's x-delivery-limit without being settled"
    ),
    "expired": "its time to live ran out in the work queue",
    "maxlen": "the work queue was full",
}


def _routing_key(value: object) -> str | None:
    """The original routing key, if `value` can be one (AMQP's are at most 255 bytes)."""
    if value is None:
        return None
    key = _text(value)
    return key if len(key.encode(errors="replace")) <= 255 else None


def _broker_error(death: Mapping[str, Any], headers: Mapping[str, Any]) -> str:
    reason = _text(death.get("reason", ""))
    said = _BROKER_REASONS.get(reason, f"dead-lettered by the broker ({_shown(reason, _SHORT)})")
    last = headers.get(ERROR_HEADER)
    return f"{said}; last error: {_text(last)}" if last else said


def _x_death(headers: Mapping[str, Any], queue: str) -> Mapping[str, Any] | None:
    """The broker's own dead-lettering record for `queue` (e.g. its delivery limit)."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return None
    for death in deaths:
        if isinstance(death, Mapping) and _text(death.get("queue", "")) == queue:
            return death
    return None


_YEAR_10000 = 253_402_300_800  # datetime cannot go past it


class Browsed(Protocol):
    """What `describe` reads from a fetched message: aio-pika's IncomingMessage has it."""

    @property
    def headers(self) -> Mapping[str, Any]: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def timestamp(self) -> datetime | None: ...


def describe(message: Browsed, work_queue: str) -> DeadLetter:
    """Our runner's headers when it dead-lettered; else what the broker wrote in x-death."""
    headers: Mapping[str, Any] = message.headers or {}
    death = _x_death(headers, work_queue)

    routing_key = headers.get(ROUTING_KEY_HEADER)
    if routing_key is None and death is not None and death.get("routing-keys"):
        # A broker dead-lettering replaced the routing key; the original is in x-death.
        routing_key = death["routing-keys"][0]

    reason = headers.get(REASON_HEADER)
    if reason is None and death is not None:
        reason = death.get("reason")

    attempts = headers.get(ATTEMPT_HEADER)
    if not isinstance(attempts, int) and death is not None:
        attempts = death.get("count")

    stamped = headers.get(DEAD_LETTERED_AT_HEADER)
    when: datetime | None
    if isinstance(stamped, int) and 0 <= stamped < _YEAR_10000:
        when = datetime.fromtimestamp(stamped, tz=UTC)
    elif death is not None and isinstance(death.get("time"), datetime):
        when = death["time"]
    else:
        when = message.timestamp

    if REASON_HEADER not in headers and death is not None:
        error = _broker_error(death, headers)
    else:
        error = _text(headers.get(ERROR_HEADER, ""))

    return DeadLetter(
        event_id=message.message_id or "-",
        reason=_shown(reason, _SHORT) if reason is not None else "unknown",
        attempts=attempts if isinstance(attempts, int) else 0,
        dead_lettered_at=when,
        error=_shown(error),
        routing_key=_routing_key(routing_key),
    )


def replay_message(
    message: AbstractIncomingMessage, replays: int, *, frame_max: int
) -> aio_pika.Message:
    """The event as the gateway sent it: first attempt again, the dead-letter headers gone.
    Raises CopyDoesNotFit like every republish (see common.republish)."""
    return republished(
        message,
        {ATTEMPT_HEADER: 1, REPLAYED_HEADER: replays},
        frame_max=frame_max,
        without=DEAD_LETTER_HEADERS,
    )


@dataclass(frozen=True, slots=True)
class _Publisher:
    exchange: aio_pika.abc.AbstractExchange
    frame_max: int


class DeadLetters:
    """One queue of dead letters on one connection: browse it, replay from it, discard from it.

    `work_queue` is the queue whose broker dead-letterings (x-death) explain a message;
    `own_routing_key` says the messages kept the routing key they were published with (the
    unrouted queue: the alternate exchange does not change it)."""

    def __init__(
        self,
        connection: AbstractConnection,
        *,
        queue: str,
        work_queue: str,
        exchange: str,
        own_routing_key: bool = False,
        missing: str = "",
    ) -> None:
        self._connection = connection
        self.name = queue
        self._work_queue = work_queue
        self._exchange = exchange
        self._own_routing_key = own_routing_key
        self._missing = missing

    def describe(self, message: AbstractIncomingMessage) -> DeadLetter:
        letter = describe(message, self._work_queue)
        if letter.routing_key is None and self._own_routing_key:
            letter = dataclasses.replace(letter, routing_key=_routing_key(message.routing_key))
        return letter

    @contextlib.asynccontextmanager
    async def _browsing(self) -> AsyncIterator[AbstractQueue]:
        """The queue on a channel of its own: what is fetched and not acked goes back on close."""
        channel: AbstractChannel = await self._connection.channel()
        async with channel:
            try:
                queue = await channel.declare_queue(self.name, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                raise DeadLetterError(f"there is no queue {self.name!r}{self._missing}") from None
            yield queue

    async def count(self) -> int:
        async with self._browsing() as queue:
            return queue.declaration_result.message_count or 0

    async def read(self, *, limit: int) -> list[tuple[DeadLetter, bytes]]:
        """Up to `limit` dead letters with their bodies, oldest first, all left in the queue."""
        read: list[tuple[DeadLetter, bytes]] = []
        async with self._browsing() as queue:
            while len(read) < limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                read.append((self.describe(message), message.body))
        return read

    async def list(self, *, limit: int) -> list[DeadLetter]:
        """Up to `limit` dead letters, oldest first, all of them left in the queue."""
        return [letter for letter, _ in await self.read(limit=limit)]

    async def replay_one(self, event_id: str) -> DeadLetter:
        """Replay the message with this event id; the others stay where they were."""
        async with self._browsing() as queue, self._publishing() as publisher:
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                if message.message_id == event_id:
                    return await self._replay(message, publisher)
        raise DeadLetterError(f"no event {event_id!r} in {self.name}")

    async def discard_one(self, event_id: str) -> DeadLetter:
        """Remove the message with this event id for good; the others stay where they were."""
        async with self._browsing() as queue:
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                if message.message_id == event_id:
                    letter = self.describe(message)
                    await message.ack()
                    return letter
        raise DeadLetterError(f"no event {event_id!r} in {self.name}")

    async def replay_all(self, *, limit: int) -> AsyncIterator[DeadLetter]:
        """Replay up to `limit` messages, oldest first, yielding each once it is replayed.

        The limit is the count at the start: an event that fails again at once is
        dead-lettered behind the others, and must not be replayed in a loop.
        """
        async with self._browsing() as queue, self._publishing() as publisher:
            for _ in range(limit):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    return
                yield await self._replay(message, publisher)

    @contextlib.asynccontextmanager
    async def _publishing(self) -> AsyncIterator[_Publisher]:
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        async with channel:
            try:
                exchange = await channel.get_exchange(self._exchange)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                raise DeadLetterError(f"there is no exchange {self._exchange!r}") from None
            yield _Publisher(exchange, await negotiated_frame_max(channel))

    async def _replay(self, message: AbstractIncomingMessage, publisher: _Publisher) -> DeadLetter:
        letter = self.describe(message)
        if letter.routing_key is None:
            raise DeadLetterError(
                f"event {letter.event_id} has no original routing key; it stays in {self.name}"
            )
        replays = (message.headers or {}).get(REPLAYED_HEADER, 0)
        count = replays + 1 if isinstance(replays, int) else 1
        try:
            copy = replay_message(message, count, frame_max=publisher.frame_max)
        except CopyDoesNotFit as exc:
            raise DeadLetterError(
                f"event {letter.event_id} cannot be replayed: {exc}; it stays in {self.name}"
            ) from None
        # The confirm comes first: only then may the queue forget the message.
        await publisher.exchange.publish(copy, routing_key=letter.routing_key, mandatory=True)
        await message.ack()
        return letter
