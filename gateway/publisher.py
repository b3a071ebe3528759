"""Publishing events to the broker, answered only by the broker's confirm."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from common import tracing
from common.amqp import connect_with_retry, renew_channel
from common.cloudevents import DEFAULT_EVENT_SOURCE, EventSource
from common.logs import correlation_id_var, event_id_var
from common.topology import EventsTopology, declare_events_exchange
from gateway.errors import BrokerUnavailable
from gateway.lifecycle import BackgroundLink, Managed
from gateway.message_properties import message_properties
from gateway.metrics import GatewayMetrics, PublishOutcome
from gateway.settings import GatewaySettings
from schemas.registry import Event, routing_key_for

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

_RETRY_PAUSE = 0.05
# After a nack the channel is renewed (see `_renew_after_nack`), at most once this often.
_RENEW_PAUSE = 1.0


class EventPublisher(Managed, Protocol):
    @property
    def ready(self) -> bool:
        """The broker connection is open and the exchange is declared."""
        ...

    async def publish(self, event: Event, *, correlation_id: str) -> None:
        """Return once the broker confirmed the event; raise BrokerUnavailable otherwise."""
        ...


def message_body(event: Event) -> bytes:
    return event.model_dump_json().encode()


class AmqpPublisher(BackgroundLink):
    """One robust connection and one confirming channel, opened in the background.

    The gateway starts and serves /healthz even while the broker is down; publishes wait for
    the connection, but never past the deadline, so a client gets a 503 instead of a hang.
    """

    def __init__(
        self,
        url: str,
        topology: EventsTopology,
        *,
        deadline: float,
        retry_after: int,
        metrics: GatewayMetrics,
        source: EventSource = DEFAULT_EVENT_SOURCE,
    ):
        super().__init__("syncgate-broker-open")
        self._url = url
        self._topology = topology
        self._source = source
        self._deadline = deadline
        self._retry_after = retry_after
        self._metrics = metrics
        # Set while the channel is open with the exchange declared; cleared when the channel
        # closes (the broker went away) and set again once the robust channel has reopened and
        # re-declared the exchange. Publishes wait on it, within their deadline.
        self._link_up = asyncio.Event()
        self._channel: AbstractRobustChannel | None = None
        self._closing = False
        self._renewed_at = -_RENEW_PAUSE
        self._renewal: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: GatewaySettings, metrics: GatewayMetrics) -> AmqpPublisher:
        return cls(
            settings.amqp_url.get_secret_value(),
            settings.topology,
            deadline=settings.publish_deadline,
            retry_after=settings.retry_after,
            metrics=metrics,
            source=settings.event_source,
        )

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
        await declare_events_exchange(channel, self._topology)
        # The robust channel re-declares the exchange (and the unrouted queue and its binding)
        # before it calls its reopen callbacks, so "reopened" means "ready to publish" again.
        channel.close_callbacks.add(self._on_channel_closed)
        channel.reopen_callbacks.add(self._on_channel_reopened)
        self._link_up.set()
        log.info("connected to the broker; exchange %s declared", self._topology.exchange)

    def _on_channel_closed(self, _: object, exc: BaseException | None) -> None:
        self._link_up.clear()
        if not self._closing:
            log.warning("the broker channel closed (%r); publishes wait for the reconnect", exc)

    def _on_channel_reopened(self, _: object) -> None:
        self._link_up.set()
        log.info("the broker channel reopened; exchange %s re-declared", self._topology.exchange)

    @property
    def ready(self) -> bool:
        return (
            self._link_up.is_set()
            and self._connection is not None
            and self._connection.connected.is_set()
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def publish(self, event: Event, *, correlation_id: str) -> None:
        # Every line logged for this request from here on, its request line included, names
        # the event: one grep of the id finds the gateway's line and the consumer's.
        event_id = str(event.id)
        event_id_var.set(event_id)
        correlation_id_var.set(correlation_id)
        routing_key = routing_key_for(event.name)
        # The producer span: a child of the request's, and the parent the consumer continues
        # from the message's traceparent header.
        with tracer.start_as_current_span(
            f"publish {self._topology.exchange}",
            kind=SpanKind.PRODUCER,
            attributes={
                # Few: the SDK checks each attribute's value, at about 1.5 us apiece (measured).
                "messaging.system": "rabbitmq",
                "messaging.operation.name": "publish",
                "messaging.destination.name": self._topology.exchange,
                "messaging.rabbitmq.destination.routing_key": routing_key,
                "messaging.message.id": event_id,
            },
            # A failure is a BrokerUnavailable, which is the answer, not an exception to log.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            body = message_body(event)
            properties = message_properties(
                event,
                correlation_id=correlation_id,
                event_id=event_id,
                source=self._source,
                trace=tracing.inject(),
            )
            try:
                await self._publish(event, body, properties, routing_key)
            except BrokerUnavailable as exc:
                span.set_status(Status(StatusCode.ERROR, exc.message))
                raise

    async def _publish(
        self,
        event: Event,
        body: bytes,
        properties: aiormq.spec.Basic.Properties,
        routing_key: str,
    ) -> None:
        started = time.perf_counter()
        try:
            await self._publish_within_deadline(body, properties, routing_key, started=started)
        except TimeoutError:
            log.warning("publish of %s missed the %.1fs deadline", event.id, self._deadline)
            self._count(PublishOutcome.DEADLINE_MISSED, started)
            raise self._unavailable("the broker did not confirm the event in time") from None
        except aio_pika.exceptions.PublishError:
            log.error("the broker returned %s as unroutable", event.id)
            self._count(PublishOutcome.RETURNED, started)
            raise self._unavailable("the broker could not route the event") from None
        except aio_pika.exceptions.DeliveryError:
            log.error("the broker refused %s (nack)", event.id)
            self._count(PublishOutcome.NACKED, started)
            self._renew_after_nack()
            raise self._unavailable("the broker refused the event") from None
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            log.warning("publish of %s failed: %r", event.id, exc)
            self._count(PublishOutcome.FAILED, started)
            raise self._unavailable("the broker connection failed") from None
        except asyncio.CancelledError:
            # aiormq fails a pending confirm with CancelledError when its connection is torn
            # down. Only a cancellation of this request itself may pass as one.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            log.warning("publish of %s lost its connection before the confirm", event.id)
            self._count(PublishOutcome.FAILED, started)
            raise self._unavailable("the broker connection failed") from None
        self._count(PublishOutcome.CONFIRMED, started)

    async def _publish_within_deadline(
        self,
        body: bytes,
        properties: aiormq.spec.Basic.Properties,
        routing_key: str,
        *,
        started: float,
    ) -> None:
        """Publish and wait for the confirm; TimeoutError once the deadline, counted from
        `started` (a perf_counter reading), has passed.

        One deadline covers the wait for a (re)connection and the confirm: aio-pika's own
        timeout covers neither the wait for the link nor a reconnect. A blocked connection (a
        memory or disk alarm) never confirms, so it ends here too.
        """
        if self.ready:
            # The usual case: the link is up, so there is nothing to wait for but the write
            # and the confirm, and aiormq's timeout on them (all of them from aiormq 7.2, see
            # pyproject.toml) is the deadline. A second timer around it would cost every
            # request a few microseconds (measured) for nothing.
            try:
                await self._publish_now(body, properties, routing_key, timeout=self._deadline)
                return
            except aiormq.exceptions.ChannelInvalidStateError:
                pass  # closed before the write, so nothing was sent: wait for the link below
        remaining = self._deadline - (time.perf_counter() - started)
        async with asyncio.timeout(remaining):
            await self._publish_when_up(body, properties, routing_key)

    async def _publish_when_up(
        self, body: bytes, properties: aiormq.spec.Basic.Properties, routing_key: str
    ) -> None:
        while True:
            await self._link_up.wait()
            try:
                await self._publish_now(body, properties, routing_key, timeout=None)
                return
            except aiormq.exceptions.ChannelInvalidStateError:
                # The channel closed between the wait and the write, so nothing was sent and
                # another try cannot duplicate the event. The close callback clears the link
                # a moment later; the pause keeps this from spinning until it does.
                await asyncio.sleep(_RETRY_PAUSE)

    async def _publish_now(
        self,
        body: bytes,
        properties: aiormq.spec.Basic.Properties,
        routing_key: str,
        *,
        # aiormq's own timeout on the write and the confirm (see _publish_within_deadline).
        timeout: float | None,  # noqa: ASYNC109
    ) -> None:
        """Raises ChannelInvalidStateError if the channel is closed: then nothing was sent."""
        assert self._channel is not None
        if self._channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("the channel is closed")
        # Straight to aiormq's channel, as aio-pika's Exchange.publish does, but without
        # building an aio_pika.Message only to turn it into these properties. The channel
        # confirms, and raises on returns (mandatory) and nacks.
        channel = await self._channel.get_underlay_channel()
        await channel.basic_publish(
            body,
            exchange=self._topology.exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=True,
            timeout=timeout,
        )

    def _renew_after_nack(self) -> None:
        """Renew the channel in the background, at most once a _RENEW_PAUSE: a quorum queue
        may go on nacking a channel after it has a leader again (common.amqp.renew_channel
        says when). Publishes meanwhile wait for the link, within their deadline; while the
        broker really refuses (no majority), this costs a new channel a second."""
        now = time.monotonic()
        if self._channel is None or self._closing or now - self._renewed_at < _RENEW_PAUSE:
            return
        if self._renewal is not None and not self._renewal.done():
            return
        self._renewed_at = now
        self._renewal = asyncio.create_task(self._renew(self._channel), name="syncgate-renew")

    async def _renew(self, channel: AbstractRobustChannel) -> None:
        try:
            await renew_channel(channel)
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            # Closed already (its connection went): the reconnect brings a new one anyway.
            log.info("could not renew the broker channel: %r", exc)

    def _count(self, outcome: PublishOutcome, started: float) -> None:
        self._metrics.published(outcome, time.perf_counter() - started)

    def _unavailable(self, message: str) -> BrokerUnavailable:
        return BrokerUnavailable(message, retry_after=self._retry_after)

    async def close(self) -> None:
        self._closing = True
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewal
        await super().close()
