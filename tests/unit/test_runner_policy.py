"""The runner's settlement policy, without a broker: a fake delivery and fake exchanges."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import hypothesis
import orjson
import pytest
from aiormq.abc import FieldValue
from hypothesis import given
from hypothesis import strategies as st
from pamqp.encode import field_table
from pydantic import BaseModel, ConfigDict

from common.republish import (
    ATTEMPT_HEADER,
    COPIED_HEADERS_LIMIT,
    DEAD_LETTER_HEADERS,
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    HEADER_VALUE_LIMIT,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    SOURCE_QUEUE_HEADER,
    CopyDoesNotFit,
    content_header_size,
    frame_limit,
    republished,
)
from common.stores.runs import RunStoreUnavailable
from common.stores.runs_sqlite import BatchedRunStore, SqliteRunStore, mark_processed_write
from consumers.errors import NonRetryableError, RetryableError
from consumers.handlers import Deps, Handler, HandlerDeps
from consumers.metrics import ConsumerMetrics
from consumers.runner import (
    Decision,
    FrameMax,
    Runner,
    Settlement,
    attempt_of,
)
from consumers.settings import ConsumerSettings
from schemas.events import ConfluenceAppSync
from schemas.registry import EventRegistry, EventType
from tests.support.consumer import padded_headers, wait_until
from tests.support.deliveries import EVENT_NAME, FakeDelivery, FakeExchange, delivery_of
from tests.support.events import sync_event


@pytest.fixture
def settings() -> ConsumerSettings:
    return ConsumerSettings(
        queue="work", dead_letter_exchange="dlx", max_attempts=3, retry_base_delay=0.5
    )


@pytest.fixture
async def runs(tmp_path: Path) -> AsyncIterator[BatchedRunStore]:
    store = BatchedRunStore(tmp_path / "runs.sqlite3")
    yield store
    await store.close()


class Calls:
    def __init__(self) -> None:
        self.events: list[ConfluenceAppSync] = []


def runner_with(
    settings: ConsumerSettings,
    runs: BatchedRunStore,
    handler: Handler | None,
    *,
    frame_max: int = 131_072,  # RabbitMQ's default
    metrics: ConsumerMetrics | None = None,
) -> tuple[Runner, FakeExchange, FakeExchange, list[str]]:
    log: list[str] = []
    handlers = {EVENT_NAME: handler} if handler is not None else {}
    runner = Runner(settings, handlers, Deps(runs=runs), metrics=metrics)
    retry, dead_letter = FakeExchange("retry", log), FakeExchange("dlx", log)
    runner.use_exchanges(
        retry=retry,
        dead_letter=dead_letter,
        events=FakeExchange("events", log),
        frame_max=negotiated(frame_max),
    )
    return runner, retry, dead_letter, log


def negotiated(frame_max: int) -> FrameMax:
    """What the republishing channel's connection would say it negotiated."""

    async def read() -> int:
        return frame_max

    return read


def recording(calls: Calls) -> Handler:
    async def handle(event: ConfluenceAppSync, deps: HandlerDeps) -> None:
        calls.events.append(event)

    return handle


def raising(exc: Exception) -> Handler:
    async def handle(event: ConfluenceAppSync, deps: HandlerDeps) -> None:
        raise exc

    return handle


# --- decide -------------------------------------------------------------------------------


async def test_a_handled_event_is_acked_and_remembered(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    calls = Calls()
    runner, *_ = runner_with(settings, runs, recording(calls))
    event = sync_event()

    decision = await runner.decide(delivery_of(event))

    assert decision == Decision(Settlement.ACK)
    assert [e.id for e in calls.events] == [event.id]
    assert await runs.is_processed(str(event.id))


async def test_a_processed_event_is_a_duplicate_and_the_handler_is_not_called(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    calls = Calls()
    runner, *_ = runner_with(settings, runs, recording(calls))
    event = sync_event()
    await runs.commit([mark_processed_write(str(event.id))])

    decision = await runner.decide(delivery_of(event))

    assert decision.settlement is Settlement.DUPLICATE
    assert calls.events == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'"a string"',
        b'{"v": "1"}',
        b'{"name": "confluence/app.sync", "v": "1", "id": "not-a-uuid"}',
    ],
)
async def test_a_body_that_cannot_be_an_event_is_dead_lettered_as_invalid(
    settings: ConsumerSettings, runs: BatchedRunStore, body: bytes
) -> None:
    calls = Calls()
    runner, *_ = runner_with(settings, runs, recording(calls))

    decision = await runner.decide(FakeDelivery(body=body, message_id=str(uuid.uuid4())))

    assert decision.settlement is Settlement.DEAD_LETTER
    assert decision.reason == "invalid_body"
    assert decision.error
    assert calls.events == []


