"""One measurement: a system at one offered concurrency, with the CPU and memory it cost."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import psutil
from aio_pika.abc import AbstractChannel

from bench.load import Credentials, offer_load
from bench.procs import cpu_of, paused, process_cpu, rss_of
from bench.systems import HttpSystem, queue_counts
from bench.workspace import AMQP_URL, PYTHON, bench_env


@dataclass(frozen=True, slots=True)
class Row:
    system: str
    concurrency: int  # offered connections; for D, the prefetch
    rate: float  # accepted requests (or messages) per second
    p50_ms: float | None
    p99_ms: float | None
    failed: int
    server_cpu: float  # CPU seconds of the server (or client) processes during the load
    consumer_cpu: float | None
    broker_cpu: float
    rss_mb: float
    ack_rate: float | None  # acked events per second, from load start to an empty queue
    depth_at_end: int | None  # ready messages when the load stopped
    accepted: int
    loadgen_cpu_share: float | None = None

    @property
    def cpu_us_per_request(self) -> float | None:
        return self.server_cpu / self.accepted * 1e6 if self.accepted else None

    @property
    def per_cpu_second(self) -> float | None:
        return self.accepted / self.server_cpu if self.server_cpu else None


async def wait_drained(channel: AbstractChannel, queue: str, within: float) -> int:
    """Poll the queue until no message is ready; returns how many were still ready."""
    deadline = time.monotonic() + within
    ready = (await queue_counts(channel, queue))[0]
    while ready and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        ready = (await queue_counts(channel, queue))[0]
    return ready


async def measure_http(
    system: HttpSystem,
    *,
    concurrency: int,
    duration: float,
    credentials: Credentials,
    use_wrk: bool,
    channel: AbstractChannel,
    broker: psutil.Process | None,
    pause_consumers: bool = False,
) -> Row:
    """One point: load for `duration`, then wait until the consumers have drained the queue.

    With `pause_consumers` the consumers are stopped (SIGSTOP) while the load runs and resumed
    after it, so the gateway is measured without a consumer competing for the same cores; the
    queue holds the events meanwhile, and the ack rate still counts until all are acked.
    """
    server_cpu0, consumer_cpu0 = cpu_of(system.servers), cpu_of(system.consumers)
    broker_cpu0, started = process_cpu(broker), time.perf_counter()
    with paused(system.consumers if pause_consumers else []):
        load = await offer_load(
            system.url,
            concurrency=concurrency,
            duration=duration,
            credentials=credentials,
            use_wrk=use_wrk,
        )
    server_cpu = cpu_of(system.servers) - server_cpu0
    rss = rss_of(system.children)
    depth = ack_rate = consumer_cpu = None
    if system.queue is not None:
        depth = (await queue_counts(channel, system.queue))[0]
        left = await wait_drained(channel, system.queue, within=max(30.0, 3 * duration))
        ack_rate = (load.accepted - left) / (time.perf_counter() - started)
        consumer_cpu = cpu_of(system.consumers) - consumer_cpu0
    return Row(
        system=f"{system.label}, consumer paused" if pause_consumers else system.label,
        concurrency=concurrency,
        rate=load.rate,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        failed=load.failed,
        server_cpu=server_cpu,
        consumer_cpu=consumer_cpu,
        broker_cpu=process_cpu(broker) - broker_cpu0,
        rss_mb=rss / 2**20,
        ack_rate=ack_rate,
        depth_at_end=depth,
        accepted=load.accepted,
        loadgen_cpu_share=load.loadgen_cpu_share,
    )


async def _run_json(*argv: str) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        *argv, env=bench_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{argv[2]} failed ({process.returncode}): {err.decode()[-2000:]}")
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def publish_ceiling(
    exchange: str, *, concurrency: int, duration: float, broker: psutil.Process | None
) -> tuple[Row, int]:
    """Ceiling C; returns its row and how many messages it left for D."""
    broker_cpu0 = process_cpu(broker)
    result = await _run_json(
        PYTHON, "-m", "bench.broker_ceilings", "publish", f"--url={AMQP_URL}",
        f"--exchange={exchange}", f"--concurrency={concurrency}", f"--duration={duration}",
    )  # fmt: skip
    count = int(result["count"])
    row = Row(
        system="C publish",
        concurrency=concurrency,
        rate=count / result["seconds"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        failed=0,
        server_cpu=result["cpu_seconds"],
        consumer_cpu=None,
        broker_cpu=process_cpu(broker) - broker_cpu0,
        rss_mb=result["rss_bytes"] / 2**20,
        ack_rate=None,
        depth_at_end=None,
        accepted=count,
    )
    return row, count


async def consume_ceiling(
    queue: str, *, prefetch: int, expect: int, broker: psutil.Process | None
) -> Row:
    """Ceiling D: drain what C left, at the consumer's prefetch."""
    broker_cpu0 = process_cpu(broker)
    result = await _run_json(
        PYTHON, "-m", "bench.broker_ceilings", "consume", f"--url={AMQP_URL}",
        f"--queue={queue}", f"--prefetch={prefetch}", f"--expect={expect}",
    )  # fmt: skip
    count = int(result["count"])
    rate = count / result["seconds"] if result["seconds"] else 0.0
    return Row(
        system="D consume",
        concurrency=prefetch,
        rate=rate,
        p50_ms=None,
        p99_ms=None,
        failed=expect - count,
        server_cpu=0.0,
        consumer_cpu=result["cpu_seconds"],
        broker_cpu=process_cpu(broker) - broker_cpu0,
        rss_mb=result["rss_bytes"] / 2**20,
        ack_rate=rate,
        depth_at_end=None,
        accepted=count,
    )


async def consumer_drain(
    system: HttpSystem,
    exchange: str,
    *,
    concurrency: int,
    duration: float,
    prefetch: int,
    channel: AbstractChannel,
    broker: psutil.Process | None,
) -> Row | None:
    """The system's consumer draining a backlog, to compare with D at the same prefetch.

    As D drains what C left, the consumer drains what C publishes into the system's exchange:
    it is paused (SIGSTOP) while C publishes and resumed when C stops, and only the drain is
    timed. Left running, it would eat into the backlog while C publishes, and the timed part
    would be a short tail with its start-up. None if no backlog built up.
    """
    assert system.queue is not None
    with paused(system.consumers):
        await publish_ceiling(exchange, concurrency=concurrency, duration=duration, broker=None)
        backlog = (await queue_counts(channel, system.queue))[0]
    cpu0, broker_cpu0, started = cpu_of(system.consumers), process_cpu(broker), time.perf_counter()
    left = await wait_drained(channel, system.queue, within=120.0)
    seconds = time.perf_counter() - started
    if backlog < 100 or seconds <= 0:
        return None
    rate = (backlog - left) / seconds
    return Row(
        system=f"{system.label} consumer",
        concurrency=prefetch,
        rate=rate,
        p50_ms=None,
        p99_ms=None,
        failed=0,
        server_cpu=0.0,
        consumer_cpu=cpu_of(system.consumers) - cpu0,
        broker_cpu=process_cpu(broker) - broker_cpu0,
        rss_mb=rss_of(system.consumers) / 2**20,
        ack_rate=rate,
        depth_at_end=left,
        accepted=backlog - left,
    )
