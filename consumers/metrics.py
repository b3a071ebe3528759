"""The consumer's Prometheus metrics, their HTTP endpoint, and the sampled DLQ depth.

Each runner gets its own registry (not prometheus_client's global one), so a test can run
many runners in one process without "Duplicated timeseries" errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aio_pika
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from common.amqp import connect_with_retry
from consumers.handlers import Handler, HandlerDeps
from consumers.settings import ConsumerSettings

log = logging.getLogger(__name__)

# The values of consumers.runner.Settlement (that module imports this one, so they are
# listed here; a test keeps the two in step).
OUTCOMES = ("ack", "duplicate", "retry", "dead_letter", "hand_back")

# Handlers write a row to SQLite or call out to a service: milliseconds to tens of seconds.
_HANDLER_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ConsumerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "syncgate_consumer_messages",
            "Deliveries settled, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.handler_duration = Histogram(
            "syncgate_handler_duration_seconds",
            "Time spent in the event's handler, failed calls included.",
            ["event"],
            buckets=_HANDLER_BUCKETS,
            registry=self.registry,
        )
        self.dlq_messages = Gauge(
            "syncgate_dlq_messages",
            "Messages in the dead-letter queue when last sampled (absent until sampled).",
            # The label keeps the series absent until the first sample: an unlabelled gauge
            # would read 0 before anyone looked, which looks like an empty DLQ.
            ["queue"],
            registry=self.registry,
        )
        self.paused = Gauge(
            "syncgate_consumer_paused",
            "1 while consuming is paused because the run store is unavailable, else 0.",
            registry=self.registry,
        )
        self.follow_ups = Counter(
            "syncgate_consumer_follow_ups",
            "Follow-up events (confluence/app.sync.completed) published after a commit, by "
            "outcome: confirmed, or failed after every attempt (the message is acked anyway).",
            ["outcome"],
            registry=self.registry,
        )
        # Every outcome shows from the start, at 0, so a rate() over it never has a gap.
        for outcome in OUTCOMES:
            self.messages.labels(outcome=outcome)
        for outcome in ("confirmed", "failed"):
            self.follow_ups.labels(outcome=outcome)

    def settled(self, outcome: str) -> None:
        self.messages.labels(outcome=outcome).inc()

    def follow_up(self, outcome: str) -> None:
        self.follow_ups.labels(outcome=outcome).inc()

    def timed(self, handlers: Mapping[str, Handler]) -> dict[str, Handler]:
        """The same handlers, each timed under its event's name."""
        return {name: self._timed(name, handler) for name, handler in handlers.items()}

    def _timed(self, event_name: str, handler: Handler) -> Handler:
        histogram = self.handler_duration.labels(event=event_name)

        async def timed_handler(event: Any, deps: HandlerDeps) -> None:
            started = time.perf_counter()
            try:
                await handler(event, deps)
            finally:
                histogram.observe(time.perf_counter() - started)

        return timed_handler

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@contextlib.asynccontextmanager
async def serve_metrics(
    metrics: ConsumerMetrics, settings: ConsumerSettings
) -> AsyncIterator[None]:
    """While the block runs: GET /metrics on SYNCGATE_METRICS_HOST and _PORT, and the DLQ
    depth sampled every SYNCGATE_METRICS_DLQ_INTERVAL seconds. Port 0 turns both off."""
    if settings.metrics_port == 0:
        yield
        return
    sampler: asyncio.Task[None] | None = None
    if settings.metrics_dlq_interval > 0:
        sampler = asyncio.create_task(
            sample_dlq_depth(
                metrics,
                settings.amqp_url.get_secret_value(),
                settings.topology.dead_letter_queue,
                every=settings.metrics_dlq_interval,
            ),
            name="syncgate-dlq-sampler",
        )
    try:
        async with _http_endpoint(metrics, settings.metrics_host, settings.metrics_port):
            yield
    finally:
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler


@contextlib.asynccontextmanager
async def _http_endpoint(metrics: ConsumerMetrics, host: str, port: int) -> AsyncIterator[None]:

    async def view(request: web.Request) -> web.Response:
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        return web.Response(body=metrics.exposition(), headers=headers)

    app = web.Application()
    app.router.add_get("/metrics", view)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
            log.info("serving metrics on http://%s:%d/metrics", host, port)
        except OSError as exc:
            # A second consumer on this host, say. Losing the metrics must not stop the
            # consumer; the error line says how to fix it.
            log.error(
                "cannot serve metrics on %s:%d (%s); set SYNCGATE_METRICS_PORT to a free port, "
                "or 0 to turn them off. Consuming without them.",
                host,
                port,
                exc.strerror or exc,
            )
        yield
    finally:
        await runner.cleanup()


async def sample_dlq_depth(
    metrics: ConsumerMetrics, amqp_url: str, queue: str, *, every: float
) -> None:
    """Set syncgate_dlq_messages from a passive declare of the DLQ every `every` seconds.

    Runs until cancelled, on its own connection so it never disturbs the consume loop. A
    failed sample leaves the last value; the next one tries again.
    """
    connection = await connect_with_retry(amqp_url, "consumer-metrics")
    try:
        channel = await connection.channel()
        while True:
            try:
                if channel.is_closed:
                    # A passive declare of a missing queue closes the channel (404).
                    channel = await connection.channel()
                # robust=False: a robust channel answers a repeated passive declare from its
                # cache, with the first count it saw.
                declared = await channel.declare_queue(queue, passive=True, robust=False)
                if declared.declaration_result.message_count is not None:
                    metrics.dlq_messages.labels(queue=queue).set(
                        declared.declaration_result.message_count
                    )
            except aio_pika.exceptions.ChannelNotFoundEntity:
                # Usual for a moment at start-up: the runner declares the DLQ after this starts.
                log.info("no queue %s yet; its depth is not sampled", queue)
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                log.warning("could not sample the depth of %s: %r", queue, exc)
            await asyncio.sleep(every)
    finally:
        await connection.close()
