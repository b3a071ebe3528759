"""Two gateways and two consumers, as a deployment runs them: four real `syncgate` processes,
each in a working directory of its own (its own users and app-settings files, nothing on a
shared disk), sharing nothing but URLs: the three-node cluster (gateway 1 on node 1, gateway 2
on node 2, the consumers on nodes 2 and 3), a PostgreSQL database of the test's own and a
Redis key prefix of the test's own.

Load goes through both gateways with one session cookie, as behind a balancer, and each retry
with an Idempotency-Key goes to the *other* gateway. Every 202'd id is in the run store exactly
once and was handled once, a key never has a second event id, both gateways answer
GET /api/runs/{id} as handled, and failed logins spread over both lock the account after the
configured number, not twice it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest

from tests.conftest import EMAIL, PASSWORD, BrokerNames
from tests.support.cluster import Cluster, ClusterError
from tests.support.consumer import BIN
from tests.support.gateway import wait_ready_at
from tests.support.metrics import parse, settled
from tests.support.postgres import fetch, free_port, recorded_ids
from tests.support.redis import REDIS_URL

pytestmark = [
    pytest.mark.integration,
    pytest.mark.cluster,
    pytest.mark.postgres,
    pytest.mark.redis,
]

COOKIE = "syncgate"
MAX_FAILURES = 4
UNKEYED, KEYED, RACED = 160, 80, 40
CONCURRENCY = 8
STARTUP = 40.0  # seconds a process may take to be ready (two cores, shared)


@dataclass
class Process:
    label: str
    workdir: Path
    process: asyncio.subprocess.Process

    @property
    def log(self) -> str:
        return (self.workdir / "process.log").read_text(errors="replace")


def process_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The test's environment without any SYNCGATE_* setting of its own, plus `settings`: a
    process sees only what it is given."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SYNCGATE_")}
    return {**base, **settings}


async def start(label: str, workdir: Path, command: str, settings: Mapping[str, str]) -> Process:
    """`syncgate <command>` with its working directory in `workdir`, logging into it."""
    with (workdir / "process.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            str(BIN / "syncgate"),
            command,
            env=process_env(settings),
            cwd=workdir,
            stdout=log,
            stderr=log,
        )
    return Process(label, workdir, process)


async def stop(processes: list[Process]) -> None:
    for p in processes:
        if p.process.returncode is None:
            p.process.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            await asyncio.wait_for(p.process.wait(), 30)
        except TimeoutError:
            p.process.kill()
            await p.process.wait()


@dataclass(frozen=True, slots=True)
class Answer:
    gateway: int
    status: int
    event_id: str | None
    replayed: bool
    retry_after: str | None


class Balancer:
    """One client, one session, and the gateways' base URLs: what a balancer in front of them
    would pass on, with the gateway picked by the caller."""

    def __init__(self, http: aiohttp.ClientSession, urls: list[str]) -> None:
        self.http = http
        self.urls = urls
        self.headers: dict[str, str] = {}

    async def login(self, gateway: int, password: str) -> tuple[int, str | None]:
        async with self.http.post(
            self.urls[gateway] + "/api/auth/login", json={"email": EMAIL, "password": password}
        ) as response:
            if response.status == 200:
                body = await response.json()
                cookie = response.cookies[COOKIE].value
                self.headers = {"Cookie": f"{COOKIE}={cookie}", "X-CSRF-Token": body["csrfToken"]}
            return response.status, response.headers.get("Retry-After")

    async def sync(self, gateway: int, data: object, key: str | None = None) -> Answer:
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        async with self.http.post(
            self.urls[gateway] + "/api/sync", json={"data": data}, headers=headers
        ) as response:
            body = await response.json()
            return Answer(
                gateway=gateway,
                status=response.status,
                event_id=body.get("id") if response.status == 202 else None,
                replayed=response.headers.get("Idempotent-Replayed") == "true",
                retry_after=response.headers.get("Retry-After"),
            )

    async def run_status(self, gateway: int, event_id: str) -> tuple[int, Any]:
        async with self.http.get(
            f"{self.urls[gateway]}/api/runs/{event_id}", headers=self.headers
        ) as response:
            return response.status, await response.json()


@contextlib.asynccontextmanager
async def balancer(urls: list[str]) -> AsyncIterator[Balancer]:
    # Cookies by hand: a cookie jar would treat two ports of one host as one site anyway.
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=30)
    ) as http:
        yield Balancer(http, urls)


async def bounded(jobs: list[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run the jobs, at most `limit` at a time."""
    queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        while not queue.empty():
            await (queue.get_nowait())()

    await asyncio.gather(*(worker() for _ in range(limit)))


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def scrape(port: int) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        samples = parse(await response.text())
    return {o: settled(samples, o) for o in ("ack", "duplicate", "retry", "dead_letter")}


