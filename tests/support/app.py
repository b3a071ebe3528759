"""The gateway under test: the real app factory, given fakes where a test wants them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from common.stores.backends import open_run_reader
from gateway.app import create_app
from gateway.keys import Clock
from gateway.metrics import GatewayMetrics
from gateway.publisher import EventPublisher
from gateway.revocation import RevocationList
from gateway.settings import GatewaySettings
from tests.support.fakes import FakePublisher, LocalRevocations
from tests.support.gateway import Client


def gateway_app(
    settings: GatewaySettings,
    *,
    publisher: EventPublisher | None = None,
    revocations: RevocationList | None = None,
    metrics: GatewayMetrics | None = None,
    clock: Clock = time.time,
) -> web.Application:
    """`create_app` with a FakePublisher and in-process revocations unless given others, and
    the real run store reader of `settings.run_store`."""
    return create_app(
        settings,
        publisher=publisher if publisher is not None else FakePublisher(),
        revocations=revocations if revocations is not None else LocalRevocations(clock),
        runs=open_run_reader(settings.run_store),
        metrics=metrics if metrics is not None else GatewayMetrics(),
        clock=clock,
    )


async def gateway_client(
    aiohttp_client: Callable[..., Awaitable[Client]], settings: GatewaySettings, **app: Any
) -> Client:
    """A test client of `gateway_app(settings, **app)`."""
    return await aiohttp_client(gateway_app(settings, **app))
