"""The gateway's Prometheus metrics: what they are, the middleware that counts requests, and
the /metrics view.

Each app gets its own registry (not prometheus_client's global one), so a process, or a test
session, can build many apps without "Duplicated timeseries" errors.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from gateway.routing import is_unmatched

# Requests no route matched (404, 405) share one label: raw paths would let any client
# create a new time series per URL it makes up.
UNMATCHED = "unmatched"

# Publishes are bounded by SYNCGATE_PUBLISH_DEADLINE (5 s by default); buckets up to 10 s
# keep a longer deadline visible too.
_PUBLISH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# A request's time in the gateway is bounded by the handling deadline (the publish deadline
# plus its margin: 6 s by default); 6 and 7 s show the default and a second past it.
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 6.0, 7.0, 10.0, 30.0)


class PublishOutcome(enum.Enum):
    """How a publish ended; the `outcome` label of syncgate_publish_total."""

    CONFIRMED = "confirmed"
    """The broker confirmed it: the client got 202."""
    RETURNED = "returned"
    """The broker returned it as unroutable."""
    NACKED = "nacked"
    """The broker refused it."""
    DEADLINE_MISSED = "deadline_missed"
    """No confirm within the deadline (broker down, blocked, or slow)."""
    FAILED = "failed"
    """The connection or channel failed under it."""


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "syncgate_http_requests",
            "HTTP requests answered, by route (its canonical path), method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "syncgate_http_request_duration_seconds",
            "Time from the start of a request's handling (its headers in) to its answer; the"
            " requests refused before aiohttp parses them are not in it.",
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.publish_duration = Histogram(
            "syncgate_publish_duration_seconds",
            "Time from the start of a publish to the broker's confirm or the failure.",
            buckets=_PUBLISH_BUCKETS,
            registry=self.registry,
        )
        self.publishes = Counter(
            "syncgate_publish",
            "Publishes to the broker, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        # Every outcome shows from the start, at 0, so a rate() over it never has a gap; the
        # children are looked up once here rather than on every publish.
        self._publishes_by_outcome = {
            outcome: self.publishes.labels(outcome=outcome.value) for outcome in PublishOutcome
        }
        self.ready = Gauge(
            "syncgate_gateway_ready",
            "1 when /readyz would answer 200 (broker link up, revocation stream replayed), else 0.",
            registry=self.registry,
        )

        self.connections_refused = Counter(
            "syncgate_connections_refused",
            "Connections closed at once (after a 503) because the process had"
            " SYNCGATE_MAX_CONNECTIONS open.",
            registry=self.registry,
        )
        self.request_timeouts = Counter(
            "syncgate_request_timeouts",
            "Requests refused with 408 because the client was too slow to send them: its"
            " headers (SYNCGATE_HEADER_TIMEOUT) or its body (SYNCGATE_BODY_TIMEOUT).",
            ["phase"],
            registry=self.registry,
        )
        self.requests_shed = Counter(
            "syncgate_requests_shed",
            "Requests answered 503 to shed load: over SYNCGATE_MAX_IN_FLIGHT (in_flight), or"
            " past the publish deadline plus its margin (deadline).",
            ["reason"],
            registry=self.registry,
        )
        self.timeouts_by_phase = {
            phase: self.request_timeouts.labels(phase=phase) for phase in ("headers", "body")
        }
        self.shed_by_reason = {
            reason: self.requests_shed.labels(reason=reason) for reason in ("in_flight", "deadline")
        }
        self.open_connections = Gauge(
            "syncgate_open_connections",
            "HTTP connections open now (refused ones aside).",
            registry=self.registry,
        )
        self.requests_in_flight = Gauge(
            "syncgate_requests_in_flight",
            "Requests being handled now (the probes and /metrics aside).",
            registry=self.registry,
        )

    def track_readiness(self, ready: Callable[[], bool]) -> None:
        """syncgate_gateway_ready calls `ready` at each scrape, so it is never stale."""
        self.ready.set_function(lambda: 1.0 if ready() else 0.0)

    def published(self, outcome: PublishOutcome, seconds: float) -> None:
        self._publishes_by_outcome[outcome].inc()
        self.publish_duration.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None or is_unmatched(request) else resource.canonical


def metrics_middleware(metrics: GatewayMetrics) -> Middleware:
    """Counts every answered request. Outermost, so it sees the final status, 500s included."""

    observe = metrics.request_duration.observe

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # Only redirects and the like get here: the error middleware renders the rest.
            metrics.http_requests.labels(route_label(request), request.method, exc.status).inc()
            raise
        finally:
            observe(time.perf_counter() - started)
        metrics.http_requests.labels(route_label(request), request.method, response.status).inc()
        return response

    return middleware


def metrics_view(metrics: GatewayMetrics) -> Handler:
    """GET /metrics in the Prometheus text format. Unauthenticated: restrict it at the proxy."""

    async def view(request: web.Request) -> web.Response:
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        return web.Response(body=metrics.exposition(), headers=headers)

    return view
