"""POST /api/events on the real broker: one event and a batch through the generic route, a
real consumer, and its confluence/app.sync.completed events, confirmed on the exchange."""

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

from common.topology import FORMER_BINDING, declare_consumer_topology
from consumers.bootstrap import HANDLERS, build_deps
from consumers.runner import Runner
from gateway.bootstrap import build_app
from gateway.settings import GatewaySettings
from schemas.export import SCHEMA_DIR
from schemas.sync_completed import ConfluenceAppSyncCompleted
from tests.conftest import AiohttpClient, BrokerNames, login
from tests.support.consumer import stored_run
from tests.support.gateway import wait_readiness

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]

SYNC = "confluence/app.sync"


def validator(file_name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / file_name).read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


async def get_n(
    queue: aio_pika.abc.AbstractQueue, n: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    messages: list[aio_pika.abc.AbstractIncomingMessage] = []
    deadline = time.monotonic() + 15
    while len(messages) < n:
        assert time.monotonic() < deadline, f"only {len(messages)} of {n} messages arrived"
        message = await queue.get(fail=False)
        if message is None:
            await asyncio.sleep(0.05)
            continue
        await message.ack()
        messages.append(message)
    return messages


async def test_events_and_a_batch_flow_to_the_consumer_and_back_as_completed_events(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    consumer_settings = names.consumer_settings(tmp_path)
    topology = consumer_settings.topology
    channel = await amqp.channel()
    # A broker from before the completed event: the work queue still bound to confluence.#.
    # The consumer removes that binding, or the completed events would be dead-lettered.
    await declare_consumer_topology(
        channel,
        type(topology)(
            events=topology.events,
            queue=topology.queue,
            binding=FORMER_BINDING,
            dead_letter_exchange=topology.dead_letter_exchange,
            max_attempts=topology.max_attempts,
            retry_base_delay=topology.retry_base_delay,
            delivery_limit=topology.delivery_limit,
        ),
    )
    exchange = await channel.get_exchange(names.exchange)
    completed_probe = await channel.declare_queue(f"{names.prefix}.completed-probe", exclusive=True)
    await completed_probe.bind(exchange, routing_key="confluence.app.sync.completed")
    sync_probe = await channel.declare_queue(f"{names.prefix}.sync-probe", exclusive=True)
    await sync_probe.bind(exchange, routing_key="confluence.app.sync")

    deps = build_deps(consumer_settings)
    stop = asyncio.Event()
    runner = Runner(consumer_settings, HANDLERS, deps)
    consuming = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(runner.consuming.wait(), 10)
        client: Client = await aiohttp_client(build_app(make_settings(**names.gateway_overrides())))
        await wait_readiness(client, 200, within=10)
        await login(client)

        one = await client.post("/api/events", json={"name": SYNC, "data": 1, "id": "one"})
        assert one.status == 202, await one.text()
        one_id = (await one.json())["id"]
        batch = await client.post(
            "/api/events",
            json=[
                {"name": SYNC, "data": 2},
                {"name": "confluence/app.sync.completed", "data": {}},
                {"name": SYNC, "v": "1", "data": {"n": 3}, "id": "three"},
            ],
        )
        assert batch.status == 207
        results = (await batch.json())["results"]
        assert [r["status"] for r in results] == [202, 403, 202]
        sync_ids = {one_id, results[0]["id"], results[2]["id"]}
        request_ids = {one.headers["X-Request-Id"], batch.headers["X-Request-Id"]}

        # What the route published is what /api/sync publishes, valid under the schema.
        published = await get_n(sync_probe, 3)
        assert {m.message_id for m in published} == sync_ids
        for message in published:
            validator("confluence.app.sync.v1.schema.json").validate(json.loads(message.body))
            assert message.type == SYNC
            assert (message.headers or {})["v"] == "1"
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT

        # The consumer recorded each, then announced each.
        announced = await get_n(completed_probe, 3)
        by_sync = {}
        for message in announced:
            payload = json.loads(message.body)
            validator("confluence.app.sync.completed.v1.schema.json").validate(payload)
            event = ConfluenceAppSyncCompleted.model_validate_json(message.body)
            by_sync[event.data.syncId] = (event, message)
        assert set(by_sync) == sync_ids
        for sync_id, (event, message) in by_sync.items():
            run = stored_run(consumer_settings.run_store, sync_id)
            assert run is not None
            assert event.data.receivedAt == run.received_at
            assert event.user.email == "ada@example.com"
            assert message.message_id == event.id
            assert message.routing_key == "confluence.app.sync.completed"
            assert message.type == "confluence/app.sync.completed"
            assert message.correlation_id in request_ids
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            assert (message.headers or {})["cloudEvents:type"] == "confluence/app.sync.completed"

        # A retried client id repeats its first answer and publishes nothing.
        again = await client.post("/api/events", json={"name": SYNC, "data": 1, "id": "one"})
        assert again.status == 202
        assert (await again.json())["id"] == one_id
        assert again.headers["Idempotent-Replayed"] == "true"
        assert await sync_probe.get(fail=False) is None
    finally:
        stop.set()
        await asyncio.wait_for(consuming, 10)
        await deps.runs.close()

    # Nothing was dead-lettered (the completed events never reached the work queue), nothing
    # sits unrouted, and the bounded completed queue kept the three for subscribers. (Read
    # by getting messages: a quorum queue's declare-ok count can lag behind its contents.)
    for name in (topology.queue, topology.dead_letter_queue, names.unrouted):
        queue = await channel.declare_queue(name, passive=True)
        assert await queue.get(fail=False) is None, name
    kept = await channel.declare_queue(topology.completed_queue, passive=True)
    assert {m.message_id for m in await get_n(kept, 3)} == {e.id for e, _ in by_sync.values()}
    assert await kept.get(fail=False) is None
