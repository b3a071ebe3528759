"""The app factory: the one place where the gateway is assembled."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp_session import session_middleware

from common.stores.runs import RunReader
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
from gateway.lifecycle import cleanup_ctx
from gateway.login_limits import LoginLimits
from gateway.metrics import GatewayMetrics, metrics_middleware, metrics_view
from gateway.middlewares import error_middleware, request_id_middleware
from gateway.openapi import setup_openapi
from gateway.page import setup_page
from gateway.publisher import EventPublisher
from gateway.revocation import RevocationList
from gateway.runs_view import routes as runs_routes
from gateway.sessions import session_storage
from gateway.settings import GatewaySettings
from gateway.users import UserStore
from gateway.views import routes


def create_app(
    settings: GatewaySettings,
    *,
    publisher: EventPublisher,
    revocations: RevocationList,
    runs: RunReader,
    metrics: GatewayMetrics,
    clock: Clock = time.time,
) -> web.Application:
    """Build the gateway around what it is given: `gateway/bootstrap.py` gives it the broker's
    publisher and revocation stream and the run store's reader; tests give fakes.

    The publisher, the revocations and the run reader are started with the app and closed
    at its shutdown.
    """
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[CLOCK] = clock
    # Both files are read now, so a missing or invalid one stops start-up with its reason.
    app[USERS] = UserStore(settings.users_file)
    app[APP_SETTINGS] = AppSettingsProvider(settings.app_settings_file)
    app[RUNS] = runs
    app.cleanup_ctx.append(cleanup_ctx(runs))
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
    app[PUBLISHER] = publisher
    app.cleanup_ctx.append(cleanup_ctx(publisher))
    app[REVOCATIONS] = revocations
    app.cleanup_ctx.append(cleanup_ctx(revocations))
    app[IDEMPOTENCY] = IdempotencyCache(
        window=settings.idempotency_window,
        max_keys=settings.idempotency_max_keys,
        max_attempt_bytes=settings.idempotency_max_attempt_bytes,
    )
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
