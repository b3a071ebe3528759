"""A whole bench run: start everything, measure in interleaved rounds, report, clean up."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import aiohttp
from aio_pika.abc import AbstractConnection

from bench import report
from bench.load import offer_load, sign_in
from bench.measure import Row, consume_ceiling, consumer_drain, measure_http, publish_ceiling
from bench.procs import Child, broker_process, rss_of
from bench.systems import (
    HttpSystem,
    declare_ceiling_topology,
    node_peer_missing,
    start_ceiling_server,
    start_node_peer,
    start_peer,
    start_syncgate,
    start_syncgate_consumer,
)
from bench.workspace import AMQP_URL, BENCH_EMAIL, BENCH_PASSWORD, Workspace, delete_topology

RESULTS = Path(__file__).with_name("results")


@dataclass(frozen=True, slots=True)
class Plan:
    concurrencies: tuple[int, ...] = (1, 16, 64, 256)
    duration: float = 5.0
    rounds: int = 3
    workers: tuple[int, ...] = (1, 2)
    prefetch: int = 64
    peer: bool = True
    node_peer: bool = True
    use_wrk: bool = True
    soak: float = 0.0

    @property
    def target_c(self) -> int:
        return 64 if 64 in self.concurrencies else max(self.concurrencies)


def peer_installed() -> bool:
    return all(importlib.util.find_spec(m) for m in ("fastapi", "faststream", "uvicorn"))


def node_peer_installed() -> bool:
    """`node` is on the PATH and bench/node_peer's packages are installed (see systems.py)."""
    return node_peer_missing() is None


@contextlib.asynccontextmanager
async def bench_broker(workspace: Workspace) -> AsyncIterator[AbstractConnection]:
    connection = await aio_pika.connect(AMQP_URL, client_properties={"connection_name": "bench"})
    try:
        yield connection
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
        try:
            deleted = await delete_topology(workspace.prefix)
        except (aiohttp.ClientError, OSError) as exc:
            # Never hide the run's own error behind this one; say what is left behind.
            print(f"[bench] could not delete {workspace.prefix}.* ({exc}); delete them by hand")
        else:
            print(f"[bench] deleted {len(deleted)} queues and exchanges named {workspace.prefix}.*")


async def run(plan: Plan) -> list[Row]:
    workspace = Workspace.create()
    children: list[Child] = []
    try:
        async with bench_broker(workspace) as connection:
            try:
                return await _run(plan, workspace, connection, children)
            finally:
                # Before the names are deleted: a live consumer would declare its queue again.
                for child in reversed(children):
                    child.stop()
    finally:
        workspace.remove_files()


async def _run(
    plan: Plan, workspace: Workspace, connection: AbstractConnection, children: list[Child]
) -> list[Row]:
    say = print
    channel = await connection.channel()
    say(f"[bench] starting; names {workspace.prefix}.*, logs in {workspace.root}")
    consumer = await start_syncgate_consumer(workspace, connection)
    children.append(consumer)
    systems: list[HttpSystem] = []
    for workers in plan.workers:
        system = await start_syncgate(workspace, consumer, workers=workers)
        children.extend(system.servers)
        systems.append(system)
    login_url = f"http://127.0.0.1:{systems[0].port}"
    credentials = await sign_in(login_url, BENCH_EMAIL, BENCH_PASSWORD)
    say(f"[bench] signed in; CSRF token {'sent' if credentials.csrf_token else 'not in use'}")
    if plan.soak:
        await soak(systems[0], plan, credentials_url=systems[0].url, credentials=credentials)
        return []
    if plan.peer:
        peer = await start_peer(workspace, connection, plan.prefetch)
        children.extend(peer.children)
        systems.append(peer)
    drained = [systems[0]]
    if plan.node_peer:
        node_peer = await start_node_peer(workspace, connection, plan.prefetch)
        children.extend(node_peer.children)
        systems.append(node_peer)
        drained.append(node_peer)
    for kind in ("static", "session"):
        ceiling = await start_ceiling_server(workspace, kind)
        children.extend(ceiling.servers)
        systems.append(ceiling)
    ceiling_exchange = await declare_ceiling_topology(channel, workspace)
    broker = broker_process(urlsplit(AMQP_URL).port or 5672)
    loadgen = "wrk" if plan.use_wrk else "the Python load generator (wrk not found)"
    say(f"[bench] load from {loadgen}; {plan.rounds} round(s) of {plan.duration:g}s per point")

    rows: list[Row] = []
    # Target (4) asks whether a second worker helps where the consumer and broker are not
    # the limit. On a small machine the consumer takes cores from the gateway, so each round
    # also measures the gateways at the target concurrency with the consumer paused.
    scaling = systems[: len(plan.workers)] if len(plan.workers) > 1 else []
    # Progress on every point's line: a full run takes minutes, and the table comes at the end.
    total_points = plan.rounds * (len(plan.concurrencies) * len(systems) + len(scaling))
    done_points = 0
    started = time.monotonic()

    async def point(
        round_no: int, system: HttpSystem, concurrency: int, *, pause_consumers: bool
    ) -> None:
        nonlocal done_points
        # A browser stores the renewed cookie the gateway sends once a minute; wrk keeps the
        # one it was given, which from then on asks for a renewal (a new encryption and a
        # Set-Cookie) on every request. A fresh sign-in per point keeps the cookie as young
        # as a browser's.
        credentials = await sign_in(login_url, BENCH_EMAIL, BENCH_PASSWORD)
        row = await measure_http(
            system,
            concurrency=concurrency,
            duration=plan.duration,
            credentials=credentials,
            use_wrk=plan.use_wrk,
            channel=channel,
            broker=broker,
            pause_consumers=pause_consumers,
        )
        rows.append(row)
        done_points += 1
        left = (time.monotonic() - started) / done_points * (total_points - done_points)
        say(
            f"[bench] {done_points}/{total_points} (~{left / 60:.0f} min left) "
            f"round {round_no + 1} {row.system} c={concurrency}: "
            f"{row.rate:,.0f} req/s, p99 {row.p99_ms or 0:.1f} ms, {row.failed} failed"
        )

    for round_no in range(plan.rounds):
        # Rotate the order each round, so drift and warm-up hit every system alike.
        for concurrency in plan.concurrencies:
            for system in rotated(systems, round_no):
                await point(round_no, system, concurrency, pause_consumers=False)
            c_row, published = await publish_ceiling(
                ceiling_exchange, concurrency=concurrency, duration=plan.duration, broker=broker
            )
            rows.append(c_row)
            rows.append(
                await consume_ceiling(
                    workspace.name("ceiling.work"),
                    prefetch=plan.prefetch,
                    expect=published,
                    broker=broker,
                )
            )
        for system in rotated(scaling, round_no):
            await point(round_no, system, plan.target_c, pause_consumers=True)
        # Each consumer on a backlog, to compare with D (and syncgate's with the Node peer's).
        for system in rotated(drained, round_no):
            assert system.exchange is not None
            drain = await consumer_drain(
                system,
                system.exchange,
                concurrency=plan.target_c,
                duration=plan.duration,
                prefetch=plan.prefetch,
                channel=channel,
                broker=broker,
            )
            if drain is not None:
                rows.append(drain)
    return rows


