"""Helpers for the consumer's real-broker tests: events, confirmed publishes, a running Runner,
and the consumer as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, HeadersType
from pamqp.encode import field_table
from pydantic import SecretStr

from common.stores.runs import Run
from common.stores.runs_sqlite import SqliteRunStore
from consumers.bootstrap import HANDLERS, build_deps
from consumers.handlers import Deps, Handler
from consumers.metrics import ConsumerMetrics, serve_metrics
from consumers.runner import Runner
from consumers.settings import ConsumerSettings
from gateway.message_properties import message_properties
from gateway.publisher import message_body
from schemas.events import ConfluenceAppSync
from schemas.registry import routing_key_for
from tests.conftest import AMQP_URL
from tests.support.broker import broker_stopped, rabbitmqctl

EVENT_NAME = "confluence/app.sync"
ROUTING_KEY = routing_key_for(EVENT_NAME)
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


async def publish_event(
    channel: AbstractChannel, exchange_name: str, event: ConfluenceAppSync, correlation_id: str
) -> None:
    """The gateway's message (same body and properties), confirmed by the broker."""
    underlay = await channel.get_underlay_channel()
    await underlay.basic_publish(
        message_body(event),
        exchange=exchange_name,
        routing_key=ROUTING_KEY,
        properties=message_properties(event, correlation_id=correlation_id),
        mandatory=True,
    )


async def publish_events(
    connection: AbstractConnection, exchange_name: str, events: Iterable[ConfluenceAppSync]
) -> None:
    """Publish persistently and return once the broker confirmed every one."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    async with channel:
        batch = [publish_event(channel, exchange_name, e, "test") for e in events]
        for start in range(0, len(batch), 200):
            await asyncio.gather(*batch[start : start + 200])


async def publish_raw(
    connection: AbstractConnection,
    exchange_name: str,
    body: bytes,
    message_id: str,
    *,
    headers: HeadersType | None = None,
) -> None:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    async with channel:
        exchange = await channel.get_exchange(exchange_name)
        message = aio_pika.Message(
            body=body,
            headers=headers,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
        )
        await exchange.publish(message, ROUTING_KEY, mandatory=True)


def padded_headers(table_bytes: int, name: str = "x-padding") -> HeadersType:
    """One header whose table is `table_bytes` long as pamqp encodes it on the wire."""
    overhead = len(field_table({name: ""}))
    headers: HeadersType = {name: "p" * (table_bytes - overhead)}
    assert len(field_table(headers)) == table_bytes
    return headers


async def depth(channel: AbstractChannel, queue: str) -> int:
    """Ready messages now. Not `declare_queue(passive=True)`: a robust channel caches that."""
    underlay = await channel.get_underlay_channel()
    declared = await underlay.queue_declare(queue, passive=True)
    return declared.message_count or 0


async def wait_until(
    predicate: Callable[[], bool], what: str, *, within: float = 30.0, every: float = 0.05
) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)


async def wait_for_depth(
    channel: AbstractChannel, queue: str, n: int, *, within: float = 30.0
) -> None:
    deadline = time.monotonic() + within
    while (current := await depth(channel, queue)) != n:
        assert time.monotonic() < deadline, f"{queue} holds {current}, expected {n}"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(
    settings: ConsumerSettings,
    handlers: dict[str, Handler],
    deps: Deps,
    *,
    metrics: ConsumerMetrics | None = None,
) -> AsyncIterator[Runner]:
    """An in-process Runner, consuming inside the block and drained after it."""
    stop = asyncio.Event()
    runner = Runner(settings, handlers, deps, metrics=metrics)
    task = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(runner.consuming.wait(), 30)
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def running_consumer(settings: ConsumerSettings) -> AsyncIterator[Runner]:
    """A real runner on the test's queue, its metrics served on settings.metrics_port."""
    deps = build_deps(settings)
    metrics = ConsumerMetrics()
    try:
        async with (
            serve_metrics(metrics, settings),
            running(settings, HANDLERS, deps, metrics=metrics) as runner,
        ):
            yield runner
    finally:
        await deps.runs.close()


def consumer_env(settings: ConsumerSettings) -> dict[str, str]:
    """The same settings as SYNCGATE_* variables, for a consumer process."""
    return {
        **os.environ,
        "SYNCGATE_AMQP_URL": settings.amqp_url.get_secret_value(),
        "SYNCGATE_EXCHANGE": settings.exchange,
        "SYNCGATE_UNROUTED_EXCHANGE": settings.unrouted_exchange,
        "SYNCGATE_QUEUE": settings.queue,
        "SYNCGATE_DEAD_LETTER_EXCHANGE": settings.dead_letter_exchange,
        "SYNCGATE_RUN_STORE": settings.run_store.get_secret_value(),
        "SYNCGATE_PREFETCH": str(settings.prefetch),
        "SYNCGATE_MAX_ATTEMPTS": str(settings.max_attempts),
        "SYNCGATE_RETRY_BASE_DELAY": str(settings.retry_base_delay),
        "SYNCGATE_LOG_FORMAT": "console",
    }


async def start_consumer(
    settings: ConsumerSettings,
    log_file: Path,
    *,
    module: str = "consumers",
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """`python -m consumers` (or another module) as its own process, from the repository's
    root, with these settings (and `env` on top); its log lines go to `log_file`."""
    with log_file.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            str(BIN / "python"),
            "-m",
            module,
            env={**consumer_env(settings), **(env or {})},
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )


async def syncgate(settings: ConsumerSettings, *args: str) -> tuple[int, str]:
    """Run the `syncgate` command with these settings; its exit code and output."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / "syncgate"),
        *args,
        env=consumer_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode()


def sqlite_path(run_store: SecretStr | Path) -> Path:
    """The SQLite file of a SYNCGATE_RUN_STORE setting (or the path itself)."""
    return Path(run_store.get_secret_value()) if isinstance(run_store, SecretStr) else run_store


def recorded_ids(run_store: SecretStr | Path) -> list[str]:
    """Every event id in the run store's `runs` table (read-only, beside a running consumer)."""
    run_store = sqlite_path(run_store)
    if not run_store.exists():
        return []
    with contextlib.closing(sqlite3.connect(run_store, timeout=5)) as db:
        try:
            return [row[0] for row in db.execute("SELECT event_id FROM runs")]
        except sqlite3.OperationalError:  # the consumer has not created its tables yet
            return []


def stored_run(run_store: SecretStr | Path, event_id: str) -> Run | None:
    """The run recorded for this event id, or None (read beside a running consumer)."""
    run_store = sqlite_path(run_store)
    if not run_store.exists():
        return None
    store = SqliteRunStore(run_store)
    try:
        return store.get(event_id)
    finally:
        store.close()


def processed_ids(run_store: SecretStr | Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(sqlite_path(run_store), timeout=5)) as db:
        return [row[0] for row in db.execute("SELECT event_id FROM processed_events")]


async def connect_when_up(within: float = 90.0) -> AbstractConnection:
    """A plain connection, once the broker accepts one again (after a restart)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await aio_pika.connect(AMQP_URL, timeout=5)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError):
            assert time.monotonic() < deadline, "the broker did not come back"
            await asyncio.sleep(0.5)


async def restart_broker() -> None:
    """stop_app, then start_app (always, in a finally); once more if a teammate's restart
    was under way and rabbitmqctl refused."""
    for attempt in (1, 2):
        try:
            async with broker_stopped():
                await asyncio.sleep(0.5)
            return
        except RuntimeError:
            if attempt == 2:
                raise
            await rabbitmqctl("await_startup")
