"""Wiring, in one place: the gateway's real publisher, revocation stream and run store reader,
and its stores of Idempotency-Keys and login failures (in memory, or in Redis when
SYNCGATE_REDIS_URL is set), given to the app factory (tests give it fakes through the same
parameters)."""

from __future__ import annotations

import time

from aiohttp import web

from common.stores.backends import (
    open_idempotency_store,
    open_login_failure_store,
    open_run_reader,
)
from gateway.app import create_app
from gateway.dead_letters import BrokerQueues
from gateway.metrics import GatewayMetrics
from gateway.publisher import AmqpPublisher
from gateway.revocation import StreamRevocations
from gateway.settings import GatewaySettings


def build_app(settings: GatewaySettings) -> web.Application:
    """The production gateway: it publishes to the broker and shares logouts through it."""
    # Its own registry per app, not prometheus_client's global one: see gateway/metrics.py.
    metrics = GatewayMetrics()
    return create_app(
        settings,
        publisher=AmqpPublisher.from_settings(settings, metrics),
        revocations=StreamRevocations.from_settings(settings, time.time),
        runs=open_run_reader(settings.run_store),
        metrics=metrics,
        idempotency=open_idempotency_store(
            settings.redis,
            window=settings.idempotency_window,
            max_keys=settings.idempotency_max_keys,
            max_attempt_bytes=settings.idempotency_max_attempt_bytes,
            publish_deadline=settings.publish_deadline,
        ),
        login_failures=open_login_failure_store(
            settings.redis,
            accounts=settings.account_lockout,
            addresses=settings.address_lockout,
        ),
        operator_queues=BrokerQueues(settings),
    )