def rotated(systems: list[HttpSystem], by: int) -> list[HttpSystem]:
    """The list started `by` places later (and wrapped around); empty stays empty."""
    if not systems:
        return []
    by %= len(systems)
    return systems[by:] + systems[:by]


async def soak(
    system: HttpSystem, plan: Plan, *, credentials_url: str, credentials: object
) -> None:
    """Moderate load for `plan.soak` seconds, sampling the gateway's RSS every few seconds."""
    from bench.load import Credentials

    assert isinstance(credentials, Credentials)
    concurrency = 16
    interval = max(1.0, min(5.0, plan.soak / 12))
    load = asyncio.create_task(
        offer_load(
            credentials_url,
            concurrency=concurrency,
            duration=plan.soak,
            credentials=credentials,
            use_wrk=plan.use_wrk,
        )
    )
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    while not load.done():
        samples.append((time.monotonic() - started, rss_of(system.servers) / 2**20))
        await asyncio.wait([load], timeout=interval)
    result = await load
    print(f"[soak] {plan.soak:g}s at c={concurrency}: {result.rate:,.0f} req/s, "
          f"{result.failed} failed; gateway RSS samples:")  # fmt: skip
    for at, mb in samples:
        print(f"[soak]   {at:6.1f}s  {mb:8.1f} MB")
    print(f"[soak] {settled_verdict([mb for _, mb in samples])}")


def settled_verdict(rss_mb: list[float]) -> str:
    """Settled when the second half of the samples grows by less than 5% and 8 MB."""
    if len(rss_mb) < 4:
        return "too few samples to tell whether RSS settled"
    half = rss_mb[len(rss_mb) // 2 :]
    growth = max(half) - half[0]
    if growth < 8 and growth < 0.05 * half[0]:
        return f"settled: the second half grew {growth:.1f} MB (from {half[0]:.1f} MB)"
    return f"NOT settled: the second half grew {growth:.1f} MB (from {half[0]:.1f} MB)"


def print_report(rows: list[Row], plan: Plan) -> None:
    medians = report.median_rows(rows)
    print()
    print(f"medians of {plan.rounds} round(s), {plan.duration:g}s per point:")
    print(report.table(medians))
    print()
    for line in report.ratios(medians, target_c=plan.target_c):
        print(line)
    if plan.node_peer:
        for line in report.node_peer_comparison(medians, target_c=plan.target_c):
            print(line)
    print()
    for line in report.targets(medians, target_c=plan.target_c):
        print(line)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    png = report.plot(medians, RESULTS / f"p99-vs-throughput-{stamp}.png")
    print(
        f"plot: {png}" if png else "plot: skipped (matplotlib not installed: pip install .[bench])"
    )
