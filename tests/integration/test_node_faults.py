"""Node faults under load, on scripts/cluster.sh's three nodes.

A real gateway (`syncgate gateway`) and a real consumer (the counting consumer, which logs
each handler run) run as processes of their own, each in a working directory of its own,
sharing nothing but SYNCGATE_AMQP_URL: all three node URLs. Under steady load, the node that
leads the work queue is killed with kill -9, then the node the gateway is connected to (which
leaves one node of three: no majority, so no quorum queue takes a message until one comes
back), then both are started again.

What must hold throughout: every event the gateway answered 202 for is handled exactly once
(lost = 0, and one handler run per id); no request takes longer than the publish deadline
plus 0.5 s; every 503 carries Retry-After; and service comes back by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sqlite3
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiohttp
import pytest

from common.amqp import connection_name
from gateway.settings import GatewaySettings
from tests.conftest import EMAIL, PASSWORD
from tests.support.cluster import Cluster
from tests.support.counting_consumer import CALLS, calls_of
from tests.support.gateway import wait_ready_at
from tests.support.metrics import scrape_consumer, settled

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.fault]

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
COOKIE = "syncgate"
GATEWAY = connection_name("gateway")  # what the management UI shows for the publisher

DEADLINE = 3.0  # the gateway's publish deadline (SYNCGATE_PUBLISH_DEADLINE)
SLACK = 0.5  # what a request may take beyond it
RETRY_AFTER = 2
WORKERS = 6
PAUSE = 0.02  # between one worker's requests: steady load, not a flood
PHASE = 4.0  # seconds of load between one fault and the next step
# How long the work queue may refuse publishes after its leader died (RabbitMQ 3.10 nacks them
# while the survivors settle on a new leader; seconds here).
LEADER_LIMIT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Outcome:
    started: float
    status: int  # 0: no answer within the client's own limit; -1: the connection failed
    elapsed: float
    event_id: str | None
    retry_after: str | None


class Load:
    """WORKERS signed-in clients posting /api/sync one request at a time until stopped."""

    def __init__(self, base_url: str, cookie: str, token: str) -> None:
        self.base_url = base_url
        self.headers = {"Cookie": f"{COOKIE}={cookie}", "X-CSRF-Token": token}
        self.outcomes: list[Outcome] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Far past the deadline: a request that hangs is measured, not cut short at it.
        self._timeout = aiohttp.ClientTimeout(total=DEADLINE + 10)

    async def __aenter__(self) -> Load:
        self._http = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), timeout=self._timeout
        )
        self._tasks = [asyncio.create_task(self._worker(n)) for n in range(WORKERS)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._http.close()

    async def _worker(self, n: int) -> None:
        while not self._stop.is_set():
            self.outcomes.append(await self._sync(n))
            await asyncio.sleep(PAUSE)

    async def _sync(self, n: int) -> Outcome:
        started = time.monotonic()
        try:
            async with self._http.post(
                f"{self.base_url}/api/sync", json={"data": f"w{n}"}, headers=self.headers
            ) as response:
                body = await response.json()
                return Outcome(
                    started,
                    response.status,
                    time.monotonic() - started,
                    body.get("id") if response.status == 202 else None,
                    response.headers.get("Retry-After"),
                )
        except TimeoutError:
            return Outcome(started, 0, time.monotonic() - started, None, None)
        except aiohttp.ClientError:
            return Outcome(started, -1, time.monotonic() - started, None, None)

    def since(self, moment: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.started >= moment]

    def first_accepted_since(self, moment: float) -> float:
        """Seconds from `moment` to the first 202 of a request sent after it; inf: none yet."""
        done = [o.started + o.elapsed for o in self.since(moment) if o.status == 202]
        return min(done, default=float("inf")) - moment

    async def accepted_since(self, moment: float, *, within: float) -> None:
        deadline = time.monotonic() + within
        while self.first_accepted_since(moment) == float("inf"):
            assert time.monotonic() < deadline, f"no 202 within {within:.0f}s of the kill"
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def process(
    args: list[str], env: dict[str, str], cwd: Path, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(*args, env=env, cwd=cwd, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def working_dirs(root: Path, *names: str) -> list[Path]:
    """A working directory of its own for each process: they share no file."""
    for name in names:
        (root / name).mkdir()
    return [root / name for name in names]


def recorded_runs(run_store: Path) -> list[str]:
    if not run_store.exists():
        return []
    with contextlib.closing(sqlite3.connect(run_store, timeout=5)) as db:
        try:
            return [row[0] for row in db.execute("SELECT event_id FROM runs")]
        except sqlite3.OperationalError:  # the consumer has not created its tables yet
            return []


async def delete_by_prefix(cluster: Cluster, prefix: str) -> None:
    """The test's queues and exchanges, through the first node that answers."""
    queues = await cluster.management_get("queues/%2F?columns=name")
    exchanges = await cluster.management_get("exchanges/%2F?columns=name")
    for url in cluster.amqp_urls:
        try:
            connection = await aio_pika.connect(url, timeout=5)
        except (OSError, aio_pika.exceptions.AMQPError):
            continue
        async with connection:
            channel = await connection.channel()
            for queue in queues:
                if queue["name"].startswith(prefix):
                    await channel.queue_delete(queue["name"])
            for exchange in exchanges:
                if exchange["name"].startswith(prefix):
                    await channel.exchange_delete(exchange["name"])
        return


