"""`python -m bench --scale`: what scaling out costs per event.

Three setups in one run, measured in interleaved rounds (the order rotates each round):

- `1gw+1c sqlite`: one gateway and one consumer on SQLite and in-process memory, on the
  standard broker: today's setup on one machine;
- `1gw+1c pg+redis`: the same on PostgreSQL (a database of the run's own on the machine's
  server, SYNCGATE_BENCH_POSTGRES_URL) and Redis (a redis-server of the run's own on a free
  port, nothing on disk);
- `2gw+2c cluster`: two gateways and two consumers on PostgreSQL and Redis against the
  three-node cluster of scripts/cluster.sh (gateways on nodes 1 and 2, consumers on nodes 2
  and 3, one node URL each). Left out, with a line that says so, when the cluster does not
  answer; the script's SYNCGATE_CLUSTER_* variables say where it is.

Every request carries an Idempotency-Key of its own: a sync without one never touches Redis,
and the promise that costs a store is the keyed one. The two gateways of the last setup get
half the connections each, from a load generator each.

CPU per event is the CPU of everything the setup runs, from the start of the load until the
queue is drained, over the accepted events: the gateways, the consumers, the broker's VM (the
three VMs on the cluster), the PostgreSQL backends that serve the setup's database (found
through pg_stat_activity; the server's shared writer processes are not counted) and the
run's own redis-server. The machine's other work shows in none of these figures, except as
contention for the cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import aio_pika
import aiohttp
import asyncpg
import psutil
from aio_pika.abc import AbstractChannel, AbstractConnection

from bench.load import offer_load, sign_in
from bench.measure import wait_drained
from bench.procs import Child, StartupFailed, broker_process, cpu_of, process_cpu, wait_http_ok
from bench.systems import SYNCGATE_CLI, queue_counts
from bench.workspace import (
    AMQP_URL,
    BENCH_EMAIL,
    BENCH_PASSWORD,
    REPO_ROOT,
    Workspace,
    delete_topology,
    free_port,
)

POSTGRES_URL = os.environ.get(
    "SYNCGATE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
CLUSTER_SCRIPT = REPO_ROOT / "scripts" / "cluster.sh"

SQLITE, PG_REDIS, CLUSTER = "1gw+1c sqlite", "1gw+1c pg+redis", "2gw+2c cluster"


@dataclass(frozen=True, slots=True)
class ScalePlan:
    concurrency: int = 64
    duration: float = 5.0
    rounds: int = 3
    use_wrk: bool = True


@dataclass(frozen=True, slots=True)
class ScaleRow:
    setup: str
    rate: float  # accepted requests per second, over all gateways
    p99_ms: float  # the worst gateway's p99
    failed: int
    accepted: int
    ack_rate: float  # events acked per second, from the load's start until the queue drained
    gateway_cpu: float
    consumer_cpu: float
    broker_cpu: float
    postgres_cpu: float
    redis_cpu: float

    @property
    def total_cpu(self) -> float:
        return (
            self.gateway_cpu
            + self.consumer_cpu
            + self.broker_cpu
            + self.postgres_cpu
            + self.redis_cpu
        )

    def per_event(self, cpu_seconds: float) -> float:
        """µs of CPU per accepted event."""
        return cpu_seconds / self.accepted * 1e6 if self.accepted else float("nan")

    @property
    def stores_cpu(self) -> float:
        return self.postgres_cpu + self.redis_cpu


@dataclass
class Setup:
    label: str
    gateways: list[Child]
    ports: list[int]
    consumers: list[Child]
    queue: str
    channel: AbstractChannel  # on a broker that holds the queue, for its depth
    brokers: list[psutil.Process | None]
    database: str | None = None  # its PostgreSQL backends count as the store's CPU
    redis: Child | None = None


@dataclass
class Stores:
    """The PostgreSQL databases and the redis-server of one run, and how to read their CPU."""

    admin: asyncpg.Connection
    redis: Child
    redis_url: str
    databases: list[str] = field(default_factory=list)

    async def database(self, tag: str) -> tuple[str, str]:
        """A new database for one setup: (its name, its URL)."""
        name = f"syncgate_bench_{tag}_{uuid.uuid4().hex[:8]}"
        await self.admin.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return name, POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"

    async def backend_cpu(self, database: str | None) -> dict[int, float]:
        """CPU seconds so far of each backend connected to `database`."""
        if database is None:
            return {}
        pids = await self.admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        cpu = {}
        for row in pids:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(row["pid"]).cpu_times()
                cpu[row["pid"]] = float(times.user + times.system)
        return cpu


def _setup_env(
    workspace: Workspace, tag: str, *, amqp_url: str, run_store: str, redis_url: str | None
) -> dict[str, str]:
    env = workspace.syncgate_env(port=0)
    env.update(
        SYNCGATE_AMQP_URL=amqp_url,
        SYNCGATE_EXCHANGE=workspace.name(f"{tag}.events"),
        SYNCGATE_UNROUTED_EXCHANGE=workspace.name(f"{tag}.unrouted"),
        SYNCGATE_QUEUE=workspace.name(f"{tag}.work"),
        SYNCGATE_DEAD_LETTER_EXCHANGE=workspace.name(f"{tag}.dlx"),
        SYNCGATE_REVOCATION_STREAM=workspace.name(f"{tag}.revocations"),
        SYNCGATE_RUN_STORE=run_store,
        SYNCGATE_METRICS_PORT="0",  # two consumers on one host would share the default port
    )
    if redis_url is not None:
        env["SYNCGATE_REDIS_URL"] = redis_url
        env["SYNCGATE_REDIS_PREFIX"] = f"{workspace.prefix}.{tag}:"
    return env


async def _start_setup(
    workspace: Workspace,
    label: str,
    tag: str,
    *,
    gateway_urls: Sequence[str],
    consumer_urls: Sequence[str],
    run_store: str,
    redis_url: str | None,
    connection: AbstractConnection,
    brokers: list[psutil.Process | None],
    children: list[Child],
) -> Setup:
    queue = workspace.name(f"{tag}.work")
    consumers = []
    for n, url in enumerate(consumer_urls, start=1):
        env = _setup_env(workspace, tag, amqp_url=url, run_store=run_store, redis_url=None)
        child = Child.start(
            f"{label} consumer {n}",
            [SYNCGATE_CLI, "consumer"],
            env,
            workspace.log_file(f"{tag}-c{n}"),
        )
        children.append(child)
        consumers.append(child)
    deadline = time.monotonic() + 60
    while True:
        for child in consumers:
            child.check_alive()
        # A passive declare of a missing queue closes its channel: a throwaway one.
        probe = await connection.channel()
        try:
            if (await queue_counts(probe, queue))[1] == len(consumers):
                break
        except aio_pika.exceptions.ChannelClosed:
            pass
        finally:
            with contextlib.suppress(Exception):
                await probe.close()
        if time.monotonic() > deadline:
            raise StartupFailed(f"{label}: the consumers never all consumed from {queue}")
        await asyncio.sleep(0.3)
    gateways, ports = [], []
    for n, url in enumerate(gateway_urls, start=1):
        port = free_port()
        env = _setup_env(workspace, tag, amqp_url=url, run_store=run_store, redis_url=redis_url)
        env["SYNCGATE_PORT"] = str(port)
        child = Child.start(
            f"{label} gateway {n}",
            [SYNCGATE_CLI, "gateway"],
            env,
            workspace.log_file(f"{tag}-g{n}"),
        )
        children.append(child)
        gateways.append(child)
        ports.append(port)
    for child, port in zip(gateways, ports, strict=True):
        await wait_http_ok(child, f"http://127.0.0.1:{port}/readyz")
    return Setup(label, gateways, ports, consumers, queue, await connection.channel(), brokers)


async def _start_redis(workspace: Workspace) -> tuple[Child, str]:
    port = free_port()
    argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(workspace.root)]
    child = Child.start("redis-server", argv, dict(os.environ), workspace.log_file("redis"))
    deadline = time.monotonic() + 15
    while True:
        child.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return child, f"redis://127.0.0.1:{port}/0"
        if time.monotonic() > deadline:
            raise StartupFailed("redis-server did not listen")
        await asyncio.sleep(0.1)


def cluster_urls() -> list[str]:
    """The cluster's node URLs as scripts/cluster.sh reports them (its environment applies)."""
    result = subprocess.run(  # noqa: S603 (the repository's own script)
        [str(CLUSTER_SCRIPT), "urls"], capture_output=True, text=True, timeout=30, check=False
    )
    return (
        [url for url in result.stdout.strip().split(",") if url] if result.returncode == 0 else []
    )


