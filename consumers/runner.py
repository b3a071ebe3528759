"""The consume loop and the one place that decides how each delivery is settled."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractMessage
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import ValidationError

from common import tracing
from common.amqp import connect_with_retry, negotiated_frame_max
from common.logs import correlation_id_var, event_id_var
from common.management import PolicyError, keep_dead_letters, vhost_of
from common.process import StartupError
from common.republish import (
    ATTEMPT_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    SOURCE_QUEUE_HEADER,
    CopyDoesNotFit,
    Delivered,
    republished,
    truncated,
)
from common.stores.runs import RunStoreUnavailable, RunWrites
from common.topology import declare_consumer_topology
from consumers.acks import BatchedAcks, Settleable
from consumers.errors import NonRetryableError
from consumers.follow_ups import publish_follow_ups
from consumers.handlers import Deps, Handler, HandlerDeps
from consumers.metrics import ConsumerMetrics
from consumers.pause import StorePause
from consumers.settings import ConsumerSettings
from schemas.registry import REGISTRY, Event, EventRegistry, UnknownEvent

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# One more than the tasks between a delivery frame and our callback starting (see `run`).
# Not a speed trick: the SIGTERM drain depends on it. A delivery read before the cancel-ok
# only counts as in flight once its callback runs, so the drain yields this many times first;
# with fewer, a message already received could be left unsettled at exit (it would be
# redelivered, not lost, but the drain promises to settle what it received).
_DELIVERY_TASK_HOPS = 3


class Settlement(enum.Enum):
    """How a delivery ends. `Runner.decide` picks one; `Runner.settle` carries it out."""

    ACK = "ack"
    """The handler succeeded: ack."""
    DUPLICATE = "duplicate"
    """The event was processed before (a redelivery): ack without running the handler."""
    RETRY = "retry"
    """The handler failed and attempts remain: park it in the retry queue for its backoff."""
    DEAD_LETTER = "dead_letter"
    """It can never succeed, or attempts ran out: park it in the DLQ with the reason."""
    HAND_BACK = "hand_back"
    """The run store is unavailable: back to the queue (reject, requeue), no attempt counted;
    consuming is paused until the store answers (`consumers/pause.py`)."""


class Delivery(Settleable, Delivered, Protocol):
    """What the runner reads from a delivered message; how it is settled comes from Settleable,
    and what a republished copy keeps from Delivered."""

    @property
    def routing_key(self) -> str | None: ...


class Republisher(Protocol):
    """An exchange on a confirming channel: `publish` returns once the broker confirmed."""

    async def publish(
        self, message: AbstractMessage, routing_key: str, *, mandatory: bool = True
    ) -> object: ...


FrameMax = Callable[[], Awaitable[int]]
"""Reads the `frame_max` that the republishing channel's connection negotiated."""


@dataclass(frozen=True, slots=True)
class Decision:
    settlement: Settlement
    reason: str = ""
    error: str = ""
    follow_ups: tuple[Event, ...] = ()
    """For ACK: what the handler asked to publish, now that its writes are committed."""


def attempt_of(message: Delivery) -> int:
    value = (message.headers or {}).get(ATTEMPT_HEADER, 1)
    return value if isinstance(value, int) and value >= 1 else 1


# A validation error names where each error is: a location may be a key from the body.
_SHOWN_ERRORS = 10
_LOCATION_PART_BYTES = 80


def _invalid_body(exc: Exception) -> str:
    """Why the body is no event, quoting none of it unbounded."""
    if not isinstance(exc, ValidationError):
        return str(exc)[:1000]
    shown = [
        ".".join(truncated(str(part), _LOCATION_PART_BYTES) for part in error["loc"])
        + f": {truncated(error['msg'], 200)}"
        for error in exc.errors(include_url=False, include_input=False)[:_SHOWN_ERRORS]
    ]
    count, more = exc.error_count(), exc.error_count() - len(shown)
    return (
        f"{count} validation error{'s' if count != 1 else ''} for {exc.title}: "
        + "; ".join(shown)
        + (f"; and {more} more" if more > 0 else "")
    )


