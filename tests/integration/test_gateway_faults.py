"""The gateway's promise under faults, on the real broker: a 202 is never lost, and a request
the broker could not confirm is a 503 with Retry-After within the publish deadline."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest
from aiohttp import web
from pydantic import SecretStr

from consumers.bootstrap import HANDLERS, build_deps
from consumers.handlers import Deps, Handler, HandlerDeps
from consumers.runner import Decision, Delivery, Runner, Settlement
from consumers.settings import ConsumerSettings
from gateway.bootstrap import build_app
from gateway.keys import PUBLISHER
from gateway.publisher import EventPublisher
from gateway.settings import GatewaySettings
from schemas.registry import Event
from tests.conftest import AMQP_URL, AiohttpClient, BrokerNames, login
from tests.support.broker import broker_stopped, memory_alarm, rabbitmqctl
from tests.support.consumer import recorded_ids
from tests.support.gateway import Client, SyncResult, timed_sync, wait_readiness
from tests.support.tcp_proxy import proxy_in_front_of

pytestmark = [pytest.mark.integration, pytest.mark.fault]

DEADLINE = 2.0
SLACK = 0.5
RETRY_AFTER = 1

TARGET_REQUESTS = 2000
CLIENT_LOOPS = 4
PAUSE_BETWEEN_REQUESTS = 0.03
RESTARTS = 2
OUTAGE = 2.0
LOAD_LIMIT = 75.0


async def gateway(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    *,
    prepare: Callable[[web.Application], None] | None = None,
    **overrides: object,
) -> Client:
    """The real app, ready and signed in; `prepare` may change the app before it starts."""
    settings = make_settings(
        **names.gateway_overrides(),
        publish_deadline=DEADLINE,
        retry_after=RETRY_AFTER,
        **overrides,
    )
    app = build_app(settings)
    if prepare is not None:
        prepare(app)
    client: Client = await aiohttp_client(app)
    await wait_readiness(client, 200, within=15)
    await login(client)
    return client


async def bind_probe(
    amqp: aio_pika.abc.AbstractRobustConnection, names: BrokerNames
) -> aio_pika.abc.AbstractQueue:
    """A queue that receives every event the exchange routes, for this test only."""
    channel = await amqp.channel()
    probe = await channel.declare_queue(f"{names.prefix}.probe", exclusive=True)
    await probe.bind(names.exchange, routing_key="#")
    return probe


def assert_bounded_503(result: SyncResult) -> None:
    assert result.status == 503, result
    assert result.retry_after == str(RETRY_AFTER)
    assert result.elapsed <= DEADLINE + SLACK, result


class CountingRunner(Runner):
    """The real runner, counting how it settled each delivery."""

    def __init__(
        self, settings: ConsumerSettings, handlers: dict[str, Handler], deps: Deps
    ) -> None:
        super().__init__(settings, handlers, deps)
        self.settlements: collections.Counter[Settlement] = collections.Counter()

    async def decide(self, message: Delivery) -> Decision:
        decision = await super().decide(message)
        self.settlements[decision.settlement] += 1
        return decision


async def sync_until_stopped(
    client: Client, results: list[SyncResult], stop: asyncio.Event, enough: asyncio.Event
) -> None:
    """One client: a new Idempotency-Key per sync, the same key again after a 503."""
    key = uuid.uuid4().hex
    while not stop.is_set():
        result = await timed_sync(client, idempotency_key=key)
        results.append(result)
        if len(results) >= TARGET_REQUESTS:
            enough.set()
        if result.status == 503:
            await asyncio.sleep(RETRY_AFTER)
        else:
            key = uuid.uuid4().hex
            await asyncio.sleep(PAUSE_BETWEEN_REQUESTS)


async def restart_the_broker(client: Client, times: int) -> list[float]:
    """Stop and start the broker app `times` times; return how long each outage lasted."""
    outages = []
    for _ in range(times):
        await asyncio.sleep(3.0)
        started = time.monotonic()
        async with broker_stopped():
            await asyncio.sleep(OUTAGE)
        await wait_readiness(client, 200, within=30)
        outages.append(time.monotonic() - started)
    return outages


async def test_no_accepted_sync_is_lost_across_two_broker_restarts(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    consumer_settings = names.consumer_settings(tmp_path)
    deps = build_deps(consumer_settings)
    handled: collections.Counter[str] = collections.Counter()
    record = HANDLERS["confluence/app.sync"]

    async def counting_record(event: object, deps: HandlerDeps) -> None:
        handled[str(getattr(event, "id", ""))] += 1
        await record(event, deps)

    runner = CountingRunner(consumer_settings, {"confluence/app.sync": counting_record}, deps)
    stop_consumer = asyncio.Event()
    consuming = asyncio.create_task(runner.run(stop_consumer))
    try:
        await asyncio.wait_for(runner.consuming.wait(), 15)
        client = await gateway(aiohttp_client, make_settings, names)

        results: list[SyncResult] = []
        stop_clients, enough = asyncio.Event(), asyncio.Event()
        clients = [
            asyncio.create_task(sync_until_stopped(client, results, stop_clients, enough))
            for _ in range(CLIENT_LOOPS)
        ]
        started = time.monotonic()
        try:
            outages = await restart_the_broker(client, RESTARTS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LOAD_LIMIT - (time.monotonic() - started)):
                    await enough.wait()
        finally:
            stop_clients.set()
            await asyncio.gather(*clients)
        load_seconds = time.monotonic() - started

        # Only a 202 carries an event id.
        accepted = {result.event_id for result in results if result.event_id is not None}
        caught_up = time.monotonic() + 30
        while not accepted <= (
            stored := await asyncio.to_thread(stored_ids, consumer_settings.run_store)
        ):
            if time.monotonic() > caught_up:
                break
            await asyncio.sleep(0.2)
    finally:
        stop_consumer.set()
        await asyncio.wait_for(consuming, 15)
        await deps.runs.close()
    # Closed now, not by aiohttp_client after `names` has cleaned up: a gateway still running
    # then would declare its revocation stream again once its link recovered.
    await client.close()

    statuses = collections.Counter(result.status for result in results)
    unavailable = [result for result in results if result.status == 503]
    lost = accepted - stored
    print(
        f"\n{len(results)} requests in {load_seconds:.1f}s,"
        f" outages {[round(outage, 1) for outage in outages]}s:"
        f" accepted {len(accepted)}, 503 {len(unavailable)}, lost {len(lost)},"
        f" duplicates suppressed {runner.settlements[Settlement.DUPLICATE]},"
        f" handled twice {sum(1 for n in handled.values() if n > 1)},"
        f" stored but answered 503 {len(stored - accepted)},"
        f" replayed {sum(result.replayed for result in results)},"
        f" slowest answer {max(result.elapsed for result in results):.2f}s"
        f" (deadline {DEADLINE}s)"
    )
    assert len(results) >= TARGET_REQUESTS
    assert set(statuses) <= {202, 503}, statuses
    assert unavailable, "the restarts never reached a client: the test proved nothing"
    for result in unavailable:
        assert_bounded_503(result)
    assert lost == set()
    assert len(accepted) == statuses[202], "two 202s shared an event id"


def stored_ids(run_store: SecretStr | Path) -> set[str]:
    return set(recorded_ids(run_store))


async def test_a_half_open_link_is_503_within_the_deadline_and_recovers(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    async with proxy_in_front_of(AMQP_URL) as (proxy, proxied_url):
        client = await gateway(aiohttp_client, make_settings, names, amqp_url=proxied_url)
        probe = await bind_probe(amqp, names)
        before = await timed_sync(client)
        assert before.status == 202

        proxy.pause()
        during = await asyncio.gather(*(timed_sync(client) for _ in range(10)))
        during.append(await timed_sync(client))
        for result in during:
            assert_bounded_503(result)
        # Nothing crossed the proxy, so only the event published before the pause is here.
        delivered = [await probe.get(timeout=5)]
        assert await probe.get(fail=False) is None

        proxy.resume()
        resumed = time.monotonic()
        while (after := await timed_sync(client)).status != 202:
            assert_bounded_503(after)
            assert time.monotonic() - resumed < 30, "the link never recovered"
        recovered = time.monotonic() - resumed
        while (message := await probe.get(fail=False)) is not None:
            delivered.append(message)

    delivered_ids = [message.message_id for message in delivered]
    print(
        f"\nduring the pause: {len(during)} x 503, slowest {max(r.elapsed for r in during):.2f}s"
        f" (deadline {DEADLINE}s); recovered {recovered:.2f}s after resume;"
        f" held publishes delivered after the resume though answered 503:"
        f" {len(delivered_ids) - 2}"
    )
    assert delivered_ids[0] == before.event_id
    assert after.event_id in delivered_ids


class RecordingPublisher:
    """The gateway's own publisher, recording the id of every event the view hands it."""

    def __init__(self, inner: EventPublisher) -> None:
        self._inner = inner
        self.attempted: list[str] = []

    @property
    def ready(self) -> bool:
        return self._inner.ready

    # The app's cleanup context starts and closes the inner publisher itself.
    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def publish(self, event: Event, *, correlation_id: str) -> None:
        self.attempted.append(str(event.id))
        await self._inner.publish(event, correlation_id=correlation_id)


