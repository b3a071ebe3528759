"""Poison messages on the real broker: messages whose dead-letter or retry copy would not fit
in one frame (a 200 KB name, a 1 MiB body with a huge invalid field, headers close to
`frame_max`) end in the DLQ with a bounded reason, the consumer keeps its connection, and
the valid events behind them are each handled once and never redelivered."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.abc import FieldValue

from common.republish import ERROR_HEADER, REASON_HEADER
from consumers.bootstrap import build_deps
from consumers.handlers import HandlerDeps, record_confluence_sync
from consumers.metrics import ConsumerMetrics
from consumers.settings import ConsumerSettings
from schemas.events import ConfluenceAppSync, new_event_id
from tests.conftest import BrokerNames, management_get
from tests.support.consumer import (
    EVENT_NAME,
    padded_headers,
    publish_events,
    publish_raw,
    recorded_ids,
    running,
    syncgate,
    wait_for_depth,
    wait_until,
)
from tests.support.events import sync_event
from tests.support.log_capture import JsonLines, json_log_lines

pytestmark = pytest.mark.integration

# What aio-pika logs when a robust connection was lost and is about to be restored.
RECONNECT = "Reconnecting after"
HEADER_VALUE_LIMIT = 1024  # bytes, an x-syncgate-* value at most (the brief's bound)
LONGEST_LOG_LINE = 8192  # bytes: no line quotes unbounded input


async def frame_max_of(channel: AbstractChannel) -> int:
    """What the broker and aiormq negotiated for this connection."""
    underlay = await channel.get_underlay_channel()
    return underlay.connection.connection_tune.frame_max


@dataclass(frozen=True)
class SeenConnection:
    """The consumer's connection as the management API shows it."""

    name: str
    connected_at: int
    client_name: str


async def consumer_connection(queue: str, *, within: float = 30.0) -> SeenConnection:
    """The connection whose channel consumes from `queue` (the statistics lag a few seconds)."""
    deadline = time.monotonic() + within
    while True:
        details = (await management_get(f"queues/%2F/{quote(queue, safe='')}")).get(
            "consumer_details", []
        )
        # Until the channel's statistics arrive, its details are an empty list.
        channels = [d["channel_details"] for d in details if d.get("channel_details")]
        if channels:
            break
        assert time.monotonic() < deadline, f"no consumer on {queue} in the management API"
        await asyncio.sleep(0.5)
    [channel] = channels
    name = channel["connection_name"]
    connection = await management_get(f"connections/{quote(name, safe='')}")
    return SeenConnection(
        name=name,
        connected_at=connection["connected_at"],
        client_name=connection["client_properties"]["connection_name"],
    )


async def queue_stats(queue: str, *, deliveries: int, within: float = 30.0) -> Mapping[str, Any]:
    """The queue's message statistics once they count at least `deliveries` deliveries
    (redeliveries included: the broker samples them every few seconds)."""
    deadline = time.monotonic() + within
    while True:
        stats = (await management_get(f"queues/%2F/{quote(queue, safe='')}")).get(
            "message_stats", {}
        )
        if stats.get("deliver_get", 0) >= deliveries:
            return dict(stats)
        assert time.monotonic() < deadline, f"{queue}'s statistics stayed at {stats}"
        await asyncio.sleep(0.5)


async def dead_letters(channel: AbstractChannel, queue: str) -> dict[str, AbstractIncomingMessage]:
    """Everything in the DLQ by message id, left unacked (the channel's close returns it)."""
    dlq = await channel.declare_queue(queue, passive=True)
    found: dict[str, AbstractIncomingMessage] = {}
    while (message := await dlq.get(no_ack=False, fail=False)) is not None:
        found[message.message_id or "-"] = message
    return found


def x_death(message: AbstractIncomingMessage, queue: str) -> Mapping[str, Any]:
    deaths = message.headers.get("x-death")
    assert isinstance(deaths, list), message.headers.keys()
    [death] = [d for d in deaths if isinstance(d, dict) and d.get("queue") == queue]
    return death