def cluster_management_url() -> str:
    base = int(os.environ.get("SYNCGATE_CLUSTER_MANAGEMENT_PORT_BASE", "15680"))
    return f"http://127.0.0.1:{base + 1}"


async def measure(setup: Setup, stores: Stores, *, plan: ScalePlan, round_no: int) -> ScaleRow:
    """One point: keyed load through every gateway of the setup, until its queue is drained."""
    credentials = await sign_in(f"http://127.0.0.1:{setup.ports[0]}", BENCH_EMAIL, BENCH_PASSWORD)
    pg0 = await stores.backend_cpu(setup.database)
    gateway0, consumer0 = cpu_of(setup.gateways), cpu_of(setup.consumers)
    broker0 = sum(process_cpu(b) for b in setup.brokers)
    redis0 = setup.redis.cpu_seconds() if setup.redis else 0.0
    started = time.perf_counter()
    share = max(1, plan.concurrency // len(setup.ports))
    loads = await asyncio.gather(
        *(
            offer_load(
                f"http://127.0.0.1:{port}/api/sync",
                concurrency=share,
                duration=plan.duration,
                credentials=credentials,
                use_wrk=plan.use_wrk,
                key_prefix=f"{uuid.uuid4().hex[:12]}-r{round_no}-g{n}",
            )
            for n, port in enumerate(setup.ports)
        )
    )
    accepted = sum(load.accepted for load in loads)
    left = await wait_drained(setup.channel, setup.queue, within=max(30.0, 3 * plan.duration))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.2)  # the last group commit and its acks
    pg1 = await stores.backend_cpu(setup.database)
    return ScaleRow(
        setup=setup.label,
        rate=sum(load.rate for load in loads),
        p99_ms=max(load.p99_ms for load in loads),
        failed=sum(load.failed for load in loads),
        accepted=accepted,
        ack_rate=(accepted - left) / elapsed,
        gateway_cpu=cpu_of(setup.gateways) - gateway0,
        consumer_cpu=cpu_of(setup.consumers) - consumer0,
        broker_cpu=sum(process_cpu(b) for b in setup.brokers) - broker0,
        postgres_cpu=sum(cpu - pg0.get(pid, 0.0) for pid, cpu in pg1.items()),
        redis_cpu=(setup.redis.cpu_seconds() - redis0) if setup.redis else 0.0,
    )


