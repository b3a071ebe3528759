"""Handled once, across consumers, on the real broker and PostgreSQL: two consumer processes
share one queue and one run store, every event id is published twice or more (copies side by
side, so that they reach both consumers at once), and one consumer is killed with -9
mid-batch and replaced.

Each consumer's handler logs when it starts and ends (tests/support/counting_consumer.py)
and records its pid as `received_at`, so the test can count handler runs per event id and see
whose run was recorded."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from pathlib import Path

import aio_pika
import pytest

from common.topology import declare_consumer_topology
from tests.conftest import BrokerNames
from tests.support.consumer import publish_events, start_consumer, wait_for_depth
from tests.support.counting_consumer import CALLS, calls_of
from tests.support.events import sync_event
from tests.support.postgres import fetch, recorded_ids

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.fault]

COUNTING = "tests.support.counting_consumer"


async def wait_for(check: object, what: str, *, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    assert callable(check)
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_two_consumers_and_a_kill_9_handle_every_event_once(
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
    postgres_url: str,
) -> None:
    settings = names.consumer_settings(tmp_path, run_store=postgres_url, prefetch=32)
    channel = await amqp.channel()
    await declare_consumer_topology(channel, settings.topology)
    calls_file, log = tmp_path / "calls.txt", tmp_path / "consumers.log"
    env = {CALLS: str(calls_file), "SYNCGATE_METRICS_PORT": "0"}

    async def consumer() -> asyncio.subprocess.Process:
        return await start_consumer(settings, log, module=COUNTING, env=env)

    events = [sync_event(i) for i in range(1200)]
    # Two copies of each, a third of every fifth, side by side: round-robin gives the copies
    # of one id to both consumers at about the same moment.
    copies = [e for n, e in enumerate(events) for _ in range(3 if n % 5 == 0 else 2)]
    a, b = await consumer(), await consumer()
    replacement: asyncio.subprocess.Process | None = None
    try:
        await publish_events(amqp, names.exchange, copies)

        async def a_third_recorded() -> bool:
            return len(await recorded_ids(postgres_url)) >= len(events) // 3

        await wait_for(a_third_recorded, "a third of the events")
        killed_at = time.time()
        a.send_signal(signal.SIGKILL)
        await a.wait()
        recorded_at_kill = len(await recorded_ids(postgres_url))
        assert a.returncode == -signal.SIGKILL
        assert recorded_at_kill < len(events), "killed mid-load"
        replacement = await consumer()

        async def all_recorded() -> bool:
            return len(await recorded_ids(postgres_url)) == len(events)

        await wait_for(all_recorded, "every event", within=90)
        await wait_for_depth(channel, settings.queue, 0, within=60)
        first_round = calls_of(calls_file)

        # Once recorded, never run again: one more copy of every event, to every consumer.
        again_at = time.time()
        await publish_events(amqp, names.exchange, events)
        await wait_for_depth(channel, settings.queue, 0, within=60)
    finally:
        for process in (a, b, replacement):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 30)

    calls = calls_of(calls_file)
    starts: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
    ends: dict[tuple[str, int], float] = {}
    for kind, event_id, pid, at in calls:
        if kind == "start":
            starts[event_id].append((pid, at))
        else:
            ends[(event_id, pid)] = at
    rows = await fetch(postgres_url, "SELECT event_id, received_at FROM runs")
    recorded_by = {row["event_id"]: row["received_at"] for row in rows}
    processed = await fetch(postgres_url, "SELECT event_id FROM processed_events")
    runs_again = [c for c in calls if c[0] == "start" and c[3] >= again_at]
    rerun = {event_id: runs for event_id, runs in starts.items() if len(runs) > 1}
    duplicates = log.read_text().count("settled: duplicate")
    print(
        f"handled once: events={len(events)} copies={len(copies)} + {len(events)} again; "
        f"consumers 2 (+1 after kill -9 at {recorded_at_kill} recorded); "
        f"handler runs={sum(len(r) for r in starts.values())} "
        f"rerun after the kill={len(rerun)} runs after recording={len(runs_again)} "
        f"duplicates acked={duplicates} recorded={len(rows)} processed={len(processed)}"
    )

    ids = sorted(str(e.id) for e in events)
    assert sorted(recorded_by) == ids, "every event recorded exactly once"
    assert sorted(row["event_id"] for row in processed) == ids
    assert runs_again == [], "no consumer ran a recorded event again"
    assert len(calls) == len(first_round)
    assert duplicates >= len(copies) - len(events), "every extra copy was acked as a duplicate"
    for event_id, runs in starts.items():
        survivors = [(pid, at) for pid, at in runs if pid != a.pid]
        assert len(survivors) <= 1, f"{event_id} ran {len(survivors)} times at live consumers"
        if len(runs) == 1:
            assert recorded_by[event_id] == runs[0][0], "the one run is the one recorded"
            continue
        # Ran twice: first at the killed consumer, whose run was not recorded, and again
        # only after its death ended its claim.
        assert len(runs) == 2, (event_id, runs)
        (first_pid, _), (second_pid, second_at) = sorted(runs, key=lambda r: r[1])
        assert first_pid == a.pid, (event_id, runs)
        assert second_at >= killed_at, "never alongside the killed consumer's run"
        assert recorded_by[event_id] == second_pid, "the killed consumer's run was not kept"
        assert (event_id, first_pid) not in ends or ends[(event_id, first_pid)] <= second_at