def record_publishes(app: web.Application) -> None:
    # Wrapped, not replaced: the real publisher still opens and closes the link (its
    # cleanup_ctx). The ids of failed attempts are seen nowhere else: a 503 carries none.
    app[PUBLISHER] = RecordingPublisher(app[PUBLISHER])


async def test_the_retry_after_a_503_publishes_the_failed_attempt_under_its_id(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    async with proxy_in_front_of(AMQP_URL) as (proxy, proxied_url):
        client = await gateway(
            aiohttp_client, make_settings, names, prepare=record_publishes, amqp_url=proxied_url
        )
        recorder = client.app[PUBLISHER] if client.app is not None else None
        assert isinstance(recorder, RecordingPublisher)
        probe = await bind_probe(amqp, names)
        key = uuid.uuid4().hex

        proxy.pause()
        failed = await timed_sync(client, idempotency_key=key)
        assert_bounded_503(failed)
        [attempted] = recorder.attempted

        proxy.resume()
        resumed = time.monotonic()
        while (retry := await timed_sync(client, idempotency_key=key)).status != 202:
            assert_bounded_503(retry)
            assert time.monotonic() - resumed < 30, "the link never recovered"
        delivered = [await probe.get(timeout=5)]
        while (message := await probe.get(fail=False)) is not None:
            delivered.append(message)
        replay = await timed_sync(client, idempotency_key=key)

    delivered_ids = [message.message_id for message in delivered]
    print(
        f"\none key: {len(recorder.attempted)} publishes of one event,"
        f" {len(delivered)} copies delivered, ids {set(delivered_ids)}"
    )
    assert retry.event_id == attempted
    assert not retry.replayed  # this request did the publish that was confirmed
    assert set(recorder.attempted) == {attempted}
    # The link was only paused, so the attempt answered 503 reached the broker too, once it
    # resumed: the case the same id is for. Every copy carries the one id consumers dedupe on.
    # (A retry that itself answered 503 after the resume may or may not have been sent.)
    assert 2 <= len(delivered) <= len(recorder.attempted)
    assert delivered_ids == [attempted] * len(delivered)
    assert (replay.status, replay.event_id, replay.replayed) == (202, attempted, True)


async def wait_for_memory_alarm(*, within: float) -> None:
    started = time.monotonic()
    while "memory" not in await rabbitmqctl("eval", "rabbit_alarm:get_alarms()."):
        assert time.monotonic() - started < within, "the memory alarm never went off"
        await asyncio.sleep(0.1)


async def test_a_connection_blocked_by_a_memory_alarm_is_503_after_the_deadline(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    client = await gateway(aiohttp_client, make_settings, names)
    assert (await timed_sync(client)).status == 202

    # The alarm blocks every publisher on this broker, teammates' too: keep it short.
    async with memory_alarm():
        await wait_for_memory_alarm(within=10)
        blocked = await timed_sync(client)
    assert "memory" not in await rabbitmqctl("eval", "rabbit_alarm:get_alarms().")

    unblocked = time.monotonic()
    while (after := await timed_sync(client)).status != 202:
        assert_bounded_503(after)
        assert time.monotonic() - unblocked < 30, "publishing never resumed"
    print(
        f"\nblocked: {blocked.status} in {blocked.elapsed:.2f}s (deadline {DEADLINE}s);"
        f" 202 again {time.monotonic() - unblocked:.2f}s after the alarm cleared"
    )
    assert_bounded_503(blocked)
    assert blocked.elapsed >= DEADLINE, "a 503 before the deadline: the block was not waited on"