async def idle_broker_cpu(brokers: Sequence[psutil.Process | None], seconds: float = 2.0) -> float:
    """CPU seconds per second the broker VMs use while this run offers no load."""
    before = sum(process_cpu(b) for b in brokers)
    await asyncio.sleep(seconds)
    return (sum(process_cpu(b) for b in brokers) - before) / seconds


@contextlib.asynccontextmanager
async def _connections() -> AsyncIterator[list[AbstractConnection]]:
    opened: list[AbstractConnection] = []
    try:
        yield opened
    finally:
        for connection in opened:
            with contextlib.suppress(Exception):
                await connection.close()


async def run_scale(plan: ScalePlan) -> list[ScaleRow]:
    workspace = Workspace.create()
    children: list[Child] = []
    admin = await asyncpg.connect(POSTGRES_URL)
    stores: Stores | None = None
    on_cluster = False
    try:
        async with _connections() as connections:
            redis, redis_url = await _start_redis(workspace)
            children.append(redis)
            stores = Stores(admin, redis, redis_url)
            print(f"[bench] scale: names {workspace.prefix}.*, logs in {workspace.root}")
            standard = await aio_pika.connect(AMQP_URL)
            connections.append(standard)
            broker = broker_process(5672)
            setups = [
                await _start_setup(
                    workspace,
                    SQLITE,
                    "sqlite",
                    gateway_urls=[AMQP_URL],
                    consumer_urls=[AMQP_URL],
                    run_store=str(workspace.root / "runs.sqlite3"),
                    redis_url=None,
                    connection=standard,
                    brokers=[broker],
                    children=children,
                )
            ]
            database, url = await stores.database("pg")
            setup = await _start_setup(
                workspace,
                PG_REDIS,
                "pg",
                gateway_urls=[AMQP_URL],
                consumer_urls=[AMQP_URL],
                run_store=url,
                redis_url=redis_url,
                connection=standard,
                brokers=[broker],
                children=children,
            )
            setup.database, setup.redis = database, redis
            setups.append(setup)
            nodes = cluster_urls()
            cluster: AbstractConnection | None = None
            if len(nodes) == 3:
                with contextlib.suppress(OSError, TimeoutError, aio_pika.exceptions.AMQPError):
                    cluster = await aio_pika.connect(nodes[0], timeout=5)
            if cluster is None:
                print(
                    "[bench] scale: the 2gw+2c setup is left out: the cluster does not answer "
                    "(scripts/cluster.sh start)"
                )
            else:
                on_cluster = True
                connections.append(cluster)
                ports = [int(n.rsplit(":", 1)[1].split("/")[0]) for n in nodes]
                database, url = await stores.database("cluster")
                setup = await _start_setup(
                    workspace,
                    CLUSTER,
                    "cluster",
                    gateway_urls=[nodes[0], nodes[1]],
                    consumer_urls=[nodes[1], nodes[2]],
                    run_store=url,
                    redis_url=redis_url,
                    connection=cluster,
                    brokers=[broker_process(port) for port in ports],
                    children=children,
                )
                setup.database, setup.redis = database, redis
                setups.append(setup)
            for setup in setups:
                idle = await idle_broker_cpu(setup.brokers)
                print(
                    f"[bench] scale: {setup.label}'s broker VM(s) use {idle * 1000:.0f} ms of CPU "
                    "per second with no load of this run (the standard broker's includes other "
                    "users' work); part of the broker column"
                )
            loadgen = "wrk" if plan.use_wrk else "the Python load generator"
            print(
                f"[bench] scale: {plan.rounds} round(s) of {plan.duration:g}s at "
                f"c={plan.concurrency}, keyed requests, load from {loadgen}"
            )
            rows = []
            for round_no in range(plan.rounds):
                by = round_no % len(setups)
                for setup in setups[by:] + setups[:by]:
                    row = await measure(setup, stores, plan=plan, round_no=round_no)
                    rows.append(row)
                    print(
                        f"[bench] scale round {round_no + 1} {row.setup}: {row.rate:,.0f} req/s, "
                        f"p99 {row.p99_ms:.1f} ms, {row.failed} failed, "
                        f"{row.per_event(row.total_cpu):,.0f} µs CPU/event"
                    )
            return rows
    finally:
        for child in reversed(children):
            child.stop()
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await delete_topology(workspace.prefix)
        if on_cluster:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await delete_topology(workspace.prefix, cluster_management_url())
        for name in stores.databases if stores else []:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        workspace.remove_files()


