"""The consumer's guarantees on the real broker: retries with backoff, the DLQ, the unrouted
queue, and the `syncgate dlq` tool."""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path

import aio_pika
import pytest

from common.republish import ATTEMPT_HEADER, REASON_HEADER, ROUTING_KEY_HEADER
from common.topology import declare_events_exchange
from consumers.bootstrap import build_deps
from consumers.errors import NonRetryableError
from consumers.handlers import HandlerDeps, record_confluence_sync
from schemas.events import ConfluenceAppSync
from tests.conftest import BrokerNames
from tests.support.consumer import (
    EVENT_NAME,
    ROUTING_KEY,
    depth,
    publish_events,
    publish_raw,
    recorded_ids,
    running,
    stored_run,
    syncgate,
    wait_for_depth,
    wait_until,
)
from tests.support.events import sync_event

pytestmark = pytest.mark.integration


async def test_a_poison_event_is_retried_with_growing_delays_then_dead_lettered_once(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = names.consumer_settings(tmp_path, max_attempts=4, retry_base_delay=0.5)
    poison = sync_event({"poison": True})
    attempts: list[float] = []

    async def handle(event: ConfluenceAppSync, deps: HandlerDeps) -> None:
        if event.id == poison.id:
            attempts.append(time.monotonic())
            raise RuntimeError("this event always fails")
        await record_confluence_sync(event, deps)

    deps = build_deps(settings)
    channel = await amqp.channel()
    try:
        async with running(settings, {EVENT_NAME: handle}, deps):
            await publish_events(amqp, names.exchange, [poison])
            await wait_until(lambda: len(attempts) >= 1, "the first attempt")
            others = [sync_event(i) for i in range(20)]
            await publish_events(amqp, names.exchange, others)
            await wait_until(
                lambda: len(recorded_ids(settings.run_store)) == len(others), "the other events"
            )
            # The others were handled while the poison event waited in a retry queue.
            attempts_while_others_flowed = len(attempts)
            dlq_while_others_flowed = await depth(channel, settings.topology.dead_letter_queue)

            await wait_for_depth(channel, settings.topology.dead_letter_queue, 1)
            await wait_for_depth(channel, settings.queue, 0)
    finally:
        await deps.runs.close()

    assert attempts_while_others_flowed < settings.max_attempts
    assert dlq_while_others_flowed == 0
    assert len(attempts) == settings.max_attempts
    delays = [round(b - a, 2) for a, b in itertools.pairwise(attempts)]
    expected = [settings.topology.retry_delay_ms(n) / 1000 for n in range(1, settings.max_attempts)]
    print(f"poison: attempts={len(attempts)} delays={delays}s (TTLs {expected}s)")
    assert all(d >= e * 0.9 for d, e in zip(delays, expected, strict=True)), (delays, expected)
    assert delays == sorted(delays)
    assert delays[-1] > delays[0]

    dlq = await channel.declare_queue(settings.topology.dead_letter_queue, passive=True)
    message = await dlq.get(timeout=5)
    await message.ack()
    assert await depth(channel, settings.topology.dead_letter_queue) == 0, (
        "dead-lettered exactly once"
    )
    assert message.message_id == str(poison.id)
    assert message.headers[REASON_HEADER] == "retries_exhausted"
    assert message.headers[ATTEMPT_HEADER] == settings.max_attempts
    assert message.headers[ROUTING_KEY_HEADER] == ROUTING_KEY
    for attempt in range(1, settings.max_attempts):
        assert await depth(channel, settings.topology.retry_queue(attempt)) == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid_body"),
        (b'{"name": "confluence/app.sync", "v": "1", "id": "x"}', "invalid_body"),
        (b'{"name": "jira/app.sync", "v": "1"}', "unknown_event"),
    ],
)
async def test_a_body_that_is_not_a_known_event_is_dead_lettered_at_once(
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
    body: bytes,
    reason: str,
) -> None:
    settings = names.consumer_settings(tmp_path)
    calls: list[ConfluenceAppSync] = []

    async def handle(event: ConfluenceAppSync, deps: HandlerDeps) -> None:
        calls.append(event)

    deps = build_deps(settings)
    channel = await amqp.channel()
    message_id = str(uuid.uuid4())
    try:
        async with running(settings, {EVENT_NAME: handle}, deps):
            await publish_raw(amqp, names.exchange, body, message_id)
            await wait_for_depth(channel, settings.topology.dead_letter_queue, 1)
    finally:
        await deps.runs.close()

    dlq = await channel.declare_queue(settings.topology.dead_letter_queue, passive=True)
    message = await dlq.get(timeout=5)
    headers = message.headers
    print(f"invalid: reason={headers[REASON_HEADER]!r} error={headers['x-syncgate-error']!r}")
    assert message.message_id == message_id
    assert message.body == body
    assert message.headers[REASON_HEADER] == reason
    assert message.headers[ATTEMPT_HEADER] == 1
    assert calls == []
    assert await depth(channel, settings.topology.retry_queue(1)) == 0, "never retried"