async def test_node_faults_under_load_lose_nothing_and_hang_nothing(
    cluster: Cluster, make_settings: Callable[..., GatewaySettings], tmp_path: Path
) -> None:
    prefix = f"test.faults.{uuid.uuid4().hex[:8]}"
    exchange, unrouted, queue = f"{prefix}.events", f"{prefix}.unrouted", f"{prefix}.work"
    nodes = ",".join(cluster.amqp_urls)
    settings = make_settings()
    consumer_dir, gateway_dir = working_dirs(tmp_path, "consumer", "gateway")
    run_store, calls = consumer_dir / "runs.sqlite3", consumer_dir / "calls.txt"
    metrics_port, gateway_port = free_port(), free_port()
    common = {
        **os.environ,
        "SYNCGATE_AMQP_URL": nodes,
        "SYNCGATE_EXCHANGE": exchange,
        "SYNCGATE_UNROUTED_EXCHANGE": unrouted,
        "SYNCGATE_LOG_FORMAT": "console",
    }
    consumer_env = {
        **common,
        # The counting consumer is a module of the tests, not of the installed package.
        "PYTHONPATH": str(ROOT),
        "SYNCGATE_QUEUE": queue,
        "SYNCGATE_DEAD_LETTER_EXCHANGE": f"{prefix}.dlx",
        "SYNCGATE_RUN_STORE": str(run_store),
        "SYNCGATE_METRICS_PORT": str(metrics_port),
        "SYNCGATE_RETRY_BASE_DELAY": "0.2",
        CALLS: str(calls),
    }
    gateway_env = {
        **common,
        "SYNCGATE_PORT": str(gateway_port),
        "SYNCGATE_SESSION_KEYS": settings.session_keys.get_secret_value(),
        "SYNCGATE_USERS_FILE": str(settings.users_file),
        "SYNCGATE_APP_SETTINGS_FILE": str(settings.app_settings_file),
        "SYNCGATE_COOKIE_SECURE": "false",
        "SYNCGATE_REVOCATION_STREAM": f"{prefix}.revocations",
        "SYNCGATE_PUBLISH_DEADLINE": str(DEADLINE),
        "SYNCGATE_RETRY_AFTER": str(RETRY_AFTER),
    }
    base_url = f"http://127.0.0.1:{gateway_port}"
    began = time.monotonic()
    down: list[int] = []

    def say(what: str) -> None:
        print(f"[{time.monotonic() - began:5.1f}s] {what}")

    try:
        async with (
            process(
                [str(BIN / "python"), "-m", "tests.support.counting_consumer"],
                consumer_env,
                consumer_dir,
                tmp_path / "consumer.log",
            ),
            process(
                [str(BIN / "syncgate"), "gateway"], gateway_env, gateway_dir, tmp_path / "gw.log"
            ),
        ):
            # The consumer declares the work queue: the gateway's events must be routable.
            await asyncio.gather(
                subscribed(tmp_path / "consumer.log"), wait_ready_at(base_url, within=30)
            )
            cookie, token = await sign_in(base_url)
            say("consumer and gateway up; load starts")
            async with Load(base_url, cookie, token) as load:
                await asyncio.sleep(PHASE)

                leader = await cluster.queue_leader(queue)
                say(f"kill -9 node {leader}, the work queue's leader")
                down.append(leader)
                await cluster.kill(leader)
                # From here on node `leader` is dead: a 202 now came through another node.
                first_kill, first_kill_wall = time.monotonic(), time.time()
                await asyncio.sleep(PHASE)
                await load.accepted_since(first_kill, within=LEADER_LIMIT)
                say(f"accepted again {load.first_accepted_since(first_kill):.1f}s after the kill")

                gateway_node = await cluster.connection_node(GATEWAY, within=DEADLINE)
                assert gateway_node is not None, "the gateway is connected to no node"
                assert gateway_node != leader
                survivor = next(n for n in cluster.nodes if n not in (leader, gateway_node))
                say(f"kill -9 node {gateway_node}, the gateway's; node {survivor} is left alone")
                down.append(gateway_node)
                await cluster.kill(gateway_node)
                second_kill, second_kill_wall = time.monotonic(), time.time()
                await asyncio.sleep(PHASE)

                while down:
                    await cluster.start_node(down[0])
                    say(f"node {down.pop(0)} back")
                back = time.monotonic()
                await asyncio.sleep(PHASE)
                say("load stops")
            recovered = [o for o in load.since(back) if o.status == 202]

            accepted = [o.event_id for o in load.outcomes if o.event_id is not None]
            deadline = time.monotonic() + 30
            while not set(accepted) <= set(recorded_runs(run_store)):
                assert time.monotonic() < deadline, "accepted events were never handled"
                await asyncio.sleep(0.25)
            await asyncio.sleep(1.0)  # any late redelivery settles (as a duplicate)
            samples = await scrape_consumer(metrics_port)
    finally:
        print(f"gateway log: {tmp_path / 'gw.log'}; consumer log: {tmp_path / 'consumer.log'}")
        for n in down:  # the cluster is the session's: leave it whole for the next test
            await cluster.start_node(n)
        await delete_by_prefix(cluster, prefix)

    outcomes = load.outcomes
    statuses = Counter(o.status for o in outcomes)
    unavailable = [o for o in outcomes if o.status == 503]
    handled = recorded_runs(run_store)
    handler_ends = [(event_id, at) for kind, event_id, _, at in calls_of(calls) if kind == "end"]
    runs_per_id = Counter(event_id for event_id, _ in handler_ends)
    longest = max(o.elapsed for o in outcomes)
    # While the leader was down (and two nodes of three ran): accepted, and handled.
    accepted_meanwhile = [
        o for o in outcomes if first_kill <= o.started < second_kill and o.status == 202
    ]
    handled_meanwhile = [at for _, at in handler_ends if first_kill_wall < at < second_kill_wall]
    # The nodes the gateway's publisher connected to, in order (its log says each one).
    gateway_nodes = re.findall(
        rf"connected to broker node (\S+) as {re.escape(GATEWAY)}$",
        (tmp_path / "gw.log").read_text(),
        flags=re.MULTILINE,
    )
    say(
        f"accepted {len(accepted)}, 503s {len(unavailable)}, handled {len(handled)} "
        f"({len(set(handled) - set(accepted))} of them answered 503: published, confirm lost), "
        f"duplicates suppressed {settled(samples, 'duplicate'):.0f}, "
        f"longest request {longest:.2f}s (deadline {DEADLINE:.1f}s)"
    )
    say(
        f"while the leader was down: {len(accepted_meanwhile)} accepted (the first "
        f"{load.first_accepted_since(first_kill):.2f}s after the kill), "
        f"{len(handled_meanwhile)} handled; after both nodes were back: "
        f"{len(recovered)} accepted; the gateway's nodes: {' -> '.join(gateway_nodes)}"
    )

    assert set(statuses) <= {202, 503}, f"answers other than 202 and 503: {dict(statuses)}"
    assert len(set(accepted)) == len(accepted), "one event id answered twice"
    lost = set(accepted) - set(handled)
    assert not lost, f"{len(lost)} accepted events lost, e.g. {sorted(lost)[:3]}"
    assert len(handled) == len(set(handled))
    twice = {event_id: n for event_id, n in runs_per_id.items() if n != 1}
    assert not twice, f"handlers ran more than once for {len(twice)} events: {list(twice)[:3]}"
    assert set(runs_per_id) == set(handled), "a recorded run without its handler run, or back"
    assert longest <= DEADLINE + SLACK, f"a request took {longest:.2f}s"
    assert all(o.retry_after == str(RETRY_AFTER) for o in unavailable), "a 503 without Retry-After"
    # Both processes moved off the dead leader, and the gateway off its own dead node.
    assert accepted_meanwhile, "the gateway accepted nothing while the leader was down"
    assert handled_meanwhile, "the consumer handled nothing while the leader was down"
    addresses = [f"127.0.0.1:{cluster.amqp_port(n)}" for n in (gateway_node, survivor)]
    assert gateway_nodes[-2:] == addresses, f"the gateway's nodes: {gateway_nodes}"
    assert recovered, "no event was accepted after both nodes were back"


def says_consuming(log: Path) -> bool:
    return "consumers.runner: consuming" in log.read_text()


async def subscribed(log: Path) -> None:
    """Once the consumer says it consumes (the management API's counts lag by seconds)."""
    deadline = time.monotonic() + 30
    while not says_consuming(log):
        assert time.monotonic() < deadline, "the consumer never subscribed"
        await asyncio.sleep(0.1)


async def sign_in(base_url: str) -> tuple[str, str]:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.post(
            f"{base_url}/api/auth/login", json={"email": EMAIL, "password": PASSWORD}
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return response.cookies[COOKIE].value, (await response.json())["csrfToken"]
