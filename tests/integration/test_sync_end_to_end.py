"""The whole path on the real broker: login, POST, a confirmed publish, a consumer's ack."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika
import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from consumers.bootstrap import HANDLERS, build_deps
from consumers.runner import Runner
from gateway.bootstrap import build_app
from gateway.settings import GatewaySettings
from schemas.export import SCHEMA_DIR
from tests.conftest import AiohttpClient, BrokerNames, login
from tests.support.consumer import stored_run
from tests.support.gateway import wait_readiness

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]


async def test_a_sync_is_published_once_with_the_right_properties(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    client: Client = await aiohttp_client(build_app(make_settings(**names.gateway_overrides())))
    await wait_readiness(client, 200, within=10)
    channel = await amqp.channel()
    exchange = await channel.get_exchange(names.exchange)
    queue = await channel.declare_queue(f"{names.prefix}.probe", exclusive=True)
    await queue.bind(exchange, routing_key="#")

    await login(client)
    response = await client.post("/api/sync", json={"data": "data"})
    assert response.status == 202
    body = await response.json()
    assert body["success"] == "true"

    message = await queue.get(timeout=5)
    await message.ack()
    assert await queue.get(fail=False) is None, "exactly one message"
    schema = json.loads((SCHEMA_DIR / "confluence.app.sync.v1.schema.json").read_text())
    payload = json.loads(message.body)
    jsonschema.Draft202012Validator(schema).validate(payload)
    assert payload["id"] == body["id"] == message.message_id
    assert payload["data"] == "data"
    assert payload["user"]["email"] == "ada@example.com"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.routing_key == "confluence.app.sync"
    assert message.content_type == "application/json"
    assert message.type == "confluence/app.sync"
    assert message.correlation_id == response.headers["X-Request-Id"]
    assert message.timestamp is not None


async def test_a_real_consumer_handles_and_acks_the_event(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    consumer_settings = names.consumer_settings(tmp_path)
    deps = build_deps(consumer_settings)
    stop = asyncio.Event()
    runner = Runner(consumer_settings, HANDLERS, deps)
    consuming = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(runner.consuming.wait(), 10)
        client: Client = await aiohttp_client(build_app(make_settings(**names.gateway_overrides())))
        await wait_readiness(client, 200, within=10)
        await login(client)
        response = await client.post("/api/sync", json={"data": {"pages": [1, 2]}})
        assert response.status == 202
        event_id = (await response.json())["id"]

        deadline = time.monotonic() + 10
        while (run := stored_run(consumer_settings.run_store, event_id)) is None:
            assert time.monotonic() < deadline, "the consumer never recorded the run"
            await asyncio.sleep(0.05)
        assert run.user_email == "ada@example.com"
        assert json.loads(run.data) == {"pages": [1, 2]}
        assert json.loads(run.app_settings)["spaceKeys"] == ["ENG"]
        assert run.handled_at >= run.received_at
    finally:
        stop.set()
        await asyncio.wait_for(consuming, 10)
        await deps.runs.close()

    # With the consumer gone, anything it had not acked would be back in the queue.
    channel = await amqp.channel()
    queue = await channel.declare_queue(names.queue, passive=True)
    assert queue.declaration_result.message_count == 0
    assert queue.declaration_result.consumer_count == 0


async def test_an_unreachable_broker_is_503_with_retry_after(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
) -> None:
    settings = make_settings(
        amqp_url="amqp://guest:guest@127.0.0.1:1/", publish_deadline=0.5, retry_after=3
    )
    client: Client = await aiohttp_client(build_app(settings))
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 503
    await login(client)
    started = time.monotonic()
    response = await client.post("/api/sync", json={"data": "data"})
    assert response.status == 503
    assert response.headers["Retry-After"] == "3"
    assert (await response.json())["error"]["code"] == "broker_unavailable"
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("offered", "echoed"), [("client-req-42", True), ("not sane: spaces", False)]
)
async def test_the_request_id_is_the_messages_correlation_id(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    offered: str,
    echoed: bool,
) -> None:
    client: Client = await aiohttp_client(build_app(make_settings(**names.gateway_overrides())))
    await wait_readiness(client, 200, within=10)
    channel = await amqp.channel()
    queue = await channel.declare_queue(f"{names.prefix}.probe", exclusive=True)
    await queue.bind(await channel.get_exchange(names.exchange), routing_key="#")
    await login(client)

    response = await client.post("/api/sync", json={}, headers={"X-Request-Id": offered})
    assert response.status == 202
    request_id = response.headers["X-Request-Id"]
    assert (request_id == offered) is echoed
    message = await queue.get(timeout=5)
    await message.ack()
    assert message.correlation_id == request_id
