"""The consumer's metrics endpoint, without a broker (the DLQ sampler is off)."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import unused_port

from consumers.metrics import OUTCOMES, ConsumerMetrics, serve_metrics
from consumers.runner import Settlement
from consumers.settings import ConsumerSettings


def settings(port: int) -> ConsumerSettings:
    return ConsumerSettings(
        metrics_port=port, metrics_dlq_interval=0, run_store=Path("unused.sqlite3")
    )


async def scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


def test_the_outcome_labels_are_the_settlements() -> None:
    assert set(OUTCOMES) == {settlement.value for settlement in Settlement}


async def test_a_busy_port_costs_the_metrics_not_the_consumer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = unused_port()
    first, second = ConsumerMetrics(), ConsumerMetrics()
    first.settled("ack")
    async with serve_metrics(first, settings(port)):
        with caplog.at_level(logging.ERROR, logger="consumers.metrics"):
            async with serve_metrics(second, settings(port)):
                # The first process still answers, with its own counts.
                assert 'syncgate_consumer_messages_total{outcome="ack"} 1.0' in await scrape(port)
    assert f"cannot serve metrics on 127.0.0.1:{port}" in caplog.text


def test_the_dlq_depth_is_absent_until_sampled() -> None:
    # A 0 before anyone looked would read as an empty DLQ.
    metrics = ConsumerMetrics()
    assert "syncgate_dlq_messages{" not in metrics.exposition().decode()
    metrics.dlq_messages.labels(queue="work.dlq").set(3)
    assert 'syncgate_dlq_messages{queue="work.dlq"} 3.0' in metrics.exposition().decode()
