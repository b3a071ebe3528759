"""Prometheus metrics on the real broker: real traffic moves each counter by the right amount."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, unused_port

from consumers.metrics import OUTCOMES
from gateway.app_settings import load_app_settings
from gateway.bootstrap import build_app
from gateway.metrics import GatewayMetrics
from gateway.publisher import AmqpPublisher
from gateway.settings import GatewaySettings
from schemas.events import ConfluenceAppSync, EventUser
from tests.conftest import AiohttpClient, BrokerNames, login
from tests.support.app import gateway_app
from tests.support.consumer import publish_event, running_consumer
from tests.support.fakes import LocalRevocations
from tests.support.gateway import wait_readiness
from tests.support.metrics import Samples, scrape_consumer, scrape_gateway, settled, value

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
SYNC = "confluence/app.sync"


async def wait_for_consumer(port: int, done: Callable[[Samples], bool]) -> Samples:
    """Scrape the consumer until `done` holds for its samples; return them."""
    deadline = time.monotonic() + 15
    while not done(samples := await scrape_consumer(port)):
        assert time.monotonic() < deadline, f"the consumer's metrics never got there: {samples}"
        await asyncio.sleep(0.05)
    return samples


async def test_traffic_moves_the_gateway_and_consumer_metrics(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
    app_settings_file: Path,
) -> None:
    metrics_port = unused_port()
    consumer_settings = names.consumer_settings(
        tmp_path, metrics_port=metrics_port, metrics_dlq_interval=0.1
    )
    async with running_consumer(consumer_settings):
        client: Client = await aiohttp_client(
            build_app(
                make_settings(**names.gateway_overrides(), run_store=consumer_settings.run_store)
            )
        )
        await wait_readiness(client, 200, within=10)
        gateway_before = await scrape_gateway(client)
        consumer_before = await scrape_consumer(metrics_port)
        dlq = consumer_settings.topology.dead_letter_queue
        # Every outcome is exposed at 0 before anything happened.
        for outcome in ("confirmed", "returned", "nacked", "deadline_missed", "failed"):
            assert ("syncgate_publish_total", frozenset({("outcome", outcome)})) in gateway_before
        for outcome in OUTCOMES:
            key = ("syncgate_consumer_messages_total", frozenset({("outcome", outcome)}))
            assert consumer_before[key] == 0

        await login(client)
        event_ids = []
        for _ in range(3):
            response = await client.post("/api/sync", json={"data": "metrics"})
            assert response.status == 202
            event_ids.append((await response.json())["id"])
        for path in ("/no/such/page", "/api/nothing-here"):
            assert (await client.get(path)).status == 404

        # Straight to the exchange: one body that is not JSON (dead-lettered) and one valid
        # event, sent again once it was handled (a duplicate).
        channel = await amqp.channel()
        exchange = await channel.get_exchange(names.exchange)
        user = EventUser(id="u-ada", email="ada@example.com", name="Ada Lovelace")
        event = ConfluenceAppSync.new(user=user, app_settings=load_app_settings(app_settings_file))
        await exchange.publish(aio_pika.Message(b"not json"), "confluence.app.sync")
        await publish_event(channel, names.exchange, event, "metrics-test")
        await wait_for_consumer(metrics_port, lambda samples: settled(samples, "ack") >= 4)
        await publish_event(channel, names.exchange, event, "metrics-test")
        # The DLQ depth is sampled, so wait for a sample that saw the dead letter too.
        consumer_after = await wait_for_consumer(
            metrics_port,
            lambda samples: (
                sum(settled(samples, outcome) for outcome in OUTCOMES) >= 6
                and value(samples, "syncgate_dlq_messages", queue=dlq) >= 1
            ),
        )

        for event_id in event_ids:
            run = await (await client.get(f"/api/runs/{event_id}")).json()
            assert run["status"] == "handled"
        gateway_after = await scrape_gateway(client)

    def moved(after: Samples, before: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "syncgate_http_requests_total"
    assert (
        moved(
            gateway_after, gateway_before, requests, route="/api/sync", method="POST", status="202"
        )
        == 3
    )
    assert (
        moved(
            gateway_after,
            gateway_before,
            requests,
            route="/api/auth/login",
            method="POST",
            status="200",
        )
        == 1
    )
    # Both unknown paths share one series: raw paths never become labels.
    assert (
        moved(
            gateway_after, gateway_before, requests, route="unmatched", method="GET", status="404"
        )
        == 2
    )
    # The route's pattern, not the id in the path.
    assert (
        moved(
            gateway_after,
            gateway_before,
            requests,
            route="/api/runs/{event_id}",
            method="GET",
            status="200",
        )
        == 3
    )
    assert not any(
        dict(labels).get("route", "").startswith("/no/") for (_, labels) in gateway_after
    )
    publishes = "syncgate_publish_total"
    assert moved(gateway_after, gateway_before, publishes, outcome="confirmed") == 3
    for outcome in ("returned", "nacked", "deadline_missed", "failed"):
        assert moved(gateway_after, gateway_before, publishes, outcome=outcome) == 0
    assert moved(gateway_after, gateway_before, "syncgate_publish_duration_seconds_count") == 3
    assert value(gateway_after, "syncgate_publish_duration_seconds_sum") > 0

    assert settled(consumer_after, "ack") == 4
    assert settled(consumer_after, "duplicate") == 1
    assert settled(consumer_after, "dead_letter") == 1
    assert settled(consumer_after, "retry") == 0
    # The handler ran for the four acks only: not for the duplicate nor for the bad body.
    assert value(consumer_after, "syncgate_handler_duration_seconds_count", event=SYNC) == 4
    assert value(consumer_after, "syncgate_dlq_messages", queue=dlq) == 1


async def test_a_publish_past_its_deadline_is_counted_as_such(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    # Nothing listens on port 1: the publish waits for a link that never comes up.
    settings = make_settings(amqp_url="amqp://guest:guest@127.0.0.1:1/", publish_deadline=0.3)
    # Logouts kept in-process: the session check must not wait for the broker too.
    metrics = GatewayMetrics()
    app = gateway_app(
        settings,
        publisher=AmqpPublisher.from_settings(settings, metrics),
        metrics=metrics,
        revocations=LocalRevocations(time.time),
    )
    client: Client = await aiohttp_client(app)
    await login(client)
    assert (await client.post("/api/sync", json={})).status == 503

    samples = await scrape_gateway(client)
    assert value(samples, "syncgate_publish_total", outcome="deadline_missed") == 1
    assert value(samples, "syncgate_publish_total", outcome="confirmed") == 0
    assert value(samples, "syncgate_publish_duration_seconds_count") == 1
    assert (
        value(
            samples,
            "syncgate_http_requests_total",
            route="/api/sync",
            method="POST",
            status="503",
        )
        == 1
    )