async def test_an_unknown_event_is_dead_lettered_at_once(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    runner, *_ = runner_with(settings, runs, recording(Calls()))
    body = b'{"name": "jira/app.sync", "v": "1"}'

    decision = await runner.decide(FakeDelivery(body=body))

    assert (decision.settlement, decision.reason) == (Settlement.DEAD_LETTER, "unknown_event")


async def test_an_event_without_a_handler_is_dead_lettered(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    runner, *_ = runner_with(settings, runs, None)

    decision = await runner.decide(delivery_of(sync_event()))

    assert (decision.settlement, decision.reason) == (Settlement.DEAD_LETTER, "no_handler")


async def test_a_non_retryable_error_is_dead_lettered_on_the_first_attempt(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    runner, *_ = runner_with(settings, runs, raising(NonRetryableError("space is gone")))
    event = sync_event()

    decision = await runner.decide(delivery_of(event))

    assert (decision.settlement, decision.reason) == (Settlement.DEAD_LETTER, "handler_rejected")
    assert "space is gone" in decision.error
    assert not await runs.is_processed(str(event.id))


@pytest.mark.parametrize("exc", [RetryableError("later"), RuntimeError("boom")])
async def test_any_other_error_is_retried_while_attempts_remain(
    settings: ConsumerSettings, runs: BatchedRunStore, exc: Exception
) -> None:
    runner, *_ = runner_with(settings, runs, raising(exc))
    event = sync_event()

    decisions = [
        await runner.decide(delivery_of(event, headers={ATTEMPT_HEADER: attempt}))
        for attempt in (1, 2, 3)
    ]

    assert [(d.settlement, d.reason) for d in decisions] == [
        (Settlement.RETRY, "handler_failed"),
        (Settlement.RETRY, "handler_failed"),
        (Settlement.DEAD_LETTER, "retries_exhausted"),
    ]
    assert all(str(exc) in d.error for d in decisions)
    assert not await runs.is_processed(str(event.id))


@pytest.mark.parametrize(
    ("headers", "attempt"),
    [({}, 1), ({ATTEMPT_HEADER: 4}, 4), ({ATTEMPT_HEADER: "4"}, 1), ({ATTEMPT_HEADER: 0}, 1)],
)
def test_the_attempt_comes_from_its_header_and_defaults_to_the_first(
    headers: dict[str, FieldValue], attempt: int
) -> None:
    assert attempt_of(FakeDelivery(body=b"", headers=headers)) == attempt


# --- settle -------------------------------------------------------------------------------


async def test_ack_and_duplicate_only_ack(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    runner, retry, dead_letter, log = runner_with(settings, runs, None)
    for settlement in (Settlement.ACK, Settlement.DUPLICATE):
        delivery = delivery_of(sync_event(), log=log)
        await runner.settle(delivery, Decision(settlement))
    assert log == ["ack", "ack"]
    assert retry.published == dead_letter.published == []


async def test_a_retry_is_confirmed_into_the_attempts_retry_queue_before_the_ack(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    runner, retry, dead_letter, log = runner_with(settings, runs, None)
    event = sync_event()
    delivery = delivery_of(event, headers={ATTEMPT_HEADER: 2, "v": "1"}, log=log)

    await runner.settle(delivery, Decision(Settlement.RETRY, "handler_failed", "boom"))

    assert log == ["publish:retry", "ack"]
    assert dead_letter.published == []
    [(message, routing_key)] = retry.published
    assert routing_key == "work.retry.1000ms" == settings.topology.retry_queue(2)
    assert message.headers[ATTEMPT_HEADER] == 3
    assert message.headers[ROUTING_KEY_HEADER] == "confluence.app.sync"
    assert message.headers[ERROR_HEADER] == "boom"
    assert message.headers["v"] == "1", "the original headers travel along"
    assert message.body == delivery.body
    assert message.message_id == str(event.id)
    assert message.correlation_id == "req-1"
    assert message.delivery_mode.value == 2


async def test_a_retried_message_keeps_its_first_routing_key(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    """Back from a retry queue its routing key is the queue's name; the header has the real one."""
    runner, retry, _, _ = runner_with(settings, runs, None)
    delivery = delivery_of(
        sync_event(),
        routing_key="work",
        headers={ATTEMPT_HEADER: 2, ROUTING_KEY_HEADER: "confluence.app.sync"},
    )

    await runner.settle(delivery, Decision(Settlement.RETRY, "handler_failed", "boom"))

    assert retry.published[0][0].headers[ROUTING_KEY_HEADER] == "confluence.app.sync"


async def test_a_dead_letter_is_confirmed_into_the_dlx_with_its_reason_before_the_ack(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    runner, retry, dead_letter, log = runner_with(settings, runs, None)
    delivery = delivery_of(sync_event(), headers={ATTEMPT_HEADER: 3}, log=log)

    await runner.settle(delivery, Decision(Settlement.DEAD_LETTER, "retries_exhausted", "boom"))

    assert log == ["publish:dlx", "ack"]
    assert retry.published == []
    [(message, routing_key)] = dead_letter.published
    assert routing_key == "work"
    headers = message.headers
    assert headers[REASON_HEADER] == "retries_exhausted"
    assert headers[ERROR_HEADER] == "boom"
    assert headers[ATTEMPT_HEADER] == 3
    assert headers[ROUTING_KEY_HEADER] == "confluence.app.sync"
    assert headers[SOURCE_QUEUE_HEADER] == "work"
    assert isinstance(headers[DEAD_LETTERED_AT_HEADER], int)


@pytest.mark.parametrize("settlement", [Settlement.RETRY, Settlement.DEAD_LETTER])
async def test_a_republish_that_fails_leaves_the_message_unacked(
    settings: ConsumerSettings, runs: BatchedRunStore, settlement: Settlement
) -> None:
    runner, retry, dead_letter, log = runner_with(settings, runs, None)
    retry.fail = dead_letter.fail = True
    delivery = delivery_of(sync_event(), log=log)

    with pytest.raises(ConnectionError):
        await runner.settle(delivery, Decision(settlement, "x", "y"))

    assert log == [], "not acked: the broker will redeliver it"


async def test_two_copies_in_flight_at_once_run_the_handler_once(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    calls = Calls()
    release = asyncio.Event()

    async def slow(event: ConfluenceAppSync, deps: HandlerDeps) -> None:
        calls.events.append(event)
        await release.wait()

    runner, *_ = runner_with(settings, runs, slow)
    event = sync_event()
    first = asyncio.create_task(runner.decide(delivery_of(event)))
    second = asyncio.create_task(runner.decide(delivery_of(event)))
    await asyncio.sleep(0.01)
    release.set()

    decisions = {(await first).settlement, (await second).settlement}
    assert decisions == {Settlement.ACK, Settlement.DUPLICATE}
    assert len(calls.events) == 1


async def test_the_run_store_commits_concurrent_units_of_work_together(
    runs: BatchedRunStore, tmp_path: Path
) -> None:
    recorded = SqliteRunStore(tmp_path / "runs.sqlite3")
    events = [sync_event() for _ in range(100)]

    async def handle(event: ConfluenceAppSync) -> None:
        writes = runs.unit_of_work()
        writes.record_sync(event, received_at=1)
        writes.mark_processed(str(event.id))
        await writes.commit()

    await asyncio.gather(*(handle(e) for e in events))
    assert recorded.count() == 100
    assert all([await runs.is_processed(str(e.id)) for e in events])
    assert 1 <= runs.commits < 10, "one fsync should serve many messages"
    again = runs.unit_of_work()
    again.record_sync(events[0], received_at=2)
    await again.commit()
    assert recorded.count() == 100, "an event id is recorded once"
    run = recorded.get(str(events[0].id))
    recorded.close()
    assert run is not None
    assert run.received_at == 1


async def test_a_failed_commit_reaches_every_waiting_writer(tmp_path: Path) -> None:
    store = BatchedRunStore(tmp_path / "runs.sqlite3")
    await store.close()  # every write now fails inside the worker thread
    results = await asyncio.gather(
        *(store.commit([mark_processed_write(f"id-{n}")]) for n in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, sqlite3.ProgrammingError) for r in results)


async def _arriving_one_by_one(store: BatchedRunStore, count: int) -> None:
    """Writers that arrive a little apart, as deliveries do when events trickle in."""

    async def write(n: int) -> None:
        await asyncio.sleep(0.002 * n)
        await store.commit([mark_processed_write(f"id-{n}")])

    await asyncio.gather(*(write(n) for n in range(count)))


async def test_writers_arriving_within_the_commit_delay_share_one_commit(
    tmp_path: Path,
) -> None:
    # A delay far longer than the test: only a full batch can end the wait early.
    store = BatchedRunStore(tmp_path / "runs.sqlite3", commit_delay=30.0, full_at=10)
    try:
        await asyncio.wait_for(_arriving_one_by_one(store, 10), timeout=10.0)
        assert store.commits == 1
        assert all([await store.is_processed(f"id-{n}") for n in range(10)])
    finally:
        await store.close()


async def test_without_a_commit_delay_writers_arriving_apart_commit_apart(
    tmp_path: Path,
) -> None:
    store = BatchedRunStore(tmp_path / "runs.sqlite3", commit_delay=0.0)
    try:
        await _arriving_one_by_one(store, 10)
        assert store.commits > 1
    finally:
        await store.close()


async def test_a_lone_writer_is_committed_once_the_delay_is_up(tmp_path: Path) -> None:
    store = BatchedRunStore(tmp_path / "runs.sqlite3", commit_delay=0.05, full_at=64)
    try:
        await asyncio.wait_for(store.commit([mark_processed_write("alone")]), timeout=10.0)
        assert await store.is_processed("alone")
        assert store.commits == 1
    finally:
        await store.close()


# --- bounds: no copy the broker cannot take, no error quoting unbounded input -------------


def _marker_cut(text: str) -> int:
    """N from the `…[truncated N bytes]` marker at the end of `text`."""
    match = re.fullmatch(r"(?s).*…\[truncated (\d+) bytes\]", text)
    assert match is not None, text[-60:]
    return int(match.group(1))


@pytest.mark.parametrize("settlement", [Settlement.RETRY, Settlement.DEAD_LETTER])
async def test_a_long_error_is_cut_to_the_header_limit_with_a_marker(
    settings: ConsumerSettings, runs: BatchedRunStore, settlement: Settlement
) -> None:
    runner, retry, dead_letter, log = runner_with(settings, runs, None)
    error = "é" * 100_000  # 200,000 bytes of UTF-8
    delivery = delivery_of(sync_event(), log=log)

    await runner.settle(delivery, Decision(settlement, "handler_failed", error))

    [(message, _)] = retry.published + dead_letter.published
    sent = message.headers[ERROR_HEADER]
    assert isinstance(sent, str)
    assert len(sent.encode()) <= HEADER_VALUE_LIMIT
    kept = sent[: sent.index("…[")]
    assert error.startswith(kept), "cut at a character boundary"
    assert len(kept.encode()) + _marker_cut(sent) == len(error.encode())
    assert log[-1] == "ack"


@pytest.mark.parametrize("settlement", [Settlement.RETRY, Settlement.DEAD_LETTER])
async def test_the_delivery_headers_may_take_the_copied_budget_and_not_a_byte_more(
    settings: ConsumerSettings, runs: BatchedRunStore, settlement: Settlement
) -> None:
    runner, retry, dead_letter, log = runner_with(settings, runs, None)
    fits = delivery_of(sync_event(), headers=padded_headers(COPIED_HEADERS_LIMIT), log=log)
    over = delivery_of(sync_event(), headers=padded_headers(COPIED_HEADERS_LIMIT + 1), log=log)

    await runner.settle(fits, Decision(settlement, "handler_failed", "boom"))
    [(message, _)] = retry.published + dead_letter.published
    assert message.headers["x-padding"] == fits.headers["x-padding"], "copied whole"
    assert log == [f"publish:{'retry' if settlement is Settlement.RETRY else 'dlx'}", "ack"]

    log.clear()
    await runner.settle(over, Decision(settlement, "handler_failed", "boom"))
    assert log == ["reject(requeue=False)"], "left to the broker's dead-lettering"
    assert len(retry.published + dead_letter.published) == 1, "nothing more published"


def test_the_copied_headers_are_measured_as_pamqp_encodes_them() -> None:
    """Our own headers (replaced in the copy) and those a copy drops do not count."""
    headers = {**padded_headers(COPIED_HEADERS_LIMIT), ERROR_HEADER: "x" * 50_000, "v": "1"}
    delivery = FakeDelivery(body=b"{}", headers=headers)

    with pytest.raises(CopyDoesNotFit, match=r"take 66414 bytes, over the 16384"):
        republished(delivery, {}, frame_max=131_072)
    copy = republished(delivery, {ERROR_HEADER: "short"}, frame_max=131_072, without={"v"})
    assert copy.headers[ERROR_HEADER] == "short"
    assert len(field_table(copy.headers)) > COPIED_HEADERS_LIMIT, "ours come on top"


async def test_a_copy_over_the_frame_limit_is_left_to_the_broker(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    # 4 KiB of headers fit the copied budget, but not a broker that negotiated frame_max 4096.
    headers = padded_headers(4096)
    small, _, small_dlx, small_log = runner_with(settings, runs, None, frame_max=4096)
    usual, _, usual_dlx, _ = runner_with(settings, runs, None, frame_max=131_072)
    unlimited, _, unlimited_dlx, _ = runner_with(settings, runs, None, frame_max=0)
    decision = Decision(Settlement.DEAD_LETTER, "invalid_body", "boom")

    await small.settle(delivery_of(sync_event(), headers=headers, log=small_log), decision)
    await usual.settle(delivery_of(sync_event(), headers=headers), decision)
    await unlimited.settle(delivery_of(sync_event(), headers=headers), decision)

    assert small_log == ["reject(requeue=False)"]
    assert small_dlx.published == []
    [(copy, _)] = usual_dlx.published
    assert content_header_size(copy) <= (frame_limit(131_072) or 0)
    assert len(unlimited_dlx.published) == 1, "frame_max 0: the broker set no limit"


async def test_headers_that_cannot_be_encoded_again_are_left_to_the_broker(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    """pamqp decodes a long string that is not UTF-8 to bytes, and cannot encode bytes."""
    runner, retry, dead_letter, log = runner_with(settings, runs, None)
    headers: dict[str, FieldValue] = {"x-binary": b"\xff\xfe"}
    delivery = delivery_of(sync_event(), headers=headers, log=log)

    await runner.settle(delivery, Decision(Settlement.RETRY, "handler_failed", "boom"))

    assert log == ["reject(requeue=False)"]
    assert retry.published == dead_letter.published == []


@pytest.mark.parametrize("settlement", [Settlement.RETRY, Settlement.DEAD_LETTER])
async def test_the_fallback_says_why_in_one_warning_and_counts_a_dead_letter(
    settings: ConsumerSettings,
    runs: BatchedRunStore,
    settlement: Settlement,
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = ConsumerMetrics()
    runner, _, _, log = runner_with(settings, runs, None, metrics=metrics)
    headers = padded_headers(120_000)
    delivery = delivery_of(sync_event(), headers=headers, log=log)

    with caplog.at_level(logging.INFO, logger="consumers"):
        await runner.settle(delivery, Decision(settlement, "handler_failed", "é" * 100_000))

    assert log == ["reject(requeue=False)"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in warnings] == ["WARNING"]
    [warning] = warnings
    assert warning.exc_info is None
    assert "would not fit" in warning.getMessage()
    assert len(warning.getMessage().encode()) < 1024
    sample = metrics.registry.get_sample_value
    assert sample("syncgate_consumer_messages_total", {"outcome": "dead_letter"}) == 1
    assert sample("syncgate_consumer_messages_total", {"outcome": settlement.value}) == (
        1 if settlement is Settlement.DEAD_LETTER else 0
    )


async def test_an_unknown_name_of_200_kb_is_quoted_cut(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    runner, *_ = runner_with(settings, runs, recording(Calls()))
    body = orjson.dumps({"name": "n" * 200_000, "v": "1"})

    decision = await runner.decide(FakeDelivery(body=body))

    assert (decision.settlement, decision.reason) == (Settlement.DEAD_LETTER, "unknown_event")
    assert len(decision.error) < 300, decision.error
    assert "truncated 199900 characters" in decision.error


async def test_a_validation_error_quotes_no_key_of_the_body_unbounded(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    runner, *_ = runner_with(settings, runs, recording(Calls()))
    event = sync_event().model_dump(mode="json")
    huge = {**event, "é" * 500_000: True, **{f"extra{n}": n for n in range(30)}}

    decision = await runner.decide(FakeDelivery(body=orjson.dumps(huge)))

    assert decision.reason == "invalid_body"
    assert len(decision.error.encode()) < HEADER_VALUE_LIMIT * 2, len(decision.error)
    assert decision.error.startswith("31 validation errors for confluence/app.sync v1: ")
    assert "Extra inputs are not permitted" in decision.error
    assert decision.error.endswith("; and 21 more")


async def test_a_handler_failure_is_logged_cut(
    settings: ConsumerSettings, runs: BatchedRunStore, caplog: pytest.LogCaptureFixture
) -> None:
    runner, *_ = runner_with(settings, runs, raising(RuntimeError("x" * 100_000)))

    with caplog.at_level(logging.WARNING, logger="consumers.runner"):
        decision = await runner.decide(delivery_of(sync_event()))

    assert decision.settlement is Settlement.RETRY
    [record] = caplog.records
    assert len(record.getMessage().encode()) <= HEADER_VALUE_LIMIT + 64


_header_values = st.one_of(st.text(max_size=3000), st.integers(-(2**63), 2**63 - 1), st.booleans())


@given(
    delivered=st.dictionaries(st.text(min_size=1, max_size=20), _header_values, max_size=12),
    ours=st.dictionaries(
        st.sampled_from(sorted(DEAD_LETTER_HEADERS - {"x-death"})), _header_values, max_size=6
    ),
    frame_max=st.sampled_from([0, 4096, 8192, 32_768, 131_072]),
)
@hypothesis.settings(max_examples=200, deadline=None)
def test_a_copy_is_within_every_bound_or_it_is_not_made(
    delivered: dict[str, FieldValue], ours: dict[str, FieldValue], frame_max: int
) -> None:
    delivery = FakeDelivery(body=b"{}", headers=delivered, message_id="m-1")
    try:
        copy = republished(delivery, ours, frame_max=frame_max)
    except CopyDoesNotFit:
        return
    kept = {k: v for k, v in delivered.items() if k not in ours}
    assert len(field_table(kept)) <= COPIED_HEADERS_LIMIT
    for key, value in ours.items():
        sent = copy.headers[key]
        if isinstance(value, str):
            assert isinstance(sent, str)
            assert len(sent.encode()) <= HEADER_VALUE_LIMIT
            if len(value.encode()) <= HEADER_VALUE_LIMIT:
                assert sent == value
        else:
            assert sent == value
    limit = frame_limit(frame_max)
    assert limit is None or content_header_size(copy) <= limit


# --- the run store unavailable ----------------------------------------------------------


class UnavailableStore:
    """A run store that is down until `up` is set; `probes` counts the probes."""

    def __init__(self) -> None:
        self.up = False
        self.probes = 0

    async def start(self) -> None:
        pass

    async def probe(self) -> None:
        self.probes += 1
        if not self.up:
            raise RunStoreUnavailable("the run store postgresql://u:***@db/x cannot be reached")

    async def is_processed(self, event_id: str) -> bool:
        await self.probe()
        return False

    async def claim(self, event_id: str) -> None:
        await self.probe()

    async def close(self) -> None:
        pass


async def test_a_store_outage_hands_the_message_back_and_pauses_until_the_store_answers(
    settings: ConsumerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    store = UnavailableStore()
    calls = Calls()
    metrics = ConsumerMetrics()
    runner = Runner(settings, {EVENT_NAME: recording(calls)}, Deps(runs=store), metrics=metrics)
    log: list[str] = []
    retry, dead_letter = FakeExchange("retry", []), FakeExchange("dlx", [])
    runner.use_exchanges(
        retry=retry,
        dead_letter=dead_letter,
        events=FakeExchange("events", []),
        frame_max=negotiated(131_072),
    )

    with caplog.at_level(logging.INFO, logger="consumers"):
        decisions = [await runner.decide(delivery_of(sync_event())) for _ in range(3)]
        assert value(metrics, "syncgate_consumer_paused") == 1
        for decision in decisions:
            await runner.settle(delivery_of(sync_event(), log=log), decision)
        store.up = True
        await wait_until(lambda: value(metrics, "syncgate_consumer_paused") == 0, "the resume")

    assert {(d.settlement, d.reason) for d in decisions} == {
        (Settlement.HAND_BACK, "run_store_unavailable")
    }
    assert log == ["reject(requeue=True)"] * 3, "handed back, never acked"
    assert retry.published == dead_letter.published == [], "not a handler failure"
    assert calls.events == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning for the pause, not one per message"
    assert "consuming paused" in warnings[0].getMessage()
    assert any("consuming resumed" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert value(metrics, "syncgate_consumer_messages_total", outcome="hand_back") == 3


def value(metrics: ConsumerMetrics, name: str, **labels: str) -> float:
    sample = metrics.registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


# --- versions -------------------------------------------------------------------------------


class _SyncV2Fixture(BaseModel):
    """Not a product event: a second version of the sync event, for this test only."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: uuid.UUID
    name: Literal["confluence/app.sync"]
    v: Literal["2"]
    reason: str


async def test_each_version_of_an_event_is_validated_by_its_own_model(
    settings: ConsumerSettings, runs: BatchedRunStore
) -> None:
    registry = EventRegistry(
        EventType(name=EVENT_NAME, v="1", model=ConfluenceAppSync),
        EventType(name=EVENT_NAME, v="2", model=_SyncV2Fixture),
    )
    seen: list[object] = []

    async def handle(event: object, deps: HandlerDeps) -> None:
        seen.append(event)

    runner = Runner(settings, {EVENT_NAME: handle}, Deps(runs=runs), registry=registry)
    runner.use_exchanges(
        retry=FakeExchange("retry", []),
        dead_letter=FakeExchange("dlx", []),
        events=FakeExchange("events", []),
        frame_max=negotiated(131_072),
    )
    v1 = sync_event()
    v2 = {"id": str(uuid.uuid4()), "name": EVENT_NAME, "v": "2", "reason": "manual"}
    v1_with_v2_field = {**orjson.loads(sync_event().model_dump_json()), "reason": "manual"}

    assert await runner.decide(delivery_of(v1)) == Decision(Settlement.ACK)
    assert await runner.decide(FakeDelivery(body=orjson.dumps(v2), message_id=v2["id"])) == (
        Decision(Settlement.ACK)
    )
    refused = await runner.decide(
        FakeDelivery(body=orjson.dumps(v1_with_v2_field), message_id=str(uuid.uuid4()))
    )

    assert [type(event) for event in seen] == [ConfluenceAppSync, _SyncV2Fixture]
    assert (refused.settlement, refused.reason) == (Settlement.DEAD_LETTER, "invalid_body")
