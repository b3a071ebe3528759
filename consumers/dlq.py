"""Looking into the dead-letter queue, and replaying what is in it.

Browsing never removes anything: messages are fetched without an ack on a channel of their
own, and closing that channel hands every one of them back to the queue, in their order.
A replay republishes a message to the events exchange on a confirming channel (mandatory,
returns raise) and acks it in the DLQ only once the broker confirmed the republish, so a
crash in between duplicates an event (the consumer dedupes on its id) and never loses it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from common.amqp import connection_name, negotiated_frame_max
from common.republish import (
    ATTEMPT_HEADER,
    DEAD_LETTER_HEADERS,
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    REASON_HEADER,
    REPLAYED_HEADER,
    ROUTING_KEY_HEADER,
    CopyDoesNotFit,
    republished,
)
from consumers.settings import ConsumerSettings


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


def _x_death(headers: Mapping[str, Any], queue: str) -> Mapping[str, Any] | None:
    """The broker's own dead-lettering record for `queue` (e.g. its delivery limit)."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return None
    for death in deaths:
        if isinstance(death, Mapping) and _text(death.get("queue", "")) == queue:
            return death
    return None


def describe(message: AbstractIncomingMessage, work_queue: str) -> DeadLetter:
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
    if isinstance(stamped, int):
        when = datetime.fromtimestamp(stamped, tz=UTC)
    elif death is not None and isinstance(death.get("time"), datetime):
        when = death["time"]
    else:
        when = message.timestamp

    return DeadLetter(
        event_id=message.message_id or "-",
        reason=_text(reason) if reason is not None else "unknown",
        attempts=attempts if isinstance(attempts, int) else 0,
        dead_lettered_at=when,
        error=_text(headers.get(ERROR_HEADER, "")),
        routing_key=_text(routing_key) if routing_key is not None else None,
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


class DeadLetterQueue:
    """One connection to the broker, for browsing and replaying one consumer's DLQ."""

    def __init__(self, connection: AbstractConnection, settings: ConsumerSettings) -> None:
        self._connection = connection
        self._settings = settings

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: ConsumerSettings) -> AsyncIterator[DeadLetterQueue]:
        url = settings.amqp_url.get_secret_value()
        try:
            # A plain connection: an operator's command should fail, not wait for a broker.
            connection = await aio_pika.connect(
                url, timeout=10, client_properties={"connection_name": connection_name("dlq")}
            )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            raise DeadLetterError(f"cannot reach the broker: {exc or type(exc).__name__}") from None
        async with connection:
            yield cls(connection, settings)

    @property
    def name(self) -> str:
        return self._settings.topology.dead_letter_queue

    @contextlib.asynccontextmanager
    async def _browsing(self) -> AsyncIterator[AbstractQueue]:
        """The DLQ on a channel of its own: what is fetched and not acked goes back on close."""
        channel: AbstractChannel = await self._connection.channel()
        async with channel:
            try:
                queue = await channel.declare_queue(self.name, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                raise DeadLetterError(
                    f"there is no queue {self.name!r}: has a consumer with SYNCGATE_QUEUE="
                    f"{self._settings.queue!r} ever started?"
                ) from None
            yield queue

    async def count(self) -> int:
        async with self._browsing() as queue:
            return queue.declaration_result.message_count or 0

    async def list(self, *, limit: int) -> list[DeadLetter]:
        """Up to `limit` dead letters, oldest first, all of them left in the queue."""
        letters: list[DeadLetter] = []
        async with self._browsing() as queue:
            while len(letters) < limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                letters.append(describe(message, self._settings.queue))
        return letters

    async def replay_one(self, event_id: str) -> DeadLetter:
        """Replay the message with this event id; the others stay where they were."""
        async with self._browsing() as queue, self._publishing() as publisher:
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                if message.message_id == event_id:
                    return await self._replay(message, publisher)
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
                exchange = await channel.get_exchange(self._settings.exchange)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                raise DeadLetterError(f"there is no exchange {self._settings.exchange!r}") from None
            yield _Publisher(exchange, await negotiated_frame_max(channel))

    async def _replay(self, message: AbstractIncomingMessage, publisher: _Publisher) -> DeadLetter:
        letter = describe(message, self._settings.queue)
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
        # The confirm comes first: only then may the DLQ forget the message.
        await publisher.exchange.publish(copy, routing_key=letter.routing_key, mandatory=True)
        await message.ack()
        return letter
