"""Client ids of POST /api/events on two gateways that share Redis: a retry at the *other*
gateway is not published again, and a retry after a failed publish sends the attempted event.
The gateways are the real app factory with fake publishers and the real Redis stores, under a
prefix of the test's own."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.errors import BrokerUnavailable
from gateway.settings import GatewaySettings
from tests.conftest import AiohttpClient, login
from tests.support.app import gateway_app
from tests.support.fakes import FakePublisher, RecordingPublisher
from tests.support.redis import REDIS_URL, gateway_stores_on_redis

pytestmark = [pytest.mark.integration, pytest.mark.redis]

Client = TestClient[web.Request, web.Application]

SYNC = "confluence/app.sync"


async def gateway(
    aiohttp_client: AiohttpClient, settings: GatewaySettings, prefix: str, publisher: FakePublisher
) -> Client:
    idempotency, login_failures = gateway_stores_on_redis(settings, REDIS_URL, prefix, time.time)
    app = gateway_app(
        settings, publisher=publisher, idempotency=idempotency, login_failures=login_failures
    )
    client: Client = await aiohttp_client(app)
    await login(client)
    return client


async def post(client: Client, body: Any) -> tuple[int, Any, str | None]:
    response = await client.post("/api/events", json=body)
    return response.status, await response.json(), response.headers.get("Idempotent-Replayed")


async def test_a_client_id_retried_at_the_other_gateway_is_not_published_again(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    redis_prefix: str,
) -> None:
    settings = make_settings()
    a_publisher, b_publisher = FakePublisher(), FakePublisher()
    a = await gateway(aiohttp_client, settings, redis_prefix, a_publisher)
    b = await gateway(aiohttp_client, settings, redis_prefix, b_publisher)
    event = {"name": SYNC, "data": {"page": 7}, "id": "click-42"}
    status, first, replayed = await post(a, event)
    assert (status, replayed) == (202, None)
    status, again, replayed = await post(b, event)
    assert (status, again, replayed) == (202, first, "true")
    # In a batch at the other gateway too, beside a new event.
    status, body, _ = await post(b, [event, {"name": SYNC, "data": 1, "id": "click-43"}])
    assert status == 202
    old, new = body["results"]
    assert old == {"index": 0, "status": 202, "id": first["id"], "replayed": True}
    assert "replayed" not in new
    assert [str(e.id) for e, _ in a_publisher.published] == [first["id"]]
    assert [str(e.id) for e, _ in b_publisher.published] == [new["id"]]
    # The same id with another event, at either gateway: refused, nothing published.
    status, body, _ = await post(a, {**event, "data": {"page": 8}})
    assert (status, body["error"]["code"]) == (422, "idempotency_key_reused")
    assert len(a_publisher.published) == 1


async def test_after_a_failed_publish_the_other_gateway_sends_the_attempted_event(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    redis_prefix: str,
) -> None:
    settings = make_settings()
    a_publisher, b_publisher = RecordingPublisher(), RecordingPublisher()
    a_publisher.fail_with = BrokerUnavailable("no confirm", retry_after=5)
    a = await gateway(aiohttp_client, settings, redis_prefix, a_publisher)
    b = await gateway(aiohttp_client, settings, redis_prefix, b_publisher)
    event = {"name": SYNC, "data": {"page": 7}, "id": "k"}
    status, body, _ = await post(a, [event])
    assert status == 207
    assert body["results"][0]["status"] == 503
    [attempt] = a_publisher.attempted
    status, body, replayed = await post(b, event)
    assert (status, body["id"], replayed) == (202, str(attempt.id), None)
    [(published, _)] = b_publisher.published
    assert published.model_dump() == attempt.model_dump()  # the very event: id, ts, data
