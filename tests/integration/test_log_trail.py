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
from gateway.bootstrap import build_app
from gateway.settings import GatewaySettings
from tests.conftest import AiohttpClient, BrokerNames, login
from tests.support.log_capture import json_log_lines

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]


async def test_one_grep_of_the_event_id_finds_the_request_and_the_ack(
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
                build_app(make_settings(**names.gateway_overrides()))
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
            # The next request on the same keep-alive connection names no event.
            after = await client.get("/healthz", headers={"X-Request-Id": "after-7"})
            assert after.status == 200

            deadline = time.monotonic() + 10
            while not any(r["message"] == "settled: ack" for r in lines.grep(event_id)):
                assert time.monotonic() < deadline, "the consumer never logged its ack"
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(consuming, 10)
            await deps.runs.close()

    trail = lines.grep(event_id)
    (answered,) = [r for r in trail if r["message"] == "POST /api/sync 202"]
    (settled,) = [r for r in trail if r["message"] == "settled: ack"]
    assert answered["logger"] == "syncgate.gateway.http"
    assert settled["logger"] == "consumers.runner"
    assert answered["event_id"] == settled["event_id"] == event_id
    # The request id is the message's correlation id, so both sides name the same click.
    assert answered["request_id"] == "click-7"
    assert answered["correlation_id"] == settled["correlation_id"] == "click-7"
    (next_line,) = [r for r in lines.records() if r.get("request_id") == "after-7"]
    assert "event_id" not in next_line
    assert "correlation_id" not in next_line
    # Every line written meanwhile, by either side, was one JSON object.
    assert all({"time", "level", "logger", "message"} <= set(r) for r in lines.records())
