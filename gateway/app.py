"""The app factory: the one place where the gateway is assembled."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp_session import session_middleware

from common.stores.idempotency import IdempotencyStore
from common.stores.login_failures import LoginFailureStore
from common.stores.runs import RunReader
from gateway.app_settings import AppSettingsProvider
from gateway.asyncapi import setup_asyncapi
from gateway.audit import AuditTrail
from gateway.client_address import client_address_middleware
from gateway.connections import connection_middleware
from gateway.csrf import csrf_middleware
from gateway.dead_letters import OperatorQueues
from gateway.deadlines import InFlight
from gateway.events_view import routes as events_routes
from gateway.idempotency import IdempotencyCache
from gateway.keys import (
    APP_SETTINGS,
    AUDIT,
    CLOCK,
    IDEMPOTENCY,
    IN_FLIGHT,
    LOGIN_LIMITS,
    METRICS,
    OPERATOR_QUEUES,
    PUBLISHER,
    REVOCATIONS,
    RUNS,
    SETTINGS,
    USERS,
    Clock,
)
from gateway.lifecycle import cleanup_ctx
from gateway.login_limits import LoginLimits
from gateway.metrics import GatewayMetrics, metrics_middleware, metrics_view
from gateway.middlewares import error_middleware, request_id_middleware, tracing_middleware
from gateway.openapi import setup_openapi
from gateway.operator_views import routes as operator_routes
from gateway.page import setup_page
from gateway.publisher import EventPublisher
from gateway.revocation import RevocationList
from gateway.routing import add_get, seal
from gateway.runs_view import routes as runs_routes
from gateway.schema_files import setup_schemas
from gateway.server_log import install_client_fault_filter
from gateway.sessions import session_storage
from gateway.settings import GatewaySettings
from gateway.shedding import LoadShedder
from gateway.users import UserStore
from gateway.views import routes

log = logging.getLogger(__name__)


def create_app(
    settings: GatewaySettings,
    *,
    publisher: EventPublisher,
    revocations: RevocationList,
    runs: RunReader,
    metrics: GatewayMetrics,
    idempotency: IdempotencyStore,
    login_failures: LoginFailureStore,
    operator_queues: OperatorQueues,
    clock: Clock = time.time,
) -> web.Application:
    """Build the gateway around what it is given: `gateway/bootstrap.py` gives it the broker's
    publisher and revocation stream, the run store's reader, and the stores of Idempotency-Keys
    and login failures (in memory, or in Redis); tests give fakes or the memory stores.

    The publisher, the revocations, the run reader and the two stores are started with the
    app and closed at its shutdown. `operator_queues` are the DLQ and the unrouted queue the
    operators' DLQ page reads (gateway/dead_letters.py).
    """
    install_client_fault_filter()
    if settings.cookie_secure and not settings.origins:
        # Behind a proxy the Host header is the proxy's to set, and the own origin comes
        # from it: production names its public origins instead (README "Security").
        log.warning(
            "SYNCGATE_ALLOWED_ORIGINS is empty: state-changing requests are accepted only from"
            " the origin in each request's Host header; behind a proxy, set it to the site's"
            " public origin(s)"
        )
    # gateway/body.py inflates compressed bodies itself, strictly (see `inflate` there).
    app = web.Application(
        client_max_size=settings.max_body_bytes, handler_args={"auto_decompress": False}
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[CLOCK] = clock
    # Read by the connections too (gateway/connections.py), to refuse before any parsing.
    app[IN_FLIGHT] = in_flight = InFlight(settings.max_in_flight)
    # Both files are read now, so a missing or invalid one stops start-up with its reason.
    app[USERS] = UserStore(settings.users_file)
    app[APP_SETTINGS] = AppSettingsProvider(settings.app_settings_file)
    app[RUNS] = runs
    app.cleanup_ctx.append(cleanup_ctx(runs))
    # Outermost first; see gateway/middlewares.py for why this order.
    # csrf_middleware reads the session and raises domain errors, so it comes after both.
    # Tells the connection its request's headers are in (the header deadline stops).
    app.middlewares.append(connection_middleware)
    if settings.proxies:
        # Then every middleware and view after it sees the client's address as
        # request.remote (from a trusted proxy's forwarding header). No proxy, no middleware.
        app.middlewares.append(client_address_middleware(settings.proxies))
    app.middlewares.extend(
        [
            # Counts every request by its final status, the 500s request_id_middleware makes too.
            metrics_middleware(metrics),
            # Sheds load before any session or body work: over SYNCGATE_MAX_IN_FLIGHT, or past
            # the handling deadline, 503 with Retry-After.
            LoadShedder(settings, metrics, in_flight).middleware(),
            # The server span, around all the rest: the request's log line is in it.
            tracing_middleware,
            request_id_middleware,
            session_middleware(session_storage(app)),
            error_middleware,
            csrf_middleware,
        ]
    )
    app[PUBLISHER] = publisher
    app.cleanup_ctx.append(cleanup_ctx(publisher))
    app[REVOCATIONS] = revocations
    app.cleanup_ctx.append(cleanup_ctx(revocations))
    # The same two flags as /readyz (gateway/views.py), read at each scrape of /metrics.
    metrics.track_readiness(lambda: publisher.ready and revocations.ready)
    app[IDEMPOTENCY] = IdempotencyCache(
        idempotency, wait_limit=settings.publish_deadline, retry_after=settings.retry_after
    )
    app.cleanup_ctx.append(cleanup_ctx(idempotency))
    app[LOGIN_LIMITS] = LoginLimits(login_failures, retry_after=settings.retry_after)
    app.cleanup_ctx.append(cleanup_ctx(login_failures))
    app.add_routes(routes)
    app.add_routes(events_routes)
    app.add_routes(runs_routes)
    app[OPERATOR_QUEUES] = operator_queues
    app.cleanup_ctx.append(cleanup_ctx(operator_queues))
    app[AUDIT] = AuditTrail()
    app.add_routes(operator_routes)
    add_get(app, "/metrics", metrics_view(metrics))
    setup_page(app)
    setup_schemas(app)
    setup_asyncapi(app)
    # It documents the routes above (each needs its entry in gateway/openapi.py).
    setup_openapi(app)
    # Last: the route for every request no route above matches.
    seal(app)
    return app
