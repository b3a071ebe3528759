"""The completed event: published after the commit, before the ack; a failure never changes
how the sync itself is settled."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aio_pika.abc import AbstractMessage

from common.cloudevents import event_time
from common.stores.runs_sqlite import BatchedRunStore, SqliteRunReader
from consumers.bootstrap import HANDLERS
from consumers.handlers import Deps
from consumers.metrics import ConsumerMetrics
from consumers.runner import Runner, Settlement
from consumers.settings import ConsumerSettings
from schemas.sync_completed import ConfluenceAppSyncCompleted
from tests.support.deliveries import FakeExchange, delivery_of
from tests.support.events import sync_event


class FlakyExchange:
    """Fails the first `failures` publishes as a dropped connection would; records all."""

    def __init__(self, log: list[str], failures: int) -> None:
        self.log = log
        self.failures = failures
        self.tried: list[tuple[AbstractMessage, str]] = []

    async def publish(
        self, message: AbstractMessage, routing_key: str, *, mandatory: bool = True
    ) -> object:
        assert mandatory
        self.tried.append((message, routing_key))
        if len(self.tried) <= self.failures:
            raise ConnectionError("the broker went away")
        self.log.append("publish:events")
        return None


@pytest.fixture
async def runs(tmp_path: Path) -> AsyncIterator[BatchedRunStore]:
    store = BatchedRunStore(tmp_path / "runs.sqlite3")
    yield store
    await store.close()


def runner_for(
    runs: BatchedRunStore, events: FlakyExchange, log: list[str]
) -> tuple[Runner, ConsumerMetrics]:
    settings = ConsumerSettings(queue="work", follow_up_attempts=3, follow_up_timeout=1.0)
    metrics = ConsumerMetrics()
    runner = Runner(settings, HANDLERS, Deps(runs=runs), metrics=metrics)
    runner.use_exchanges(
        retry=FakeExchange("retry", log),
        dead_letter=FakeExchange("dlx", log),
        events=events,
        frame_max=_frame_max,
    )
    return runner, metrics


async def _frame_max() -> int:
    return 131_072


def count(metrics: ConsumerMetrics, outcome: str) -> float:
    sample = metrics.registry.get_sample_value(
        "syncgate_consumer_follow_ups_total", {"outcome": outcome}
    )
    return 0.0 if sample is None else sample


async def test_a_recorded_sync_is_announced_after_its_commit_and_before_its_ack(
    runs: BatchedRunStore, tmp_path: Path
) -> None:
    log: list[str] = []
    events = FlakyExchange(log, failures=0)
    runner, metrics = runner_for(runs, events, log)
    sync = sync_event("data")
    delivery = delivery_of(sync, log=log)

    decision = await runner.decide(delivery)
    assert decision.settlement is Settlement.ACK
    # Committed before anything is published: another process can read it.
    reader = SqliteRunReader(tmp_path / "runs.sqlite3")
    run = await reader.get(str(sync.id))
    await reader.close()
    assert run is not None
    assert events.tried == []
    await runner.settle(delivery, decision)

    assert log == ["publish:events", "ack"]
    [(message, routing_key)] = events.tried
    assert routing_key == "confluence.app.sync.completed"
    completed = ConfluenceAppSyncCompleted.model_validate_json(message.body)
    assert completed.data.syncId == str(sync.id)
    assert completed.data.receivedAt == run.received_at
    assert completed.user == sync.user
    assert message.message_id == completed.id
    assert message.type == "confluence/app.sync.completed"
    assert message.correlation_id == delivery.correlation_id
    assert message.headers == {
        "v": "1",
        "cloudEvents:specversion": "1.0",
        "cloudEvents:id": completed.id,
        "cloudEvents:source": "urn:syncgate:consumer",
        "cloudEvents:type": "confluence/app.sync.completed",
        "cloudEvents:time": event_time(completed.ts),
        "cloudEvents:dataschema": (
            "urn:syncgate:schema:confluence.app.sync.completed.v1.schema.json"
        ),
        "cloudEvents:subject": "u-ada",
    }
    assert message.content_type == "application/json"
    assert orjson.loads(message.body)["name"] == "confluence/app.sync.completed"
    assert count(metrics, "confirmed") == 1


async def test_a_failed_try_is_retried_with_the_same_event_id(runs: BatchedRunStore) -> None:
    log: list[str] = []
    events = FlakyExchange(log, failures=2)
    runner, metrics = runner_for(runs, events, log)
    delivery = delivery_of(sync_event(), log=log)
    await runner.settle(delivery, await runner.decide(delivery))
    assert log == ["publish:events", "ack"]
    assert len(events.tried) == 3
    assert len({message.message_id for message, _ in events.tried}) == 1
    assert count(metrics, "confirmed") == 1


async def test_a_follow_up_that_never_confirms_is_a_warning_and_the_sync_is_still_acked(
    runs: BatchedRunStore, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    events = FlakyExchange(log, failures=100)
    runner, metrics = runner_for(runs, events, log)
    sync = sync_event()
    delivery = delivery_of(sync, log=log)
    with caplog.at_level(logging.INFO, logger="consumers"):
        await runner.settle(delivery, await runner.decide(delivery))
    assert log == ["ack"]
    assert len(events.tried) == 3
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.levelno == logging.WARNING
    assert "gave up publishing the follow-up" in warning.getMessage()
    assert count(metrics, "failed") == 1
    assert await runs.is_processed(str(sync.id))


async def test_a_duplicate_announces_nothing(runs: BatchedRunStore) -> None:
    log: list[str] = []
    events = FlakyExchange(log, failures=0)
    runner, _ = runner_for(runs, events, log)
    sync = sync_event()
    first = delivery_of(sync, log=log)
    await runner.settle(first, await runner.decide(first))
    again = delivery_of(sync, log=log)
    decision = await runner.decide(again)
    assert decision.settlement is Settlement.DUPLICATE
    await runner.settle(again, decision)
    assert log == ["publish:events", "ack", "ack"]
