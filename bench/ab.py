"""An interleaved A/B of two source trees: is a change to the gateway or the consumer worth it?

    python -m bench.ab --a /path/to/tree-a --b /path/to/tree-b --pairs 10

Each tree is a checkout of this repository (a `git worktree` with the change, say). Both
run at once, each as its own gateway and consumer process started from its tree (the tree
first on PYTHONPATH, so it shadows this environment's installed copy), with its own broker
names. Then, pair after pair, each gets the same load (wrk at `--concurrency`, for
`--duration` seconds), the order alternating from one pair to the next so drift and warm-up
hit both alike; the idle one waits meanwhile. It prints each pair and, per figure, the
medians and in how many pairs B came out lower. A change is kept only if it wins on the
figure it is for in at least 7 of 10 pairs (the README's Benchmarks section says why).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection

from bench.load import sign_in, wrk_available
from bench.measure import Row, measure_http
from bench.procs import Child, broker_process, wait_http_ok
from bench.systems import HttpSystem, wait_for_consumer
from bench.workspace import (
    AMQP_URL,
    BENCH_EMAIL,
    BENCH_PASSWORD,
    PYTHON,
    Workspace,
    delete_topology,
    free_port,
)


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    of: Callable[[Row], float | None]
    lower_is_better: bool = True


def _per_event(cpu_seconds: float | None, row: Row) -> float | None:
    return cpu_seconds / row.accepted * 1e6 if cpu_seconds is not None and row.accepted else None


FIGURES = (
    Figure("gateway µs CPU/req", lambda r: r.cpu_us_per_request),
    Figure("consumer µs CPU/event", lambda r: _per_event(r.consumer_cpu, r)),
    Figure("broker µs CPU/event", lambda r: _per_event(r.broker_cpu, r)),
    Figure("req/s", lambda r: r.rate, lower_is_better=False),
    Figure("p99 ms", lambda r: r.p99_ms),
)


def tree_env(workspace: Workspace, tree: Path, *, port: int) -> dict[str, str]:
    env = workspace.syncgate_env(port=port)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))
    return env


async def start_tree(
    label: str, tree: Path, workspace: Workspace, connection: AbstractConnection
) -> HttpSystem:
    """A consumer and a gateway run from `tree`, with this workspace's names and files."""
    port = free_port()
    env = tree_env(workspace, tree, port=port)
    consumer = Child.start(
        f"{label} consumer",
        [PYTHON, "-m", "consumers"],
        {**env, "SYNCGATE_METRICS_PORT": "0"},
        workspace.log_file(f"{label}-consumer"),
    )
    await wait_for_consumer(connection, consumer, workspace.name("work"))
    gateway = Child.start(
        f"{label} gateway", [PYTHON, "-m", "gateway"], env, workspace.log_file(f"{label}-gateway")
    )
    await wait_http_ok(gateway, f"http://127.0.0.1:{port}/readyz")
    return HttpSystem(label, port, [gateway], [consumer], workspace.name("work"))


def summary(rows: dict[str, list[Row]]) -> list[str]:
    lines = []
    for figure in FIGURES:
        a = [figure.of(r) for r in rows["A"]]
        b = [figure.of(r) for r in rows["B"]]
        pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
        if not pairs:
            continue
        better = sum((y < x) if figure.lower_is_better else (y > x) for x, y in pairs)
        lines.append(
            f"{figure.name:>22}: A {statistics.median(x for x, _ in pairs):10.1f}"
            f"   B {statistics.median(y for _, y in pairs):10.1f}"
            f"   B better in {better} of {len(pairs)} pairs"
        )
    return lines


async def measure_pairs(
    systems: dict[str, HttpSystem],
    channel: AbstractChannel,
    *,
    pairs: int,
    concurrency: int,
    duration: float,
) -> dict[str, list[Row]]:
    rows: dict[str, list[Row]] = {label: [] for label in systems}
    broker = broker_process()
    for pair in range(pairs):
        for label in ("A", "B") if pair % 2 == 0 else ("B", "A"):
            system = systems[label]
            # A fresh sign-in per point keeps the cookie as young as a browser's.
            base_url = f"http://127.0.0.1:{system.port}"
            credentials = await sign_in(base_url, BENCH_EMAIL, BENCH_PASSWORD)
            row = await measure_http(
                system,
                concurrency=concurrency,
                duration=duration,
                credentials=credentials,
                use_wrk=True,
                channel=channel,
                broker=broker,
            )
            rows[label].append(row)
            print(
                f"[ab] pair {pair + 1} {label}: {row.rate:,.0f} req/s, p99 {row.p99_ms or 0:.1f}"
                f" ms, gateway {row.cpu_us_per_request or 0:.0f} µs/req, {row.failed} failed",
                flush=True,
            )
    return rows


async def run(a: Path, b: Path, *, pairs: int, concurrency: int, duration: float) -> None:
    workspaces = {"A": Workspace.create(), "B": Workspace.create()}
    systems: dict[str, HttpSystem] = {}
    connection = await aio_pika.connect(AMQP_URL, client_properties={"connection_name": "ab"})
    try:
        for label, tree in (("A", a), ("B", b)):
            systems[label] = await start_tree(label, tree, workspaces[label], connection)
        rows = await measure_pairs(
            systems,
            await connection.channel(),
            pairs=pairs,
            concurrency=concurrency,
            duration=duration,
        )
    finally:
        for system in systems.values():
            for child in system.children:
                child.stop()
        await connection.close()
        for workspace in workspaces.values():
            await delete_topology(workspace.prefix)
            workspace.remove_files()
    print(f"\nA = {a}\nB = {b}")
    print(f"medians of {pairs} interleaved pairs at c={concurrency}, {duration:g} s each:")
    for line in summary(rows):
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--a", type=Path, required=True, help="the tree as it is")
    parser.add_argument("--b", type=Path, required=True, help="the tree with the change")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    if not wrk_available():
        parser.error("wrk is not installed (scripts/bench.sh installs it)")
    asyncio.run(
        run(
            args.a.resolve(),
            args.b.resolve(),
            pairs=args.pairs,
            concurrency=args.concurrency,
            duration=args.duration,
        )
    )


if __name__ == "__main__":
    main()
