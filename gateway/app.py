"""The app factory: the one place where the gateway is assembled."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp_session import session_middleware

from common.stores.idempotency import IdempotencyStore
from common.stores.login_failures import LoginFailureStore
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
    idempotency: IdempotencyStore,
    login_failures: LoginFailureStore,
    clock: Clock = time.time,
) -> web.Application:
    """Build the gateway around what it is given: `gateway/bootstrap.py` gives it the broker's
    publisher and revocation stream, the run store's reader, and the stores of Idempotency-Keys
    and login failures (in memory, or in Redis); tests give fakes or the memory stores.

    The publisher, the revocations and the two stores are started with the app and closed at
    its shutdown.
    """
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[CLOCK] = clock
    # Both files are read now, so a missing or invalid one stops start-up with its reason.
    app[USERS] = UserStore(settings.users_file)
    app[APP_SETTINGS] = AppSettingsProvider(settings.app_settings_file)
    app[RUNS] = runs
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
        idempotency, wait_limit=settings.publish_deadline, retry_after=settings.retry_after
    )
    app.cleanup_ctx.append(cleanup_ctx(idempotency))
    app[LOGIN_LIMITS] = LoginLimits(login_failures, retry_after=settings.retry_after)
    app.cleanup_ctx.append(cleanup_ctx(login_failures))
    app.add_routes(routes)
    app.add_routes(runs_routes)
    app.router.add_get("/metrics", metrics_view(metrics))
    setup_page(app)
    # Last: it documents the routes above (each needs its entry in gateway/openapi.py).
    setup_openapi(app)
    return app