def median_rows(rows: Sequence[ScaleRow]) -> list[ScaleRow]:
    """One row per setup, in the order they first appear: the median of each figure."""
    order = list(dict.fromkeys(row.setup for row in rows))
    medians = []
    for setup in order:
        group = [row for row in rows if row.setup == setup]

        def med(name: str, group: list[ScaleRow] = group) -> float:
            return float(statistics.median(getattr(row, name) for row in group))

        medians.append(
            ScaleRow(
                setup=setup,
                rate=med("rate"),
                p99_ms=med("p99_ms"),
                failed=int(med("failed")),
                accepted=int(med("accepted")),
                ack_rate=med("ack_rate"),
                gateway_cpu=med("gateway_cpu"),
                consumer_cpu=med("consumer_cpu"),
                broker_cpu=med("broker_cpu"),
                postgres_cpu=med("postgres_cpu"),
                redis_cpu=med("redis_cpu"),
            )
        )
    return medians


def report(rows: Sequence[ScaleRow]) -> list[str]:
    """The table (CPU in µs per accepted event) and the ratios."""
    header = (
        f"{'setup':16} {'req/s':>7} {'p99 ms':>7} {'fail':>5} {'ack/s':>7} "
        f"{'gw':>5} {'cons':>5} {'broker':>6} {'pg':>5} {'redis':>5} {'total':>6}  µs CPU/event"
    )
    lines = [header]
    for row in rows:
        cpu = [row.gateway_cpu, row.consumer_cpu, row.broker_cpu, row.postgres_cpu]
        cpu += [row.redis_cpu, row.total_cpu]
        gw, cons, brk, pg, rds, total = (f"{row.per_event(c):,.0f}" for c in cpu)
        lines.append(
            f"{row.setup:16} {row.rate:>7,.0f} {row.p99_ms:>7.1f} {row.failed:>5} "
            f"{row.ack_rate:>7,.0f} {gw:>5} {cons:>5} {brk:>6} {pg:>5} {rds:>5} {total:>6}"
        )
    by = {row.setup: row for row in rows}

    def ratio(a: ScaleRow, b: ScaleRow, what: str) -> str:
        return (
            f"{what}: req/s {a.rate / b.rate:.2f}x, p99 {a.p99_ms / b.p99_ms:.2f}x, "
            f"CPU/event {a.per_event(a.total_cpu) / b.per_event(b.total_cpu):.2f}x"
        )

    if SQLITE in by and PG_REDIS in by:
        local, shared = by[SQLITE], by[PG_REDIS]
        lines.append(ratio(shared, local, f"{PG_REDIS} ÷ {SQLITE}"))
        extra = shared.per_event(shared.total_cpu) - local.per_event(local.total_cpu)
        own = shared.per_event(shared.stores_cpu)
        lines.append(
            f"the shared stores cost {extra:,.0f} µs of CPU per event in all "
            f"({own:,.0f} µs in the stores themselves: PostgreSQL "
            f"{shared.per_event(shared.postgres_cpu):,.0f}, Redis "
            f"{shared.per_event(shared.redis_cpu):,.0f}; the rest in syncgate's own processes)"
        )
    if CLUSTER in by and PG_REDIS in by:
        lines.append(ratio(by[CLUSTER], by[PG_REDIS], f"{CLUSTER} ÷ {PG_REDIS}"))
    if CLUSTER in by and SQLITE in by:
        lines.append(ratio(by[CLUSTER], by[SQLITE], f"{CLUSTER} ÷ {SQLITE}"))
    return lines
