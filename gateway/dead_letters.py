"""The queues the operators' DLQ page reads: the consumer's DLQ and the unrouted queue.

Each request opens its own short-lived broker connection, as `syncgate dlq` does: the page is
used rarely, a look must hand every message back when it ends (closing the channel does), and
a broker outage is then simply a 503 for that request. What the page may do to a queue is
common.dead_letters' (browse, replay with a confirm before the ack, discard one).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

import aio_pika

from common.amqp import connection_name
from common.dead_letters import DeadLetter, DeadLetters
from common.topology import ConsumerTopology
from gateway.settings import GatewaySettings

QueueName = Literal["dlq", "unrouted"]
QUEUE_NAMES: tuple[QueueName, ...] = ("dlq", "unrouted")


class QueuesUnavailable(Exception):
    """The broker cannot be reached (or went away mid-request)."""


class DeadLetterSource(Protocol):
    """One queue of dead letters; common.dead_letters.DeadLetters is the real one."""

    name: str

    async def count(self) -> int: ...
    async def read(self, *, limit: int) -> list[tuple[DeadLetter, bytes]]: ...
    async def replay_one(self, event_id: str) -> DeadLetter: ...
    async def discard_one(self, event_id: str) -> DeadLetter: ...
    def replay_all(self, *, limit: int) -> AsyncIterator[DeadLetter]: ...


class OperatorQueues(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def open(self, which: QueueName) -> AbstractAsyncContextManager[DeadLetterSource]:
        """The queue on a connection of its own, for one request; QueuesUnavailable if the
        broker cannot be reached."""
        ...


class BrokerQueues:
    """The real queues, named by the gateway's settings (SYNCGATE_QUEUE and the exchanges)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._url = settings.amqp_url.get_secret_value()
        self._queue = settings.queue
        self._dead_letter_queue = ConsumerTopology(queue=settings.queue).dead_letter_queue
        self._exchange = settings.exchange
        self._unrouted = settings.unrouted_exchange

    async def start(self) -> None:
        pass  # nothing is held open between requests

    async def close(self) -> None:
        pass

    @contextlib.asynccontextmanager
    async def open(self, which: QueueName) -> AsyncIterator[DeadLetterSource]:
        try:
            connection = await aio_pika.connect(
                self._url,
                timeout=5,
                client_properties={"connection_name": connection_name("gateway-dlq")},
            )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            raise QueuesUnavailable(
                f"cannot reach the broker: {exc or type(exc).__name__}"
            ) from None
        async with connection:
            try:
                yield DeadLetters(
                    connection,
                    queue=self._dead_letter_queue if which == "dlq" else self._unrouted,
                    work_queue=self._queue,
                    exchange=self._exchange,
                    own_routing_key=which == "unrouted",
                )
            except (ConnectionError, aio_pika.exceptions.AMQPConnectionError) as exc:
                raise QueuesUnavailable(f"the broker went away: {exc}") from None