async def test_a_non_retryable_error_is_dead_lettered_after_one_attempt(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = names.consumer_settings(tmp_path)
    calls: list[float] = []

    async def handle(event: ConfluenceAppSync, deps: HandlerDeps) -> None:
        calls.append(time.monotonic())
        raise NonRetryableError("the space was deleted")

    deps = build_deps(settings)
    channel = await amqp.channel()
    event = sync_event()
    try:
        async with running(settings, {EVENT_NAME: handle}, deps):
            await publish_events(amqp, names.exchange, [event])
            await wait_for_depth(channel, settings.topology.dead_letter_queue, 1)
    finally:
        await deps.runs.close()

    dlq = await channel.declare_queue(settings.topology.dead_letter_queue, passive=True)
    message = await dlq.get(timeout=5)
    print(f"non-retryable: attempts={len(calls)} reason={message.headers[REASON_HEADER]!r}")
    assert len(calls) == 1
    assert message.message_id == str(event.id)
    assert message.headers[REASON_HEADER] == "handler_rejected"
    assert "the space was deleted" in str(message.headers["x-syncgate-error"])


async def test_an_event_nobody_binds_lands_in_the_unrouted_queue(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await declare_events_exchange(
        channel, names.consumer_settings(Path("unused")).topology.events
    )
    event = sync_event()
    message = aio_pika.Message(
        body=event.model_dump_json().encode(),
        message_id=str(event.id),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )

    # mandatory with returns raising: were it dropped, this would raise instead of confirming.
    await exchange.publish(message, routing_key="nobody.binds.this", mandatory=True)

    unrouted = await channel.declare_queue(names.unrouted, passive=True)
    kept = await unrouted.get(timeout=5)
    print(f"unrouted: kept={kept.message_id} routing_key={kept.routing_key}")
    assert kept.message_id == str(event.id)
    assert kept.routing_key == "nobody.binds.this"
    assert kept.body == message.body


async def test_dlq_list_shows_without_removing_and_replay_brings_events_back(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = names.consumer_settings(tmp_path)
    broken = True

    async def handle(event: ConfluenceAppSync, deps: HandlerDeps) -> None:
        if broken:
            raise NonRetryableError("the downstream API said 400")
        await record_confluence_sync(event, deps)

    deps = build_deps(settings)
    channel = await amqp.channel()
    events = [sync_event(i) for i in range(3)]
    try:
        async with running(settings, {EVENT_NAME: handle}, deps):
            for n, event in enumerate(events, start=1):  # one by one: the DLQ's order is known
                await publish_events(amqp, names.exchange, [event])
                await wait_for_depth(channel, settings.topology.dead_letter_queue, n)

            code, listing = await syncgate(settings, "dlq", "list")
            assert code == 0, listing
            code, again = await syncgate(settings, "dlq", "list")
            assert code == 0, again
            print(f"dlq list:\n{listing}")
            lines = [line for line in listing.splitlines() if "reason=" in line]
            assert [line.split()[1] for line in lines] == [str(e.id) for e in events]
            assert all("reason=handler_rejected" in line for line in lines)
            assert all("the downstream API said 400" in line for line in lines)
            assert again == listing, "listing twice shows the same, in the same order"
            assert await depth(channel, settings.topology.dead_letter_queue) == 3, (
                "list removes nothing"
            )

            broken = False
            middle = str(events[1].id)
            code, output = await syncgate(settings, "dlq", "replay", "--id", middle)
            assert code == 0, output
            await wait_until(
                lambda: stored_run(settings.run_store, middle) is not None, "the replayed event"
            )
            assert await depth(channel, settings.topology.dead_letter_queue) == 2

            code, output = await syncgate(settings, "dlq", "replay", "--id", middle)
            assert code == 1
            assert f"no event '{middle}'" in output

            code, output = await syncgate(settings, "dlq", "replay", "--all")
            assert code == 0, output
            assert "replayed 2 of 2" in output
            await wait_until(
                lambda: len(recorded_ids(settings.run_store)) == 3, "every replayed event"
            )
            assert await depth(channel, settings.topology.dead_letter_queue) == 0
            print(f"dlq replay: recorded={len(recorded_ids(settings.run_store))} left in dlq=0")
    finally:
        await deps.runs.close()