class Runner:
    def __init__(
        self,
        settings: ConsumerSettings,
        handlers: dict[str, Handler],
        deps: Deps,
        *,
        registry: EventRegistry = REGISTRY,
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics if metrics is not None else ConsumerMetrics()
        self._handlers = self._metrics.timed(handlers)
        self._deps = deps
        self._registry = registry
        self._acks = BatchedAcks()
        self._in_flight = 0
        self._pause = StorePause(deps.runs, self._metrics)
        self._drained = asyncio.Event()
        self._drained.set()
        self._retry_exchange: Republisher | None = None
        self._dead_letter_exchange: Republisher | None = None
        self._events_exchange: Republisher | None = None
        self._frame_max: FrameMax | None = None
        self.consuming = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then finish and settle what is in flight."""
        settings = self._settings
        connection = await connect_with_retry(settings.amqp_url.get_secret_value(), "consumer")
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=settings.prefetch)
            queue = await declare_consumer_topology(channel, settings.topology)
            await self._keep_dead_letters(channel)
            await self._open_republisher(
                await connection.channel(publisher_confirms=True, on_return_raises=True)
            )
            await self._pause.subscribe(queue, self._on_message)
            self.consuming.set()
            log.info("consuming %s (prefetch %d)", settings.queue, settings.prefetch)
            await stop.wait()
            log.info("stopping: cancelling the consumer and draining in-flight messages")
            await self._pause.stop()
            # Deliveries read before the cancel-ok are tasks (aiormq's, then aio-pika's) whose
            # callback has not started yet, so `_in_flight` does not count them: let them start.
            for _ in range(_DELIVERY_TASK_HOPS):
                await asyncio.sleep(0)
            await self._drained.wait()
            self.consuming.clear()
        log.info("stopped; nothing is left in flight")

    async def _keep_dead_letters(self, channel: AbstractChannel) -> None:
        """On RabbitMQ 4.x, the policy that keeps `dlq list` from dropping what it reads."""
        settings = self._settings
        management = settings.management_url
        try:
            policy = await keep_dead_letters(
                channel,
                settings.topology,
                management_url=management.get_secret_value() if management else None,
                vhost=vhost_of(settings.amqp_url.get_secret_value()),
            )
        except PolicyError as exc:
            raise StartupError(str(exc)) from None
        if policy is not None:
            log.info("policy %s in effect: no delivery limit on %s", policy.name, policy.pattern)

    async def _open_republisher(self, channel: AbstractChannel) -> None:
        # The default exchange routes by queue name, which is how a retry queue is addressed.
        self.use_exchanges(
            retry=channel.default_exchange,
            dead_letter=await channel.get_exchange(self._settings.dead_letter_exchange),
            events=await channel.get_exchange(self._settings.exchange),
            frame_max=functools.partial(negotiated_frame_max, channel),
        )

    def use_exchanges(
        self,
        *,
        retry: Republisher,
        dead_letter: Republisher,
        events: Republisher,
        frame_max: FrameMax,
    ) -> None:
        """Where `settle` republishes, and publishes follow-up events (`events`): all on
        confirming channels, whose connection's negotiated `frame_max` bounds each copy."""
        self._retry_exchange = retry
        self._dead_letter_exchange = dead_letter
        self._events_exchange = events
        self._frame_max = frame_max

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._in_flight += 1
        self._drained.clear()
        event_token = event_id_var.set(message.message_id)
        correlation_token = correlation_id_var.set(message.correlation_id)
        try:
            # The consumer span continues the trace of the message's traceparent (the gateway's
            # publish span), around the handler and the settlement; each attempt has its own.
            with tracer.start_as_current_span(
                f"process {self._settings.queue}",
                context=tracing.extract(message.headers or {}),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "rabbitmq",
                    "messaging.operation.name": "process",
                    "messaging.destination.name": self._settings.queue,
                    "messaging.rabbitmq.destination.routing_key": message.routing_key or "",
                    "messaging.message.id": message.message_id or "",
                },
            ) as span:
                decision = await self.decide(message)
                span.set_attribute("syncgate.settlement", decision.settlement.value)
                if decision.settlement is Settlement.DEAD_LETTER:
                    span.set_status(Status(StatusCode.ERROR, decision.reason))
                await self.settle(message, decision)
        except Exception:
            log.exception("could not settle the message; the broker will redeliver it")
            # If settling failed before the ack (a republish was not confirmed), hand it back
            # now; if the channel is gone, the broker requeues it by itself.
            with contextlib.suppress(Exception):
                await self._acks.reject(message, requeue=True)
        finally:
            event_id_var.reset(event_token)
            correlation_id_var.reset(correlation_token)
            self._in_flight -= 1
            if self._in_flight == 0:
                self._drained.set()

    async def decide(self, message: Delivery) -> Decision:
        try:
            envelope = orjson.loads(message.body)
            name, version = envelope["name"], envelope["v"]
            event_type = self._registry.resolve(str(name), str(version))
            event = event_type.model.model_validate_json(message.body)
        except UnknownEvent as exc:
            return Decision(Settlement.DEAD_LETTER, "unknown_event", str(exc))
        except (orjson.JSONDecodeError, TypeError, KeyError, ValidationError) as exc:
            return Decision(Settlement.DEAD_LETTER, "invalid_body", _invalid_body(exc))

        event_id = str(getattr(event, "id", message.message_id))
        handler = self._handlers.get(event_type.name)
        if handler is None:
            return Decision(Settlement.DEAD_LETTER, "no_handler", f"no handler for {name}")
        # Two copies of one event in flight at once (a republish racing a redelivery), here or
        # at another consumer, must not both run the handler: the claim goes to one of them,
        # and the other waits for it to end, then finds the event processed.
        try:
            writes = await self._deps.runs.claim(event_id)
            if writes is None:
                return Decision(Settlement.DUPLICATE)
            try:
                return await self._handle(message, event, event_id, handler, writes)
            finally:
                await writes.release()
        except RunStoreUnavailable as exc:
            await self._pause.store_failed(exc)
            return Decision(Settlement.HAND_BACK, "run_store_unavailable", str(exc))

    async def _handle(
        self, message: Delivery, event: object, event_id: str, handler: Handler, writes: RunWrites
    ) -> Decision:
        deps = HandlerDeps(runs=writes)
        try:
            await handler(event, deps)
        except NonRetryableError as exc:
            return Decision(Settlement.DEAD_LETTER, "handler_rejected", repr(exc)[:1000])
        except Exception as exc:
            if attempt_of(message) < self._settings.max_attempts:
                log.warning("handler failed (attempt %d): %.1000r", attempt_of(message), exc)
                return Decision(Settlement.RETRY, "handler_failed", repr(exc)[:1000])
            return Decision(Settlement.DEAD_LETTER, "retries_exhausted", repr(exc)[:1000])
        writes.mark_processed(event_id)
        # On disk before the ack: a crash after this is a duplicate, never a loss.
        await writes.commit()
        return Decision(Settlement.ACK, follow_ups=tuple(deps.follow_ups))

    async def settle(self, message: Delivery, decision: Decision) -> None:
        if decision.settlement is Settlement.HAND_BACK:
            # Not the handler's failure: nothing is republished and no attempt is counted. The
            # subscription is cancelled by now, so the broker keeps it for the next consumer.
            await self._acks.reject(message, requeue=True)
            self._metrics.settled(decision.settlement.value)
            log.info("settled: %s", decision.settlement.value)
            return
        if decision.settlement is Settlement.RETRY or decision.settlement is Settlement.DEAD_LETTER:
            try:
                await self._republish(message, decision)
            except CopyDoesNotFit as exc:
                await self._leave_to_the_broker(message, decision, exc)
                return
        if decision.follow_ups:
            await self._publish_follow_ups(message, decision.follow_ups)
        await self._acks.ack(message)
        self._metrics.settled(decision.settlement.value)
        log.info("settled: %s", decision.settlement.value)

    async def _publish_follow_ups(self, message: Delivery, events: tuple[Event, ...]) -> None:
        """After the commit, before the ack; a failure is logged and counted, and the ack
        goes ahead (consumers/follow_ups.py says why)."""
        assert self._events_exchange is not None
        confirmed = await publish_follow_ups(
            self._events_exchange,
            events,
            correlation_id=message.correlation_id,
            attempts=self._settings.follow_up_attempts,
            timeout=self._settings.follow_up_timeout,
        )
        for ok in confirmed:
            self._metrics.follow_up("confirmed" if ok else "failed")

    async def _republish(self, message: Delivery, decision: Decision) -> None:
        """The copy for the retry queue or the DLQ, confirmed before the ack: a crash in
        between duplicates, never loses. Raises CopyDoesNotFit, having published nothing."""
        routing_key = (message.headers or {}).get(ROUTING_KEY_HEADER) or message.routing_key
        attempt = attempt_of(message)
        error = truncated(decision.error)
        assert self._frame_max is not None
        frame_max = await self._frame_max()
        if decision.settlement is Settlement.RETRY:
            exchange = self._retry_exchange
            queue = self._settings.topology.retry_queue(attempt)
            copy = republished(
                message,
                {ATTEMPT_HEADER: attempt + 1, ROUTING_KEY_HEADER: routing_key, ERROR_HEADER: error},
                frame_max=frame_max,
            )
        else:
            exchange = self._dead_letter_exchange
            queue = self._settings.queue
            copy = republished(
                message,
                {
                    REASON_HEADER: decision.reason,
                    ERROR_HEADER: error,
                    ATTEMPT_HEADER: attempt,
                    ROUTING_KEY_HEADER: routing_key,
                    SOURCE_QUEUE_HEADER: self._settings.queue,
                    DEAD_LETTERED_AT_HEADER: int(time.time()),
                },
                frame_max=frame_max,
            )
            # A WARNING, not an ERROR: one dead letter wakes nobody; a DLQ that grows is what
            # pages, from syncgate_dlq_messages (README "Metrics").
            log.warning("dead-lettering the message: %s: %s", decision.reason, error)
        assert exchange is not None
        await exchange.publish(copy, routing_key=queue, mandatory=True)

    async def _leave_to_the_broker(
        self, message: Delivery, decision: Decision, why: CopyDoesNotFit
    ) -> None:
        """Reject it without requeue: the work queue's dead-letter exchange takes it to the
        DLQ as it is, with the broker's x-death. A message is never worth the connection."""
        kind = "retry" if decision.settlement is Settlement.RETRY else "dead-letter"
        log.warning(
            "rejecting the message for the broker to dead-letter: its %s copy would not fit: "
            "%s (%s: %s)",
            kind,
            why,
            decision.reason,
            truncated(decision.error, 256),
        )
        await self._acks.reject(message, requeue=False)
        self._metrics.settled(Settlement.DEAD_LETTER.value)
        log.info("settled: %s (by the broker)", Settlement.DEAD_LETTER.value)