def outcome(metrics: ConsumerMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value("syncgate_consumer_messages_total", {"outcome": name})
    return value or 0.0


def check_logs(lines: JsonLines, *, warned_for: set[str]) -> dict[str, int]:
    """No traceback, no reconnect, no line quoting unbounded input; one WARNING per fallback."""
    records = lines.records()
    longest = max(len(line.encode()) for line in lines.raw())
    assert longest <= LONGEST_LOG_LINE, f"a log line of {longest} bytes"
    tracebacks = [r["message"] for r in records if "exc_info" in r]
    assert tracebacks == [], tracebacks
    reconnects = [r["message"] for r in records if RECONNECT in r["message"]]
    assert reconnects == [], reconnects
    fallbacks = [
        r
        for r in records
        if r["logger"] == "consumers.runner"
        and r["level"] == "WARNING"
        and r["message"].startswith("rejecting the message")
    ]
    assert sorted(str(r.get("event_id")) for r in fallbacks) == sorted(warned_for), fallbacks
    errors = [r["message"] for r in records if r["level"] in ("ERROR", "CRITICAL")]
    assert all(m.startswith("dead-lettering the message: ") for m in errors), errors
    return {"lines": len(records), "longest": longest, "reconnects": len(reconnects)}


async def test_poison_messages_cost_no_connection_and_no_valid_event_is_redelivered(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = names.consumer_settings(tmp_path)
    channel = await amqp.channel()
    frame_max = await frame_max_of(channel)
    template = sync_event().model_dump(mode="json")
    # RabbitMQ 3.10's max_message_size is 128 MiB: a 1 MiB body needs no limit raised.
    huge_key = "é" * (512 * 1024)  # 1 MiB of UTF-8, quoted whole in pydantic's error text
    poison: dict[str, tuple[bytes, dict[str, FieldValue]]] = {
        "long name": (
            orjson.dumps({**template, "id": str(new_event_id()), "name": "n" * 200_000}),
            {},
        ),
        "huge invalid field": (
            orjson.dumps({**template, "id": str(new_event_id()), huge_key: True}),
            {},
        ),
        "headers near frame_max": (
            orjson.dumps({**template, "id": str(new_event_id()), "name": "jira/app.sync"}),
            padded_headers(frame_max - 4096),
        ),
    }
    ids = {label: str(uuid.uuid4()) for label in poison}
    valid = [sync_event(n) for n in range(500)]
    calls: Counter[str] = Counter()

    async def handle(event: ConfluenceAppSync, deps: HandlerDeps) -> None:
        calls[str(event.id)] += 1
        await record_confluence_sync(event, deps)

    metrics = ConsumerMetrics()
    deps = build_deps(settings)
    try:
        with json_log_lines() as lines:
            async with running(settings, {EVENT_NAME: handle}, deps, metrics=metrics):
                before = await consumer_connection(settings.queue)
                for label, (body, headers) in poison.items():
                    await publish_raw(amqp, names.exchange, body, ids[label], headers=headers)
                started = time.monotonic()
                await publish_events(amqp, names.exchange, valid)
                await wait_until(
                    lambda: len(recorded_ids(settings.run_store)) == len(valid),
                    "the 500 valid events",
                    within=60,
                )
                seconds = time.monotonic() - started
                await wait_for_depth(channel, settings.topology.dead_letter_queue, len(poison))
                await wait_for_depth(channel, settings.queue, 0)
                stats = await queue_stats(settings.queue, deliveries=len(valid) + len(poison))
                after = await consumer_connection(settings.queue)
    finally:
        await deps.runs.close()

    assert after == before, f"the consumer's connection changed: {before} -> {after}"
    assert before.client_name.startswith("syncgate-consumer@")
    redelivered = stats.get("redeliver", 0)
    assert (stats["deliver_get"], redelivered) == (len(valid) + len(poison), 0), stats
    logged = check_logs(lines, warned_for={ids["headers near frame_max"]})
    recorded = recorded_ids(settings.run_store)
    assert sorted(recorded) == sorted(str(e.id) for e in valid), "each recorded exactly once"
    assert set(calls.values()) == {1}, "each valid event handled once"
    settled = {o: outcome(metrics, o) for o in ("ack", "duplicate", "retry", "dead_letter")}
    assert settled == {"ack": 500, "duplicate": 0, "retry": 0, "dead_letter": 3}

    async with await amqp.channel() as browsing:
        letters = await dead_letters(browsing, settings.topology.dead_letter_queue)
        assert set(letters) == set(ids.values()), "only the poison messages are in the DLQ"
        for label, message_id in ids.items():
            letter = letters[message_id]
            assert letter.body == poison[label][0]
            assert letter.headers.get("x-delivery-count", 0) == 0, (label, "delivered again")
        for label in ("long name", "huge invalid field"):
            headers = letters[ids[label]].headers
            error = headers[ERROR_HEADER]
            assert isinstance(error, str)
            assert len(error.encode()) <= HEADER_VALUE_LIMIT, (label, len(error.encode()))
            assert "truncated" in error, error
        assert letters[ids["long name"]].headers[REASON_HEADER] == "unknown_event"
        assert letters[ids["huge invalid field"]].headers[REASON_HEADER] == "invalid_body"
        fallback = letters[ids["headers near frame_max"]]
        assert REASON_HEADER not in fallback.headers, "the broker dead-lettered it, not us"
        death = x_death(fallback, settings.queue)
        assert (death["reason"], death["count"]) == ("rejected", 1)
        assert fallback.headers["x-padding"] == poison["headers near frame_max"][1]["x-padding"]

    code, listing = await syncgate(settings, "dlq", "list")
    assert code == 0, listing[:2000]
    shown = {line.split()[1]: line for line in listing.splitlines() if "reason=" in line}
    assert set(shown) == set(ids.values()), listing[:2000]
    assert all(len(line.encode()) <= 2 * HEADER_VALUE_LIMIT + 256 for line in shown.values())
    assert "reason=unknown_event" in shown[ids["long name"]]
    assert "reason=invalid_body" in shown[ids["huge invalid field"]]
    assert "reason=rejected" in shown[ids["headers near frame_max"]]
    assert "would not fit" in shown[ids["headers near frame_max"]]

    print(
        f"poison: frame_max={frame_max} valid handled={len(recorded)}/{len(valid)} "
        f"in {seconds:.1f}s; redelivered={redelivered}; settled={settled}; "
        f"connection {before.name} kept (connected_at {before.connected_at}); "
        f"reconnects={logged['reconnects']}; log lines={logged['lines']} "
        f"longest={logged['longest']}B"
    )
    print("dlq list:\n" + "\n".join(shown[i] for i in ids.values()))


async def test_a_retry_copy_that_would_not_fit_is_dead_lettered_by_the_broker(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    """Headers that leave no room for the retry headers: the copy for the retry queue would
    not fit in a frame, so the broker dead-letters the message instead; nothing else moves."""
    settings: ConsumerSettings = names.consumer_settings(tmp_path)
    channel = await amqp.channel()
    frame_max = await frame_max_of(channel)
    poison = sync_event({"poison": True})
    others = [sync_event(n) for n in range(50)]
    calls: Counter[str] = Counter()

    async def handle(event: ConfluenceAppSync, deps: HandlerDeps) -> None:
        calls[str(event.id)] += 1
        if event.id == poison.id:
            raise RuntimeError("the downstream API timed out " + "." * 900)
        await record_confluence_sync(event, deps)

    metrics = ConsumerMetrics()
    deps = build_deps(settings)
    body = poison.model_dump_json().encode()
    try:
        with json_log_lines() as lines:
            async with running(settings, {EVENT_NAME: handle}, deps, metrics=metrics):
                before = await consumer_connection(settings.queue)
                # Room for the gateway's own properties, not for the retry headers on top.
                crowded = padded_headers(frame_max - 512)
                await publish_raw(amqp, names.exchange, body, str(poison.id), headers=crowded)
                await publish_events(amqp, names.exchange, others)
                await wait_until(
                    lambda: len(recorded_ids(settings.run_store)) == len(others), "the others"
                )
                await wait_for_depth(channel, settings.topology.dead_letter_queue, 1)
                stats = await queue_stats(settings.queue, deliveries=len(others) + 1)
                after = await consumer_connection(settings.queue)
    finally:
        await deps.runs.close()

    assert after == before, f"the consumer's connection changed: {before} -> {after}"
    assert (stats["deliver_get"], stats.get("redeliver", 0)) == (len(others) + 1, 0), stats
    logged = check_logs(lines, warned_for={str(poison.id)})
    assert calls[str(poison.id)] == 1, "not retried: its retry copy would not fit"
    assert (outcome(metrics, "retry"), outcome(metrics, "dead_letter")) == (0, 1)
    async with await amqp.channel() as browsing:
        letters = await dead_letters(browsing, settings.topology.dead_letter_queue)
        [letter] = letters.values()
        assert letter.message_id == str(poison.id)
        assert x_death(letter, settings.queue)["reason"] == "rejected"
    print(
        f"retry fallback: frame_max={frame_max} poison attempts={calls[str(poison.id)]} "
        f"others handled={len(others)} reconnects={logged['reconnects']}"
    )
