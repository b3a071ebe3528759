"""The app factory: the one place where the gateway is assembled."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp_session import session_middleware

from common.stores.backends import open_run_reader
from gateway.app_settings import AppSettingsProvider
from gateway.csrf import csrf_middleware
from gateway.idempotency import IdempotencyCache
from gateway.keys import (
    APP_SETTINGS,
    CLOCK,
    IDEMPOTENCY,
    LOGIN_LIMITS,
    METRICS,
    PUBLISHER,
    REVOCATIONS,
    RUNS,
    SETTINGS,
    USERS,
    Clock,
)
from gateway.login_limits import LoginLimits
from gateway.metrics import GatewayMetrics, metrics_middleware, metrics_view
from gateway.middlewares import error_middleware, request_id_middleware
from gateway.openapi import setup_openapi
from gateway.page import setup_page
from gateway.publisher import AmqpPublisher, EventPublisher
from gateway.revocation import LocalRevocations, RevocationList, StreamRevocations, stream_ctx
from gateway.runs_view import routes as runs_routes
from gateway.sessions import session_storage
from gateway.settings import GatewaySettings
from gateway.users import UserStore
from gateway.views import routes


def broker_ctx(
    publisher: AmqpPublisher,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Opens the broker link at start-up and closes it at shutdown."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        publisher.start()
        yield
        await publisher.close()

    return ctx


def create_app(
    settings: GatewaySettings,
    *,
    publisher: EventPublisher | None = None,
    clock: Clock = time.time,
    revocations: RevocationList | None = None,
) -> web.Application:
    """Build the gateway. Tests pass a fake `publisher`; otherwise it is the broker's.

    Logged-out sessions are shared through the broker too, unless the broker is faked: then
    they stay in this process (or come from `revocations`).
    """
    broker_faked = publisher is not None
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    # Its own registry per app, not prometheus_client's global one: see gateway/metrics.py.
    app[METRICS] = metrics = GatewayMetrics()
    app[CLOCK] = clock
    # Both files are read now, so a missing or invalid one stops start-up with its reason.
    app[USERS] = UserStore(settings.users_file)
    app[APP_SETTINGS] = AppSettingsProvider(settings.app_settings_file)
    app[RUNS] = open_run_reader(settings.run_store)
    # Outermost first; see gateway/middlewares.py for why this order.
    # csrf_middleware reads the session and raises domain errors, so it comes after both.
    app.middlewares.extend(
        [
            # Counts every request by its final status, the 500s request_id_middleware makes too.
            metrics_middleware(metrics),
            request_id_middleware,
            session_middleware(session_storage(app)),
            error_middleware,
            csrf_middleware,
        ]
    )
    if publisher is None:
        amqp = AmqpPublisher(
            settings.amqp_url.get_secret_value(),
            settings.topology,
            deadline=settings.publish_deadline,
            retry_after=settings.retry_after,
            metrics=metrics,
        )
        app.cleanup_ctx.append(broker_ctx(amqp))
        publisher = amqp
    app[PUBLISHER] = publisher
    app[IDEMPOTENCY] = IdempotencyCache(
        window=settings.idempotency_window,
        max_keys=settings.idempotency_max_keys,
        max_attempt_bytes=settings.idempotency_max_attempt_bytes,
    )
    if revocations is None and broker_faked:
        revocations = LocalRevocations(clock)
    elif revocations is None:
        stream = StreamRevocations(
            settings.amqp_url.get_secret_value(),
            settings.revocation_stream,
            max_age=settings.session_absolute_timeout,
            clock=clock,
            deadline=settings.publish_deadline,
            retry_after=settings.retry_after,
        )
        app.cleanup_ctx.append(stream_ctx(stream))
        revocations = stream
    app[REVOCATIONS] = revocations
    app[LOGIN_LIMITS] = LoginLimits(
        per_account=settings.login_max_failures,
        per_address=settings.login_max_failures_per_address,
        base=settings.login_lockout_base,
        cap=settings.login_lockout_max,
        clock=clock,
    )
    app.add_routes(routes)
    app.add_routes(runs_routes)
    app.router.add_get("/metrics", metrics_view(metrics))
    setup_page(app)
    # Last: it documents the routes above (each needs its entry in gateway/openapi.py).
    setup_openapi(app)
    return app
