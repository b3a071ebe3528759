"""One grep of an event id follows a click from the HTTP request to the consumer's ack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from consumers.bootstrap import HANDLERS, build_deps
from consumers.runner import Runner
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import AiohttpClient, BrokerNames, login
from tests.log_capture import json_log_lines

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]


async def test_one_grep_of_the_event_id_finds_the_publish_and_the_ack(
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
    with json_log_lines() as lines:
        consuming = asyncio.create_task(runner.run(stop))
        try:
            await asyncio.wait_for(runner.consuming.wait(), 10)
            client: Client = await aiohttp_client(
                create_app(make_settings(**names.gateway_overrides()))
            )
            deadline = time.monotonic() + 10
            while (await client.get("/readyz")).status != 200:
                assert time.monotonic() < deadline, "the gateway never became ready"
                await asyncio.sleep(0.05)
            await login(client)
            response = await client.post(
                "/api/sync", json={"data": "data"}, headers={"X-Request-Id": "click-7"}
            )
            assert response.status == 202
            event_id = (await response.json())["id"]

            deadline = time.monotonic() + 10
            while not any(r["message"] == "settled: ack" for r in lines.grep(event_id)):
                assert time.monotonic() < deadline, "the consumer never logged its ack"
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(consuming, 10)
            deps.runs.close()

    trail = lines.grep(event_id)
    (published,) = [r for r in trail if r["message"] == "published"]
    (settled,) = [r for r in trail if r["message"] == "settled: ack"]
    assert published["logger"] == "gateway.publisher"
    assert settled["logger"] == "consumers.runner"
    assert published["event_id"] == settled["event_id"] == event_id
    # The request id is the message's correlation id, so both sides name the same click.
    assert published["request_id"] == "click-7"
    assert published["correlation_id"] == settled["correlation_id"] == "click-7"
    assert trail.index(published) < trail.index(settled)
    # Every line written meanwhile, by either side, was one JSON object.
    assert all({"time", "level", "logger", "message"} <= set(r) for r in lines.records())
