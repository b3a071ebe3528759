"""Publishing events to the broker, answered only by the broker's confirm."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection

from gateway.errors import BrokerUnavailable
from schemas.events import ConfluenceAppSync
from schemas.registry import routing_key_for
from syncgate.amqp import connect_with_retry
from syncgate.topology import EventsTopology, declare_events_exchange

log = logging.getLogger(__name__)


class EventPublisher(Protocol):
    @property
    def ready(self) -> bool:
        """The broker connection is open and the exchange is declared."""
        ...

    async def publish(self, event: ConfluenceAppSync, *, correlation_id: str) -> None:
        """Return once the broker confirmed the event; raise BrokerUnavailable otherwise."""
        ...


def build_message(event: ConfluenceAppSync, *, correlation_id: str) -> aio_pika.Message:
    return aio_pika.Message(
        body=event.model_dump_json().encode(),
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(event.id),
        correlation_id=correlation_id,
        type=event.name,
        timestamp=datetime.fromtimestamp(event.ts / 1000, tz=UTC),
        app_id="syncgate-gateway",
        headers={"v": event.v},
    )


class AmqpPublisher:
    """One robust connection and one confirming channel, opened in the background.

    The gateway starts and serves /healthz even while the broker is down; publishes wait for
    the connection, but never past the deadline, so a client gets a 503 instead of a hang.
    """

    def __init__(self, url: str, topology: EventsTopology, *, deadline: float, retry_after: int):
        self._url = url
        self._topology = topology
        self._deadline = deadline
        self._retry_after = retry_after
        self._connected = asyncio.Event()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._opener: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._opener = asyncio.create_task(self._open(), name="syncgate-broker-open")

    async def _open(self) -> None:
        try:
            await self._open_once()
        except Exception:
            log.exception("could not set up the broker link; publishes will answer 503")
            raise

    async def _open_once(self) -> None:
        connection = await connect_with_retry(self._url, "gateway")
        self._connection = connection
        # on_return_raises: with mandatory=True an unroutable event must not look delivered.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = channel
        self._exchange = await declare_events_exchange(channel, self._topology)
        self._connected.set()
        log.info("connected to the broker; exchange %s declared", self._topology.exchange)

    @property
    def ready(self) -> bool:
        return (
            self._connected.is_set()
            and self._connection is not None
            and self._connection.connected.is_set()
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def publish(self, event: ConfluenceAppSync, *, correlation_id: str) -> None:
        message = build_message(event, correlation_id=correlation_id)
        try:
            # One deadline over the wait for a (re)connection and the confirm: aio-pika's own
            # timeout covers neither the wait on `connected` nor a reconnect.
            async with asyncio.timeout(self._deadline):
                await self._connected.wait()
                assert self._exchange is not None
                await self._exchange.publish(message, routing_key_for(event.name), mandatory=True)
        except TimeoutError:
            log.warning("publish of %s missed the %.1fs deadline", event.id, self._deadline)
            raise self._unavailable("the broker did not confirm the event in time") from None
        except aio_pika.exceptions.PublishError:
            log.error("the broker returned %s as unroutable", event.id)
            raise self._unavailable("the broker could not route the event") from None
        except aio_pika.exceptions.DeliveryError:
            log.error("the broker refused %s (nack)", event.id)
            raise self._unavailable("the broker refused the event") from None
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            log.warning("publish of %s failed: %r", event.id, exc)
            raise self._unavailable("the broker connection failed") from None

    def _unavailable(self, message: str) -> BrokerUnavailable:
        return BrokerUnavailable(message, retry_after=self._retry_after)

    async def close(self) -> None:
        if self._opener is not None:
            self._opener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._opener
        if self._connection is not None:
            await self._connection.close()
