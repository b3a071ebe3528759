"""The app factory: the one place where the gateway is assembled."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp_session import session_middleware

from gateway.app_settings import AppSettingsProvider
from gateway.keys import APP_SETTINGS, CLOCK, PUBLISHER, SETTINGS, USERS, Clock
from gateway.middlewares import error_middleware, request_id_middleware
from gateway.publisher import AmqpPublisher, EventPublisher
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
) -> web.Application:
    """Build the gateway. Tests pass a fake `publisher`; otherwise it is the broker's."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    # Both files are read now, so a missing or invalid one stops start-up with its reason.
    app[USERS] = UserStore(settings.users_file)
    app[APP_SETTINGS] = AppSettingsProvider(settings.app_settings_file)
    # Outermost first; see gateway/middlewares.py for why this order.
    app.middlewares.extend(
        [request_id_middleware, session_middleware(session_storage(app)), error_middleware]
    )
    if publisher is None:
        amqp = AmqpPublisher(
            settings.amqp_url.get_secret_value(),
            settings.topology,
            deadline=settings.publish_deadline,
            retry_after=settings.retry_after,
        )
        app.cleanup_ctx.append(broker_ctx(amqp))
        publisher = amqp
    app[PUBLISHER] = publisher
    app.add_routes(routes)
    return app
