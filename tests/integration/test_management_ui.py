"""What an operator sees in the management UI: named connections and the documented queues."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from consumers.bootstrap import HANDLERS, build_deps
from consumers.runner import Runner
from gateway.bootstrap import build_app
from gateway.settings import GatewaySettings
from tests.conftest import AiohttpClient, BrokerNames, management_get
from tests.support.gateway import wait_readiness

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]


async def connection_names() -> dict[str, str]:
    """The broker's name for each connection ("ip:port -> ip:port") → the name the client gave."""
    connections = await management_get("connections?columns=name,client_properties")
    return {
        c["name"]: c.get("client_properties", {}).get("connection_name", "") for c in connections
    }


async def eventually(probe: Callable[[], Any], within: float = 15.0) -> Any:
    """The management API learns of new connections and consumers a moment after the broker."""
    deadline = time.monotonic() + within
    while not (found := await probe()):
        assert time.monotonic() < deadline, "the management API never showed it"
        await asyncio.sleep(0.2)
    return found


async def test_the_consumers_connection_is_named_for_its_role_and_host(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = names.consumer_settings(tmp_path)
    deps = build_deps(settings)
    stop = asyncio.Event()
    runner = Runner(settings, HANDLERS, deps)
    consuming = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(runner.consuming.wait(), 10)

        async def our_consumer() -> list[Any]:
            queue = await management_get(f"queues/%2F/{quote(names.queue, safe='')}")
            details: list[Any] = queue.get("consumer_details", [])
            # Until the channel's own statistics arrive, its details are an empty list.
            return [d for d in details if isinstance(d.get("channel_details"), dict)]

        # The queue's consumer identifies exactly this runner's connection, even with other
        # syncgate consumers connected to the same broker.
        (consumer,) = await eventually(our_consumer)
        broker_name = consumer["channel_details"]["connection_name"]
        assert (await connection_names())[broker_name] == (
            f"syncgate-consumer@{socket.gethostname()}"
        )
    finally:
        stop.set()
        await asyncio.wait_for(consuming, 10)
        await deps.runs.close()


async def test_the_gateways_connection_is_named_for_its_role_and_host(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    expected = f"syncgate-gateway@{socket.gethostname()}"
    before = set(await connection_names())
    client: Client = await aiohttp_client(build_app(make_settings(**names.gateway_overrides())))
    await wait_readiness(client, 200, within=10)

    async def new_gateway_connections() -> set[str]:
        return {
            broker_name
            for broker_name, given in (await connection_names()).items()
            if broker_name not in before and given == expected
        }

    opened = await eventually(new_gateway_connections)
    await client.close()

    # Teammates' gateways may connect meanwhile; ours is the one that goes when ours closes.
    async def one_of_them_closed() -> bool:
        return bool(opened - set(await connection_names()))

    await eventually(one_of_them_closed)


async def test_the_queues_have_the_arguments_the_readme_documents(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = names.consumer_settings(tmp_path)
    deps = build_deps(settings)
    stop = asyncio.Event()
    runner = Runner(settings, HANDLERS, deps)
    consuming = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(runner.consuming.wait(), 10)
        work = await management_get(f"queues/%2F/{quote(names.queue, safe='')}")
        dlq = await management_get(f"queues/%2F/{quote(names.queue + '.dlq', safe='')}")
        retry = await management_get(
            f"queues/%2F/{quote(settings.topology.retry_queue(1), safe='')}"
        )
        unrouted = await management_get(f"queues/%2F/{quote(names.unrouted, safe='')}")
    finally:
        stop.set()
        await asyncio.wait_for(consuming, 10)
        await deps.runs.close()

    assert work["type"] == dlq["type"] == retry["type"] == unrouted["type"] == "quorum"
    assert work["durable"] is True
    assert work["arguments"]["x-queue-type"] == "quorum"
    assert work["arguments"]["x-dead-letter-exchange"] == names.dlx
    assert work["arguments"]["x-dead-letter-routing-key"] == names.queue
    assert work["arguments"]["x-delivery-limit"] == 20  # SYNCGATE_DELIVERY_LIMIT's default
    assert work["arguments"]["x-dead-letter-strategy"] == "at-least-once"
    assert work["arguments"]["x-overflow"] == "reject-publish"
    # The first retry waits the base delay, then goes back to the work queue by name.
    assert retry["arguments"]["x-message-ttl"] == settings.topology.retry_delay_ms(1)
    assert retry["arguments"]["x-dead-letter-exchange"] == ""
    assert retry["arguments"]["x-dead-letter-routing-key"] == names.queue
