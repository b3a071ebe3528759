"""Logged-out sessions, known to every gateway.

A session cookie is a bearer token that stays valid until it expires, so logging out has to
tell every gateway to refuse its session id. The revocations go to a RabbitMQ stream (an
append-only log with time-based retention): each gateway replays it from the start when it
boots and then follows it, and keeps the revoked ids in memory until they would have expired
anyway. So a gateway started after a logout learns of it too, and a gateway that loses the
broker still refuses every revocation it already knows.

Until a gateway has replayed the stream it does not know which sessions are revoked, so it is
not `ready` and refuses signed-in requests (503) rather than guessing. "Replayed" is proved by
a marker: the gateway appends a random nonce to the stream after subscribing, and the stream
is ordered, so once the nonce comes back every earlier revocation has been read.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Protocol

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel

from common.amqp import connect_with_retry
from gateway.errors import BrokerUnavailable
from gateway.lifecycle import BackgroundLink, Managed
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# Unacked stream deliveries in flight; a stream consumer must set one (and ack manually).
_PREFETCH = 256


class RevocationList(Managed, Protocol):
    @property
    def ready(self) -> bool:
        """Every revocation made before this gateway started is known."""
        ...

    def is_revoked(self, session_id: str) -> bool: ...

    async def revoke(self, session_id: str, *, until: float) -> None:
        """Return once the revocation is durable; raise BrokerUnavailable otherwise."""
        ...


class RevokedSessions:
    """Session id → the time after which its cookie is dead anyway; expired ids are pruned."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        self._next_prune = 0.0

    def add(self, session_id: str, until: float) -> None:
        now = self._clock()
        if until > now:
            self._until[session_id] = max(until, self._until.get(session_id, until))
        # Pruning is a full scan, so do it at most once a minute.
        if now >= self._next_prune:
            self._until = {sid: end for sid, end in self._until.items() if end > now}
            self._next_prune = now + 60

    def __contains__(self, session_id: str) -> bool:
        until = self._until.get(session_id)
        return until is not None and until > self._clock()

    def __len__(self) -> int:
        return len(self._until)


class StreamRevocations(BackgroundLink):
    """Revocations shared through a RabbitMQ stream; see the module docstring."""

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        max_age: int,
        clock: Callable[[], float],
        deadline: float,
        retry_after: int,
    ) -> None:
        super().__init__("syncgate-revocations-open")
        self._url = url
        self._stream = stream
        self._max_age = max_age
        self._deadline = deadline
        self._retry_after = retry_after
        self.revoked = RevokedSessions(clock)
        self._marker = secrets.token_hex(16)
        self._caught_up = asyncio.Event()
        self._channel: AbstractRobustChannel | None = None

    @classmethod
    def from_settings(
        cls, settings: GatewaySettings, clock: Callable[[], float]
    ) -> StreamRevocations:
        return cls(
            settings.amqp_url.get_secret_value(),
            settings.revocation_stream,
            max_age=settings.session_absolute_timeout,
            clock=clock,
            deadline=settings.publish_deadline,
            retry_after=settings.retry_after,
        )

    async def _open(self) -> None:
        try:
            connection = await connect_with_retry(self._url, "gateway-revocations")
            self._connection = connection
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._channel = channel
            # The robust channel restores the prefetch and the consumer (with its arguments, so
            # from the start of the stream again: replaying known revocations is harmless).
            await channel.set_qos(prefetch_count=_PREFETCH)
            queue = await channel.declare_queue(
                self._stream,
                durable=True,
                arguments={"x-queue-type": "stream", "x-max-age": f"{self._max_age}s"},
            )
            await queue.consume(self._on_message, arguments={"x-stream-offset": "first"})
            await self._append({"marker": self._marker})
            log.info("following the revocation stream %s", self._stream)
        except Exception:
            log.exception("could not follow the revocation stream; signed-in requests get 503")
            raise

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Stream deliveries must be acked for the broker to send more; nothing is requeued.
        await message.ack()
        try:
            record = orjson.loads(message.body)
            if record.get("marker") == self._marker:
                if not self._caught_up.is_set():
                    log.info("replayed the revocation stream: %d revoked", len(self.revoked))
                self._caught_up.set()
            elif isinstance(record.get("sid"), str) and isinstance(record.get("until"), int):
                self.revoked.add(record["sid"], record["until"])
        except (orjson.JSONDecodeError, AttributeError):
            log.warning("skipped an unreadable record on the revocation stream")

    @property
    def ready(self) -> bool:
        return self._caught_up.is_set()

    def is_revoked(self, session_id: str) -> bool:
        return session_id in self.revoked

    async def revoke(self, session_id: str, *, until: float) -> None:
        try:
            async with asyncio.timeout(self._deadline):
                await self._append({"sid": session_id, "until": int(until)})
        except (
            TimeoutError,
            aio_pika.exceptions.AMQPError,
            ConnectionError,
            RuntimeError,
        ) as exc:
            log.warning("could not record a logout on the revocation stream: %r", exc)
            raise BrokerUnavailable(
                "the logout could not be recorded; try again", retry_after=self._retry_after
            ) from None
        self.revoked.add(session_id, until)

    async def _append(self, record: dict[str, object]) -> None:
        if self._channel is None:
            raise RuntimeError("the revocation stream is not open yet")
        message = aio_pika.Message(
            body=orjson.dumps(record),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            app_id="syncgate-gateway",
        )
        # Confirmed and mandatory: returns only once the stream has stored it.
        await self._channel.default_exchange.publish(message, self._stream, mandatory=True)
