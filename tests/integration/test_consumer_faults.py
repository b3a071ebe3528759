"""The consumer under faults on the real broker: a broker restart, kill -9 and SIGTERM of a
real consumer process. Each restart of the broker is undone in a `finally`."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aio_pika
import pytest

from common.topology import declare_consumer_topology
from consumers.bootstrap import HANDLERS, build_deps
from tests.conftest import BrokerNames
from tests.support.consumer import (
    connect_when_up,
    depth,
    processed_ids,
    publish_events,
    recorded_ids,
    restart_broker,
    running,
    start_consumer,
    stored_run,
    wait_for_depth,
    wait_until,
)
from tests.support.events import sync_event

pytestmark = [pytest.mark.integration, pytest.mark.fault]


async def test_confirmed_persistent_events_survive_a_broker_restart(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = names.consumer_settings(tmp_path)
    channel = await amqp.channel()
    await declare_consumer_topology(channel, settings.topology)
    await publish_events(amqp, names.exchange, [sync_event(i) for i in range(500)])
    await wait_for_depth(channel, settings.queue, 500)

    await restart_broker()

    connection = await connect_when_up()
    async with connection:
        fresh = await connection.channel()
        # A quorum queue replays its log after a restart; give it a moment to count.
        await wait_for_depth(fresh, settings.queue, 500)
        after = await depth(fresh, settings.queue)
    print(f"persistence: published=500 after restart={after}")
    assert after == 500
    await asyncio.wait_for(amqp.ready(), 60)  # the fixture deletes the queues through it


async def test_a_consumer_killed_mid_batch_records_every_event_exactly_once(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = names.consumer_settings(tmp_path)
    channel = await amqp.channel()
    await declare_consumer_topology(channel, settings.topology)
    events = [sync_event(i) for i in range(1500)]
    await publish_events(amqp, names.exchange, events)
    log = tmp_path / "consumer.log"

    first = await start_consumer(settings, log)
    try:
        await wait_until(lambda: len(recorded_ids(settings.run_store)) >= 100, "a first batch")
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    recorded_at_kill = len(recorded_ids(settings.run_store))
    assert first.returncode == -signal.SIGKILL
    assert recorded_at_kill < len(events), "killed mid-batch, not after it"

    second = await start_consumer(settings, log)
    try:
        await wait_until(
            lambda: len(recorded_ids(settings.run_store)) == len(events), "every event", within=90
        )
        await wait_for_depth(channel, settings.queue, 0)
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), 30)

    recorded = recorded_ids(settings.run_store)
    processed = processed_ids(settings.run_store)
    duplicates_skipped = log.read_text().count("settled: duplicate")
    print(
        f"kill -9: published={len(events)} recorded at kill={recorded_at_kill} "
        f"recorded={len(recorded)} processed={len(processed)} "
        f"redelivered-and-skipped={duplicates_skipped}"
    )
    assert sorted(recorded) == sorted(str(e.id) for e in events)
    assert sorted(processed) == sorted(recorded)
    assert second.returncode == 0


async def test_sigterm_mid_load_exits_0_and_loses_nothing(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = names.consumer_settings(tmp_path)
    channel = await amqp.channel()
    await declare_consumer_topology(channel, settings.topology)
    events = [sync_event(i) for i in range(1500)]
    await publish_events(amqp, names.exchange, events)

    consumer = await start_consumer(settings, tmp_path / "consumer.log")
    try:
        await wait_until(lambda: len(recorded_ids(settings.run_store)) >= 100, "messages flowing")
    finally:
        consumer.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(consumer.wait(), 30)

    recorded = set(recorded_ids(settings.run_store))
    queue = await channel.declare_queue(settings.queue, passive=True)
    still_queued: list[str] = []
    while (message := await queue.get(fail=False, timeout=5)) is not None:
        still_queued.append(str(message.message_id))
        await message.ack()
    print(
        f"sigterm: exit={code} published={len(events)} recorded={len(recorded)} "
        f"still queued={len(still_queued)} both={len(recorded & set(still_queued))}"
    )
    assert code == 0
    assert 0 < len(recorded) < len(events), "stopped mid-load"
    assert recorded | set(still_queued) == {str(e.id) for e in events}, "nothing lost"
    assert len(recorded) + len(still_queued) == len(events), "each exactly once"


async def test_the_consumer_resumes_after_a_broker_restart(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = names.consumer_settings(tmp_path)
    deps = build_deps(settings)
    try:
        async with running(settings, HANDLERS, deps):
            before = sync_event("before")
            await publish_events(amqp, names.exchange, [before])
            await wait_until(
                lambda: stored_run(settings.run_store, str(before.id)) is not None, "before"
            )

            await restart_broker()
            restarted = time.monotonic()

            after = sync_event("after")
            connection = await connect_when_up()
            async with connection:
                # The exchange may not be re-declared yet by a robust peer; the consumer's
                # restore declares it, so wait for the queue's consumer to be back first.
                await wait_for_consumer(connection, settings.queue)
                await publish_events(connection, names.exchange, [after])
            await wait_until(
                lambda: stored_run(settings.run_store, str(after.id)) is not None,
                "after the restart",
                within=60,
            )
            resumed = time.monotonic() - restarted
            await asyncio.wait_for(amqp.ready(), 60)  # the fixture deletes the queues through it
    finally:
        await deps.runs.close()
    print(
        f"reconnect: consumer restored; the event published after the restart was recorded "
        f"{resumed:.1f}s after start_app"
    )


async def wait_for_consumer(connection: aio_pika.abc.AbstractConnection, queue: str) -> None:
    channel = await connection.channel()
    async with channel:
        underlay = await channel.get_underlay_channel()
        deadline = time.monotonic() + 60
        while not (await underlay.queue_declare(queue, passive=True)).consumer_count:
            assert time.monotonic() < deadline, f"no consumer came back on {queue}"
            await asyncio.sleep(0.1)
