"""PostgreSQL down, on a server of the test's own (initdb + pg_ctl, password authentication;
the machine's server is never touched): the runs view answers 503 with Retry-After, the
consumer pauses rather than loops and recovers by itself, and the store's password never
reaches a log line, an error, a repr or the CLI's output."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aio_pika
import pytest
from pydantic import SecretStr

from common.stores.backends import describe, open_run_store
from common.stores.runs import RunStoreRefused
from common.topology import declare_consumer_topology
from gateway.settings import GatewaySettings
from tests.conftest import AiohttpClient, BrokerNames, login, management_get
from tests.support.app import gateway_client
from tests.support.consumer import depth, publish_events, start_consumer, syncgate
from tests.support.events import sync_event
from tests.support.log_capture import json_log_lines
from tests.support.metrics import scrape_consumer, settled, value
from tests.support.postgres import OwnPostgres, free_port, own_postgres, recorded_ids

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.fault]


@pytest.fixture
async def server() -> AsyncIterator[OwnPostgres]:
    async with own_postgres() as server:
        yield server


async def test_with_postgres_down_the_consumer_pauses_and_the_runs_view_is_503_then_all_recovers(
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
    server: OwnPostgres,
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
) -> None:
    url = server.url()
    settings = names.consumer_settings(tmp_path, run_store=url, prefetch=32)
    channel = await amqp.channel()
    await declare_consumer_topology(channel, settings.topology)
    port = free_port()
    log = tmp_path / "consumer.log"
    gateway = await gateway_client(
        aiohttp_client, make_settings(**names.gateway_overrides(), run_store=url, retry_after=3)
    )
    await login(gateway)

    consumer = await start_consumer(
        settings, log, env={"SYNCGATE_METRICS_PORT": str(port), "SYNCGATE_LOG_FORMAT": "json"}
    )
    events = [sync_event(i) for i in range(2000)]
    published: list[str] = []

    async def load() -> None:
        # 50 events every 50 ms, before, during and after the outage.
        for start in range(0, len(events), 50):
            batch = events[start : start + 50]
            await publish_events(amqp, names.exchange, batch)
            published.extend(str(e.id) for e in batch)
            await asyncio.sleep(0.05)

    async def until(check: Callable[[], object], what: str, within: float) -> None:
        deadline = time.monotonic() + within
        while not await check():  # type: ignore[misc]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.1)

    async def recorded_at_least(n: int) -> bool:
        return len(await recorded_ids(url)) >= n

    loading = asyncio.create_task(load())
    outage: dict[str, object] = {}
    try:
        await until(lambda: recorded_at_least(300), "the first events", 60)
        first = (await recorded_ids(url))[0]
        assert (await (await gateway.get(f"/api/runs/{first}")).json())["status"] == "handled"

        await server.stop("immediate")
        stopped_at = time.monotonic()
        with json_log_lines() as gateway_log:
            response = await gateway.get(f"/api/runs/{first}")
            outage["runs_view"] = (response.status, response.headers.get("Retry-After"))
            outage["error"] = (await response.json())["error"]["code"]
        outage["gateway_log"] = gateway_log.raw()

        async def paused() -> bool:
            return value(await scrape_consumer(port), "syncgate_consumer_paused") == 1

        await until(paused, "the consumer to pause", 20)
        outage["paused_after"] = round(time.monotonic() - stopped_at, 2)
        await asyncio.sleep(5)  # down for a while, load still arriving
        during = await scrape_consumer(port)
        outage["hand_backs_during"] = settled(during, "hand_back")
        outage["queued_during"] = await depth(channel, settings.queue)

        await server.start()
        restarted_at = time.monotonic()

        async def resumed() -> bool:
            return value(await scrape_consumer(port), "syncgate_consumer_paused") == 0

        await until(resumed, "the consumer to resume", 30)
        outage["resumed_after"] = round(time.monotonic() - restarted_at, 2)
        await loading

        async def all_recorded() -> bool:
            return len(await recorded_ids(url)) >= len(events)

        await until(all_recorded, "every event", 90)
        after = await scrape_consumer(port)
        response = await gateway.get(f"/api/runs/{published[-1]}")
        assert response.status == 200
        assert (await response.json())["status"] == "handled"
    finally:
        loading.cancel()
        consumer.send_signal(signal.SIGTERM)
        await asyncio.wait_for(consumer.wait(), 30)

    recorded = await recorded_ids(url)
    dlq = await depth(channel, settings.topology.dead_letter_queue)
    await asyncio.sleep(5.5)  # the management API's statistics come every 5 s
    stats = (await management_get(f"queues/%2F/{settings.queue}")).get("message_stats", {})
    lines = log.read_text()
    warnings = lines.count('"message":"the run store is unavailable')
    resumes = lines.count("consuming resumed after")
    hand_backs = settled(after, "hand_back")
    print(
        f"postgres down {outage['paused_after']}s to pause, ~5s down, resumed "
        f"{outage['resumed_after']}s after restart: published={len(published)} "
        f"recorded={len(recorded)} unique={len(set(recorded))} dlq={dlq} "
        f"hand_backs={hand_backs:.0f} (during outage {outage['hand_backs_during']:.0f}) "
        f"redelivered={stats.get('redeliver', '?')} delivered={stats.get('deliver', '?')} "
        f"queued during outage={outage['queued_during']} pause warnings={warnings} "
        f"resumes={resumes} runs view during outage={outage['runs_view']}"
    )
    assert consumer.returncode == 0
    assert sorted(recorded) == sorted(published) == sorted(str(e.id) for e in events)
    assert dlq == 0, "no valid event reached the DLQ"
    # Paused, not looping: at most the messages in flight went back, once per pause.
    assert hand_backs <= 2 * settings.prefetch * max(warnings, 1)
    assert warnings <= 2
    assert resumes == warnings
    assert isinstance(stats.get("redeliver"), int)
    assert stats["redeliver"] <= 4 * settings.prefetch
    assert settled(after, "retry") == settled(after, "dead_letter") == 0, "not handler failures"
    assert '"level":"ERROR"' not in lines
    assert outage["runs_view"] == (503, "3")
    assert outage["error"] == "run_store_unavailable"
    assert server.password not in lines
    assert all(server.password not in line for line in outage["gateway_log"])  # type: ignore[attr-defined]


async def test_a_wrong_password_is_refused_and_never_shown(
    names: BrokerNames,
    tmp_path: Path,
    server: OwnPostgres,
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
) -> None:
    wrong = f"Wr0ng-{uuid.uuid4().hex}"
    url = server.url(password=wrong)
    location = SecretStr(url)
    settings = names.consumer_settings(tmp_path, run_store=url)
    shown: list[str] = []

    # The consumer's store, in process: refused, with the password masked.
    store = open_run_store(location, commit_delay=0, full_at=1)
    with pytest.raises(RunStoreRefused) as refused:
        await store.start()
    await store.close()
    shown += [str(refused.value), repr(store), repr(settings), settings.model_dump_json()]
    assert "password authentication failed" in str(refused.value)
    assert describe(location) in str(refused.value)
    assert ":***@" in describe(location)

    # The consumer process stops at start, with the reason.
    log = tmp_path / "consumer.log"
    process = await start_consumer(settings, log, env={"SYNCGATE_METRICS_PORT": "0"})
    assert await asyncio.wait_for(process.wait(), 30) == 1
    shown.append(log.read_text())
    assert "password authentication failed" in shown[-1]

    # `syncgate runs`: an error, not a listing.
    code, output = await syncgate(settings, "runs")
    shown.append(output)
    assert code == 1
    assert "password authentication failed" in output

    # The runs view: 503 with Retry-After; its log lines name the store masked.
    gateway = await gateway_client(
        aiohttp_client, make_settings(**names.gateway_overrides(), run_store=url)
    )
    await login(gateway)
    with json_log_lines() as lines:
        response = await gateway.get(f"/api/runs/{uuid.uuid4()}")
        shown.append(await response.text())
    shown += lines.raw()
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert any("***" in line for line in lines.raw())

    print(f"wrong password: {str(refused.value)!r}")
    for text in shown:
        assert wrong not in text
        assert server.password not in text
