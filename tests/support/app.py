"""The gateway under test: the real app factory, given fakes where a test wants them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from common.stores.backends import open_run_reader
from common.stores.idempotency import IdempotencyStore
from common.stores.idempotency_memory import MemoryIdempotencyStore
from common.stores.login_failures import LoginFailureStore
from common.stores.login_failures_memory import MemoryLoginFailures
from gateway.app import create_app
from gateway.dead_letters import OperatorQueues
from gateway.keys import Clock
from gateway.metrics import GatewayMetrics
from gateway.publisher import EventPublisher
from gateway.revocation import RevocationList
from gateway.settings import GatewaySettings
from tests.support.fakes import FakeOperatorQueues, FakePublisher, LocalRevocations
from tests.support.gateway import Client


def gateway_app(
    settings: GatewaySettings,
    *,
    publisher: EventPublisher | None = None,
    revocations: RevocationList | None = None,
    metrics: GatewayMetrics | None = None,
    idempotency: IdempotencyStore | None = None,
    login_failures: LoginFailureStore | None = None,
    operator_queues: OperatorQueues | None = None,
    clock: Clock = time.time,
) -> web.Application:
    """`create_app` with a FakePublisher and in-process revocations unless given others, the
    real run store reader of `settings.run_store`, and the memory stores (the production
    default) unless given others: the login failures count on `clock`, as sessions do."""
    return create_app(
        settings,
        publisher=publisher if publisher is not None else FakePublisher(),
        revocations=revocations if revocations is not None else LocalRevocations(clock),
        runs=open_run_reader(settings.run_store),
        metrics=metrics if metrics is not None else GatewayMetrics(),
        idempotency=idempotency if idempotency is not None else memory_idempotency(settings),
        login_failures=(
            login_failures if login_failures is not None else memory_login_failures(settings, clock)
        ),
        operator_queues=operator_queues if operator_queues is not None else FakeOperatorQueues(),
        clock=clock,
    )


def memory_idempotency(settings: GatewaySettings) -> MemoryIdempotencyStore:
    """The store `gateway/bootstrap.py` builds when no Redis is set."""
    return MemoryIdempotencyStore(
        window=settings.idempotency_window,
        max_keys=settings.idempotency_max_keys,
        max_attempt_bytes=settings.idempotency_max_attempt_bytes,
    )


def memory_login_failures(settings: GatewaySettings, clock: Clock) -> MemoryLoginFailures:
    """The store `gateway/bootstrap.py` builds when no Redis is set, on `clock`."""
    return MemoryLoginFailures(
        accounts=settings.account_lockout, addresses=settings.address_lockout, clock=clock
    )


async def gateway_client(
    aiohttp_client: Callable[..., Awaitable[Client]], settings: GatewaySettings, **app: Any
) -> Client:
    """A test client of `gateway_app(settings, **app)`."""
    return await aiohttp_client(gateway_app(settings, **app))