async def connections_by_node(cluster: Cluster, roles: set[str]) -> set[tuple[int, str]]:
    """(node, connection name) for the connections whose name starts with one of `roles`."""
    found = set()
    for connection in await cluster.management_get("connections"):
        name = (connection.get("client_properties") or {}).get("connection_name", "")
        role = name.split("@", 1)[0]
        if role in roles:
            found.add((cluster.node_number(connection["node"]), role))
    return found


@pytest.fixture
async def names(cluster: Cluster) -> AsyncIterator[BrokerNames]:
    """Unique names for the test's topology on the cluster (not on the standard broker, as
    the shared `names` fixture), deleted through node 1 afterwards."""
    names = BrokerNames()
    yield names
    async with await aio_pika.connect(cluster.amqp_url(1), timeout=10) as connection:
        channel = await connection.channel()
        for kind in ("queues", "exchanges"):
            for item in await cluster.management_get(f"{kind}/%2F?columns=name", node=1):
                if item["name"].startswith(names.prefix):
                    if kind == "queues":
                        await channel.queue_delete(item["name"])
                    else:
                        await channel.exchange_delete(item["name"])


async def test_two_gateways_and_two_consumers_on_the_cluster_keep_every_promise(
    cluster: Cluster,
    names: BrokerNames,
    postgres_url: str,
    redis_prefix: str,
    users_file: Path,
    app_settings_file: Path,
    session_key: str,
    tmp_path: Path,
) -> None:
    names_env = {
        "SYNCGATE_EXCHANGE": names.exchange,
        "SYNCGATE_UNROUTED_EXCHANGE": names.unrouted,
        "SYNCGATE_LOG_FORMAT": "console",
        "SYNCGATE_RUN_STORE": postgres_url,
    }
    consumer_ports = [free_port(), free_port()]
    consumers_env = [
        {
            **names_env,
            "SYNCGATE_AMQP_URL": cluster.amqp_url(node),
            "SYNCGATE_QUEUE": names.queue,
            "SYNCGATE_DEAD_LETTER_EXCHANGE": names.dlx,
            "SYNCGATE_METRICS_PORT": str(port),
        }
        for node, port in zip((2, 3), consumer_ports, strict=True)
    ]
    gateway_ports = [free_port(), free_port()]
    gateways_env = [
        {
            **names_env,
            "SYNCGATE_AMQP_URL": cluster.amqp_url(node),
            "SYNCGATE_PORT": str(port),
            "SYNCGATE_SESSION_KEYS": session_key,
            "SYNCGATE_COOKIE_SECURE": "false",
            "SYNCGATE_REVOCATION_STREAM": names.revocations,
            "SYNCGATE_REDIS_URL": REDIS_URL,
            "SYNCGATE_REDIS_PREFIX": redis_prefix,
            # Generous: a shared two-core machine; this test is about ids, not the bound.
            "SYNCGATE_REDIS_TIMEOUT": "2.0",
            "SYNCGATE_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
        }
        for node, port in zip((1, 2), gateway_ports, strict=True)
    ]
    urls = [f"http://127.0.0.1:{port}" for port in gateway_ports]

    processes: list[Process] = []
    try:
        for i, env in enumerate(consumers_env, start=1):
            workdir = tmp_path / f"consumer-{i}"
            workdir.mkdir()
            processes.append(await start(f"consumer {i}", workdir, "consumer", env))

        async def both_consuming() -> bool:
            for p in processes:
                assert p.process.returncode is None, f"{p.label} exited:\n{p.log}"
            try:
                queue = await cluster.management_get(f"queues/%2F/{names.queue}")
            except ClusterError:  # not declared yet: a 404 until the first consumer is up
                return False
            return bool(queue.get("consumers") == 2)

        await until(both_consuming, "both consumers on the queue", STARTUP)

        for i, env in enumerate(gateways_env, start=1):
            # The gateway's files in its own working directory, found by their default,
            # relative names: nothing is read from another process's directory.
            workdir = tmp_path / f"gateway-{i}"
            workdir.mkdir()
            shutil.copy(users_file, workdir / "users.json")
            shutil.copy(app_settings_file, workdir / "app-settings.toml")
            processes.append(await start(f"gateway {i}", workdir, "gateway", env))
        for url in urls:
            await wait_ready_at(url, within=STARTUP)

        # Each process on the node it was given.
        expected = {(1, "syncgate-gateway"), (2, "syncgate-gateway")}
        expected |= {(2, "syncgate-consumer"), (3, "syncgate-consumer")}

        async def on_their_nodes() -> bool:
            roles = {"syncgate-gateway", "syncgate-consumer"}
            return await connections_by_node(cluster, roles) == expected

        await until(on_their_nodes, "each process's connection on its node", 15)

        answers: list[Answer] = []
        by_key: dict[str, list[Answer]] = {}
        data_of: dict[str, object] = {}
        async with balancer(urls) as client:
            assert (await client.login(0, PASSWORD))[0] == 200  # one session for both

            def unkeyed(n: int) -> Callable[[], Awaitable[None]]:
                async def job() -> None:
                    answer = await client.sync(n % 2, {"n": n})
                    answers.append(answer)
                    if answer.event_id is not None:
                        data_of[answer.event_id] = {"n": n}

                return job

            def keyed(n: int) -> Callable[[], Awaitable[None]]:
                # The first try at one gateway, each retry at the other one.
                async def job() -> None:
                    key = f"k-{uuid.uuid4().hex}"
                    for attempt in range(3):
                        answer = await client.sync((n + attempt) % 2, {"key": key}, key)
                        answers.append(answer)
                        by_key.setdefault(key, []).append(answer)

                return job

            def raced() -> Callable[[], Awaitable[None]]:
                # A double click that the balancer spreads: both gateways at once, one key.
                async def job() -> None:
                    key = f"r-{uuid.uuid4().hex}"
                    both = await asyncio.gather(
                        client.sync(0, {"key": key}, key), client.sync(1, {"key": key}, key)
                    )
                    answers.extend(both)
                    by_key.setdefault(key, []).extend(both)

                return job

            jobs = [unkeyed(n) for n in range(UNKEYED)]
            jobs += [keyed(n) for n in range(KEYED)]
            jobs += [raced() for _ in range(RACED)]
            # Interleaved, the same way every run (997 is prime: each index gets its own place).
            jobs = [jobs[i] for i in sorted(range(len(jobs)), key=lambda i: (i * 7919) % 997)]
            started = time.monotonic()
            await bounded(jobs, CONCURRENCY)
            load_seconds = time.monotonic() - started

            for key, key_answers in by_key.items():
                for answer in key_answers:
                    if answer.event_id is not None:
                        data_of.setdefault(answer.event_id, {"key": key})
            accepted = sorted({a.event_id for a in answers if a.event_id is not None})

            async def all_recorded() -> bool:
                return len(await recorded_ids(postgres_url)) >= len(accepted)

            await until(all_recorded, "every accepted event in the run store", 90)
            await asyncio.sleep(1.0)  # anything handled twice or extra would show by now

            views = []
            for event_id in accepted:
                for gateway in (0, 1):
                    views.append((gateway, event_id, *(await client.run_status(gateway, event_id))))

        # Failed logins spread over both gateways, with a fresh client (no session).
        async with balancer(urls) as stranger:
            logins = [await stranger.login(i % 2, "wrong") for i in range(MAX_FAILURES + 2)]
            right = [await stranger.login(gateway, PASSWORD) for gateway in (0, 1)]

        figures = [await scrape(port) for port in consumer_ports]
    finally:
        await stop(processes)

    rows = await fetch(postgres_url, "SELECT event_id, data FROM runs")
    processed = await fetch(postgres_url, "SELECT event_id FROM processed_events")
    statuses = Counter((a.gateway, a.status, a.replayed) for a in answers)
    print(
        f"\nscale out: {len(answers)} requests in {load_seconds:.1f}s through 2 gateways "
        f"({dict(sorted(statuses.items()))}), {len(accepted)} accepted, {len(by_key)} keys; "
        f"runs={len(rows)} processed={len(processed)}; "
        f"consumer 1 {figures[0]}, consumer 2 {figures[1]}; logins {logins} then {right}"
    )
    for p in processes:
        assert p.process.returncode == 0, f"{p.label} exited with {p.process.returncode}"
        assert "ERROR" not in p.log, f"{p.label} logged an error:\n{p.log[-3000:]}"

    # A healthy cluster and stores: every request was accepted, at both gateways.
    assert {a.status for a in answers} == {202}, statuses
    assert {a.gateway for a in answers} == {0, 1}
    # A retried key never yields a second event id, whichever gateway answered; the retries
    # at the other gateway were replays.
    for key, key_answers in by_key.items():
        assert len({a.event_id for a in key_answers}) == 1, (key, key_answers)
        assert sum(not a.replayed for a in key_answers) == 1, (key, key_answers)
    assert len(accepted) == UNKEYED + KEYED + RACED
    # Every 202'd id is in the run store exactly once, and nothing else is: a key that had
    # published twice would show as an extra row.
    recorded = sorted(row["event_id"] for row in rows)
    assert recorded == accepted
    assert sorted(row["event_id"] for row in processed) == accepted
    assert {row["event_id"]: orjson.loads(row["data"]) for row in rows} == data_of
    # Handled once: the handler ran once per event, over both consumers, and both took part.
    assert sum(f["ack"] for f in figures) == len(accepted)
    assert all(f["ack"] > 0 for f in figures), figures
    assert sum(f["retry"] + f["dead_letter"] for f in figures) == 0
    # Both gateways read the one run store.
    not_handled = [v for v in views if (v[2], v[3].get("status")) != (200, "handled")]
    assert not_handled == [], not_handled[:5]
    # The account locks after the configured number of failures over both, not 2 x that.
    assert [status for status, _ in logins] == [401] * MAX_FAILURES + [429] * 2
    assert [status for status, _ in right] == [429, 429]
    assert all(retry_after is not None for _, retry_after in logins[MAX_FAILURES:] + right)
