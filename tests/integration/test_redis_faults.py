"""Redis down under load, on a redis-server of the test's own (never the machine's): logins and
syncs with an Idempotency-Key answer 503 `store_unavailable` with Retry-After, syncs without a
key keep answering 202 (no promise depends on Redis, and they never touch it), and service
comes back by itself when Redis does. The gateway is the real `build_app` on the real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from aiohttp.test_utils import TestServer

from gateway.bootstrap import build_app
from gateway.settings import GatewaySettings
from tests.conftest import PASSWORD, AiohttpClient, BrokerNames, login
from tests.support.app import gateway_app
from tests.support.fakes import FakePublisher
from tests.support.gateway import Client, wait_readiness
from tests.support.log_capture import json_log_lines
from tests.support.redis import REDIS_URL, OwnRedis, gateway_stores_on_redis, own_redis
from tests.support.tcp_proxy import proxy_in_front_of

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.fault]

DEADLINE = 2.0
REDIS_TIMEOUT = 0.3
RETRY_AFTER = 1
BEFORE, OUTAGE, AFTER = 2.0, 3.0, 3.0
PASSWORD_IN_URL = "not-a-real-password"
RECOVERY = 1.0
"""How long after Redis is back every answer must be a success again."""

AiohttpServer = Callable[..., Awaitable[TestServer]]


@dataclass(frozen=True, slots=True)
class Answer:
    kind: str
    started: float
    ended: float
    status: int
    code: str | None
    retry_after: str | None
    event_id: str | None
    key: str | None


async def ask(
    client: Client, kind: str, path: str, body: dict[str, Any], headers: dict[str, str]
) -> Answer:
    started = time.monotonic()
    response = await client.post(path, json=body, headers=headers)
    payload = await response.json()
    return Answer(
        kind=kind,
        started=started,
        ended=time.monotonic(),
        status=response.status,
        code=payload.get("error", {}).get("code") if response.status >= 400 else None,
        retry_after=response.headers.get("Retry-After"),
        event_id=payload.get("id") if kind != "login" else None,
        key=headers.get("Idempotency-Key"),
    )


def settings_on(
    make_settings: Callable[..., GatewaySettings], names: BrokerNames, server: OwnRedis
) -> GatewaySettings:
    return make_settings(
        **names.gateway_overrides(),
        redis_url=server.url,
        redis_timeout=REDIS_TIMEOUT,
        publish_deadline=DEADLINE,
        retry_after=RETRY_AFTER,
        login_max_failures_per_address=100_000,
    )


async def test_with_redis_down_logins_and_keyed_syncs_are_503_and_unkeyed_syncs_go_on(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    tmp_path: Path,
) -> None:
    async with own_redis(tmp_path, password=PASSWORD_IN_URL) as server:
        settings = settings_on(make_settings, names, server)
        test_server = await aiohttp_server(build_app(settings))
        syncs: Client = await aiohttp_client(test_server)
        logins: Client = await aiohttp_client(test_server)
        await wait_readiness(syncs, 200, within=15)
        await login(syncs)

        answers: list[Answer] = []
        stop = asyncio.Event()

        async def keyed() -> None:
            key = uuid.uuid4().hex
            while not stop.is_set():
                answer = await ask(
                    syncs, "keyed", "/api/sync", {"data": key}, {"Idempotency-Key": key}
                )
                answers.append(answer)
                if answer.status == 202:
                    key = uuid.uuid4().hex  # after a 503 the same key is retried
                await asyncio.sleep(0.02)

        async def unkeyed() -> None:
            while not stop.is_set():
                answers.append(await ask(syncs, "unkeyed", "/api/sync", {"data": 1}, {}))
                await asyncio.sleep(0.02)

        async def sign_in() -> None:
            wrong = False
            while not stop.is_set():
                email, password = (
                    (f"{uuid.uuid4().hex}@example.com", "wrong")
                    if wrong
                    else ("bob@example.com", PASSWORD)
                )
                body = {"email": email, "password": password}
                answers.append(await ask(logins, "login", "/api/auth/login", body, {}))
                wrong = not wrong
                await asyncio.sleep(0.02)

        with json_log_lines() as logs:
            loops = [asyncio.create_task(loop()) for loop in (keyed, keyed, unkeyed, sign_in)]
            await asyncio.sleep(BEFORE)
            stopped = time.monotonic()
            await server.stop()
            await asyncio.sleep(OUTAGE)
            restarting = time.monotonic()
            await server.start()
            restarted = time.monotonic()
            await asyncio.sleep(AFTER)
            stop.set()
            await asyncio.gather(*loops)

    def phase(answer: Answer) -> str:
        if answer.ended < stopped:
            return "before"
        if answer.started > stopped + 0.05 and answer.ended < restarting:
            return "outage"
        if answer.started > restarted + RECOVERY:
            return "after"
        return "edges"

    figures = Counter((phase(a), a.kind, a.status, a.code) for a in answers)
    longest = max(a.ended - a.started for a in answers)
    print()
    for (when, kind, status, code), count in sorted(figures.items(), key=str):
        print(f"  {when:7} {kind:8} {status} {code or '':18} {count:5}")
    print(f"  requests {len(answers)}, longest {longest * 1000:.0f} ms")

    by_phase: dict[str, list[Answer]] = {}
    for answer in answers:
        by_phase.setdefault(phase(answer), []).append(answer)
    for when in ("before", "after"):
        assert {(a.kind, a.status) for a in by_phase[when]} <= {
            ("login", 200),
            ("login", 401),
            ("keyed", 202),
            ("unkeyed", 202),
        }, when
    outage = by_phase["outage"]
    assert {(a.kind, a.status, a.code) for a in outage} == {
        ("login", 503, "store_unavailable"),
        ("keyed", 503, "store_unavailable"),
        ("unkeyed", 202, None),
    }
    assert sum(a.kind == "unkeyed" for a in outage) >= 20
    # Everything else, at the edges too: a success, or a 503 with Retry-After; never a 500.
    assert {a.status for a in answers} <= {200, 202, 401, 503}
    assert all(a.retry_after == str(RETRY_AFTER) for a in answers if a.status == 503)
    assert longest <= DEADLINE + 0.5
    # A key has at most one event id, whatever happened around it.
    ids: dict[str, set[str]] = {}
    for a in answers:
        if a.key is not None and a.event_id is not None:
            ids.setdefault(a.key, set()).add(a.event_id)
    assert all(len(event_ids) == 1 for event_ids in ids.values())
    # The password in the URL never reached a log line (nor an answer: they are generic).
    log_text = "\n".join(logs.raw())
    assert PASSWORD_IN_URL not in log_text
    assert len(logs.grep("Redis is unavailable")) == 2  # one line per store, not per request
    assert len(logs.grep("Redis answers again")) == 2


async def test_a_sync_without_a_key_never_touches_redis(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    tmp_path: Path,
) -> None:
    async with own_redis(tmp_path, password=PASSWORD_IN_URL) as server:
        settings = settings_on(make_settings, names, server)
        client: Client = await aiohttp_client(build_app(settings))
        await wait_readiness(client, 200, within=15)
        await login(client)
        probe = redis.asyncio.Redis.from_url(server.url)
        try:
            before = (await probe.info("stats"))["total_commands_processed"]
            statuses = [
                (await client.post("/api/sync", json={"data": i})).status for i in range(50)
            ]
            after = (await probe.info("stats"))["total_commands_processed"]
            keyed = await client.post("/api/sync", json={}, headers={"Idempotency-Key": "k"})
            with_key = (await probe.info("stats"))["total_commands_processed"]
        finally:
            await probe.aclose()
    assert statuses == [202] * 50
    assert after - before == 1, "only the probe's own INFO ran"
    assert keyed.status == 202
    assert with_key - after > 1, "a keyed sync does go through Redis"


async def test_the_redis_url_is_a_secret_in_settings_and_stores(
    make_settings: Callable[..., GatewaySettings],
) -> None:
    settings = make_settings(redis_url="redis://:hunter2-secret@127.0.0.1:1/0")
    app = build_app(settings)
    shown = " ".join(
        [repr(settings), str(settings), repr(settings.redis), *(repr(v) for v in app.values())]
    )
    assert "hunter2" not in shown
    assert settings.redis is not None
    assert settings.redis.url.get_secret_value().endswith("@127.0.0.1:1/0")
    assert make_settings(redis_url="").redis is None
    with pytest.raises(ValueError, match="redis://") as refused:
        make_settings(redis_url="http://:hunter2-secret@example.com")
    assert "hunter2" not in str(refused.value)


async def test_a_half_open_redis_costs_a_request_the_redis_timeout_not_more(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    redis_prefix: str,
) -> None:
    settings = make_settings(
        redis_timeout=REDIS_TIMEOUT, publish_deadline=1.0, retry_after=RETRY_AFTER
    )
    lease = settings.publish_deadline + 3 * REDIS_TIMEOUT + 1.0  # common/stores/backends.py
    bob = {"email": "bob@example.com", "password": PASSWORD}
    async with proxy_in_front_of(REDIS_URL) as (proxy, url):
        idempotency, login_failures = gateway_stores_on_redis(
            settings, url, redis_prefix, time.time
        )
        client: Client = await aiohttp_client(
            gateway_app(
                settings,
                publisher=FakePublisher(),
                idempotency=idempotency,
                login_failures=login_failures,
            )
        )
        await login(client)
        proxy.pause()  # connected, and nothing ever comes back
        paused = [
            await ask(client, "keyed", "/api/sync", {"data": 1}, {"Idempotency-Key": "k"}),
            await ask(client, "unkeyed", "/api/sync", {"data": 1}, {}),
            await ask(client, "login", "/api/auth/login", bob, {}),
        ]
        claimed_at = time.monotonic()
        proxy.resume()
        resumed = [
            await ask(client, "keyed", "/api/sync", {"data": 2}, {"Idempotency-Key": "k2"}),
            # The paused claim reached Redis once the link flowed again: it holds "k" for its
            # lease, as a gateway that died would. A retry waits, then answers 503.
            await ask(client, "keyed", "/api/sync", {"data": 1}, {"Idempotency-Key": "k"}),
            await ask(client, "login", "/api/auth/login", bob, {}),
        ]
        await login(client)  # Ada again, whose key "k" is
        await asyncio.sleep(max(0.0, claimed_at + lease - time.monotonic()))
        later = await ask(client, "keyed", "/api/sync", {"data": 1}, {"Idempotency-Key": "k"})
    print()
    for answer in [*paused, *resumed, later]:
        elapsed = (answer.ended - answer.started) * 1000
        print(f"  {answer.kind:8} {answer.status} {answer.code or '':18} {elapsed:5.0f} ms")
    assert [(a.kind, a.status, a.code, a.retry_after) for a in paused] == [
        ("keyed", 503, "store_unavailable", str(RETRY_AFTER)),
        ("unkeyed", 202, None, None),
        ("login", 503, "store_unavailable", str(RETRY_AFTER)),
    ]
    keyed, _, signed_in = paused
    assert keyed.ended - keyed.started <= REDIS_TIMEOUT + 0.25
    # A login asks the store once before the password check: it never reached scrypt.
    assert signed_in.ended - signed_in.started <= REDIS_TIMEOUT + 0.25
    assert [(a.kind, a.status, a.code) for a in resumed] == [
        ("keyed", 202, None),
        ("keyed", 503, "broker_unavailable"),
        ("login", 200, None),
    ]
    # Its lease ran out with nothing recorded, so nothing was published: a new event now.
    assert (later.status, later.code) == (202, None)
