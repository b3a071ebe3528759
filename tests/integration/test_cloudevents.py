"""The stock CloudEvents SDK reads what the gateway publishes, and what the consumer
republishes, on the real broker; `dataschema` is a URL the gateway serves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import jsonschema
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import web
from aiohttp.test_utils import TestClient
from cloudevents.core.base import BaseCloudEvent

from consumers.bootstrap import build_deps
from consumers.handlers import HandlerDeps
from consumers.runner import Runner
from gateway.bootstrap import build_app
from gateway.settings import GatewaySettings
from tests.conftest import AiohttpClient, BrokerNames, login
from tests.support.cloudevents import read_through_amqp_binding, read_through_http_binding
from tests.support.gateway import wait_readiness

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]

BASE_URL = "https://sync.example.com/gw"
SOURCE = "https://sync.example.com/gw/"
SCHEMA_URL = f"{BASE_URL}/schemas/confluence.app.sync.v1.schema.json"


async def gateway(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
) -> Client:
    settings = make_settings(
        **names.gateway_overrides(), public_base_url=BASE_URL, cloudevents_source=SOURCE
    )
    client: Client = await aiohttp_client(build_app(settings))
    await wait_readiness(client, 200, within=10)
    await login(client)
    return client


async def assert_read_alike(message: AbstractIncomingMessage, client: Client) -> None:
    """Both of the SDK's bindings read the event, with every attribute ours; its data is the
    body, valid under the schema fetched from `dataschema`."""
    body = json.loads(message.body)
    events: list[BaseCloudEvent] = [
        read_through_amqp_binding(message),
        read_through_http_binding(message),
    ]
    for event in events:
        assert event.get_specversion() == "1.0"
        assert event.get_id() == body["id"] == message.message_id
        assert event.get_source() == SOURCE
        assert event.get_type() == body["name"] == "confluence/app.sync"
        assert event.get_subject() == body["user"]["id"] == "u-ada"
        assert event.get_time() == datetime.fromtimestamp(body["ts"] / 1000, UTC)
        assert event.get_datacontenttype() == "application/json"
        assert event.get_data() == body
        assert event.get_dataschema() == SCHEMA_URL

    response = await client.get(SCHEMA_URL.removeprefix(BASE_URL))
    assert response.status == 200
    jsonschema.Draft202012Validator(json.loads(await response.read())).validate(body)


async def test_the_sdk_reads_a_published_event(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    client = await gateway(aiohttp_client, make_settings, names)
    channel = await amqp.channel()
    exchange = await channel.get_exchange(names.exchange)
    queue = await channel.declare_queue(f"{names.prefix}.probe", exclusive=True)
    await queue.bind(exchange, routing_key="#")

    response = await client.post("/api/sync", json={"data": {"pages": [1, 2]}})
    assert response.status == 202

    message = await queue.get(timeout=5)
    await message.ack()
    assert message.headers["v"] == "1"  # the seed's own header stays
    await assert_read_alike(message, client)


async def test_the_sdk_reads_the_copy_the_consumer_dead_letters(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    # Two attempts: the first copy goes through a retry queue, the second to the DLQ.
    settings = names.consumer_settings(tmp_path, max_attempts=2)
    deps = build_deps(settings)

    async def failing(event: object, deps: HandlerDeps) -> None:
        raise RuntimeError("the handler always fails")

    stop = asyncio.Event()
    runner = Runner(settings, {"confluence/app.sync": failing}, deps)
    consuming = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(runner.consuming.wait(), 10)
        client = await gateway(aiohttp_client, make_settings, names)
        response = await client.post("/api/sync", json={"data": None})
        assert response.status == 202

        channel = await amqp.channel()
        dlq = await channel.declare_queue(settings.topology.dead_letter_queue, passive=True)
        message = None
        for _ in range(100):
            message = await dlq.get(fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.1)
        assert message is not None, "the event never reached the DLQ"
        await message.ack()
        assert message.headers["x-syncgate-attempt"] == 2
        await assert_read_alike(message, client)
    finally:
        stop.set()
        await asyncio.wait_for(consuming, 10)
        await deps.runs.close()
