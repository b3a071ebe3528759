"""Two gateways on one Redis: an Idempotency-Key retried at the *other* gateway never yields a
second event id, in flight or not, and failed logins spread over both lock the account after
the configured number. The gateways are the real app factory with fake publishers (so a
publish can be held open deterministically) and the real Redis stores, under a prefix of the
test's own; the last tests run two real `build_app` gateways on the real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import JsonValue

from common.stores.idempotency import Claim
from gateway.bootstrap import build_app
from gateway.errors import BrokerUnavailable
from gateway.idempotency import body_fingerprint
from gateway.settings import GatewaySettings
from schemas.events import AppSettings, ConfluenceAppSync, EventUser
from tests.conftest import EMAIL, PASSWORD, AiohttpClient, BrokerNames, login
from tests.support.app import gateway_app
from tests.support.fakes import FakePublisher, GatedPublisher, RecordingPublisher
from tests.support.gateway import wait_readiness
from tests.support.redis import REDIS_URL, gateway_stores_on_redis, redis_idempotency

pytestmark = [pytest.mark.integration, pytest.mark.redis]

Client = TestClient[web.Request, web.Application]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def gateway(
    aiohttp_client: AiohttpClient,
    settings: GatewaySettings,
    prefix: str,
    publisher: FakePublisher,
    clock: Callable[[], float] = time.time,
    *,
    signed_in: bool = True,
) -> Client:
    idempotency, login_failures = gateway_stores_on_redis(settings, REDIS_URL, prefix, clock)
    app = gateway_app(
        settings,
        publisher=publisher,
        idempotency=idempotency,
        login_failures=login_failures,
        clock=clock,
    )
    client: Client = await aiohttp_client(app)
    if signed_in:
        await login(client)
    return client


async def sync(
    client: Client, key: str | None, data: JsonValue = "data"
) -> tuple[int, dict[str, Any], str | None, str | None]:
    """(status, body, Idempotent-Replayed, Retry-After)"""
    headers = {} if key is None else {"Idempotency-Key": key}
    response = await client.post("/api/sync", json={"data": data}, headers=headers)
    return (
        response.status,
        await response.json(),
        response.headers.get("Idempotent-Replayed"),
        response.headers.get("Retry-After"),
    )


async def attempt_login(client: Client, password: str) -> tuple[int, str | None]:
    response = await client.post("/api/auth/login", json={"email": EMAIL, "password": password})
    return response.status, response.headers.get("Retry-After")


async def test_a_retry_at_the_other_gateway_gets_the_same_id_and_publishes_nothing(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    redis_prefix: str,
) -> None:
    settings = make_settings()
    a_publisher, b_publisher = FakePublisher(), FakePublisher()
    a = await gateway(aiohttp_client, settings, redis_prefix, a_publisher)
    b = await gateway(aiohttp_client, settings, redis_prefix, b_publisher)
    first = await sync(a, "order-42", {"page": 7})
    again = [await sync(b, "order-42", {"page": 7}), await sync(a, "order-42", {"page": 7})]
    assert (first[0], first[2]) == (202, None)
    assert [(s, body["id"], replayed) for s, body, replayed, _ in again] == [
        (202, first[1]["id"], "true")
    ] * 2
    assert len(a_publisher.published) == 1
    assert b_publisher.published == []
    # Another body at the other gateway: refused, nothing published.
    status, body, _, _ = await sync(b, "order-42", {"page": 8})
    assert (status, body["error"]["code"]) == (422, "idempotency_key_reused")
    assert b_publisher.published == []


async def test_after_a_503_the_retry_at_the_other_gateway_publishes_the_attempted_event(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    redis_prefix: str,
) -> None:
    settings = make_settings()
    a_publisher, b_publisher = RecordingPublisher(), RecordingPublisher()
    a_publisher.fail_with = BrokerUnavailable("no confirm", retry_after=5)
    a = await gateway(aiohttp_client, settings, redis_prefix, a_publisher)
    b = await gateway(aiohttp_client, settings, redis_prefix, b_publisher)
    assert (await sync(a, "k", {"space": "ENG", "page": 7}))[0] == 503
    [attempt] = a_publisher.attempted
    status, body, replayed, _ = await sync(b, "k", {"page": 7, "space": "ENG"})
    assert (status, body["id"], replayed) == (202, str(attempt.id), None)
    [(published, _)] = b_publisher.published
    assert published.model_dump() == attempt.model_dump()  # the very event: id, ts, data
    status, body, replayed, _ = await sync(a, "k", {"page": 7, "space": "ENG"})
    assert (status, body["id"], replayed) == (202, str(attempt.id), "true")


async def test_a_retry_at_the_other_gateway_waits_for_the_publish_in_flight(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    redis_prefix: str,
) -> None:
    settings = make_settings(publish_deadline=5.0)
    a_publisher, b_publisher = GatedPublisher(), GatedPublisher()
    b_publisher.gate.set()
    a = await gateway(aiohttp_client, settings, redis_prefix, a_publisher)
    b = await gateway(aiohttp_client, settings, redis_prefix, b_publisher)
    first = asyncio.create_task(sync(a, "double-click"))
    await a_publisher.first_entered.wait()
    retry = asyncio.create_task(sync(b, "double-click"))
    await asyncio.sleep(0.3)
    assert not retry.done(), "the retry answered while the first publish was still open"
    a_publisher.gate.set()
    (a_status, a_body, a_replayed, _), (b_status, b_body, b_replayed, _) = await asyncio.gather(
        first, retry
    )
    assert (a_status, b_status) == (202, 202)
    assert a_body["id"] == b_body["id"] == str(a_publisher.published[0][0].id)
    assert (a_replayed, b_replayed) == (None, "true")
    assert b_publisher.entered == 0
    assert a_publisher.entered == 1


async def test_the_waiting_retry_shares_a_failure_and_the_next_retry_sends_the_same_event(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    redis_prefix: str,
) -> None:
    settings = make_settings(publish_deadline=5.0, retry_after=3)
    a_publisher, b_publisher = GatedPublisher(), RecordingPublisher()
    a_publisher.fail_with = BrokerUnavailable("no confirm", retry_after=3)
    a = await gateway(aiohttp_client, settings, redis_prefix, a_publisher)
    b = await gateway(aiohttp_client, settings, redis_prefix, b_publisher)
    first = asyncio.create_task(sync(a, "k"))
    await a_publisher.first_entered.wait()
    retry = asyncio.create_task(sync(b, "k"))
    await asyncio.sleep(0.2)
    a_publisher.gate.set()
    results = await asyncio.gather(first, retry)
    assert [(status, retry_after) for status, _, _, retry_after in results] == [(503, "3")] * 2
    assert b_publisher.attempted == []  # it waited for A's outcome: it did not publish
    status, body, _, _ = await sync(b, "k")
    assert (status, body["id"]) == (202, str(a_publisher.attempted[0].id))
    assert [event for event, _ in b_publisher.published] == [a_publisher.attempted[0]]


async def test_a_publish_still_in_flight_past_the_deadline_is_a_503_at_the_other_gateway(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    redis_prefix: str,
) -> None:
    settings = make_settings(publish_deadline=0.5, retry_after=2)
    a_publisher, b_publisher = GatedPublisher(), RecordingPublisher()
    a = await gateway(aiohttp_client, settings, redis_prefix, a_publisher)
    b = await gateway(aiohttp_client, settings, redis_prefix, b_publisher)
    first = asyncio.create_task(sync(a, "k"))
    await a_publisher.first_entered.wait()
    started = time.monotonic()
    status, body, _, retry_after = await sync(b, "k")
    waited = time.monotonic() - started
    assert (status, body["error"]["code"], retry_after) == (503, "broker_unavailable", "2")
    assert 0.5 <= waited < 0.5 + 0.5, waited
    assert b_publisher.attempted == []
    a_publisher.gate.set()
    a_status, a_body, _, _ = await first
    assert a_status == 202
    status, body, replayed, _ = await sync(b, "k")
    assert (status, body["id"], replayed) == (202, a_body["id"], "true")
    assert b_publisher.attempted == []


async def test_a_gateway_that_died_mid_publish_is_taken_over_with_its_event(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    redis_prefix: str,
) -> None:
    # Lease = deadline + 3 x the Redis timeout + 1 s: 2.0 s here (common/stores/backends.py).
    settings = make_settings(publish_deadline=0.4, redis_timeout=0.2, retry_after=1)
    b_publisher = RecordingPublisher()
    b = await gateway(aiohttp_client, settings, redis_prefix, b_publisher)
    # What a gateway leaves in Redis when it dies after recording its event, mid-publish.
    data: JsonValue = {"page": 1}
    dead = redis_idempotency(REDIS_URL, redis_prefix, lease=2.0)
    claim = await dead.claim(("u-ada", "k"), body_fingerprint(data))
    assert isinstance(claim, Claim)
    event = ConfluenceAppSync.new(
        user=EventUser(id="u-ada", email=EMAIL, name="Ada Lovelace"),
        app_settings=AppSettings(baseUrl="https://example.atlassian.net/wiki", spaceKeys=("ENG",)),
        data=data,
    )
    assert await dead.record(claim, event.model_dump_json().encode())
    claimed_at = time.monotonic()
    await dead.close()

    status, body, _, retry_after = await sync(b, "k", data)
    assert (status, retry_after) == (503, "1"), body  # still held: waited out the deadline
    await asyncio.sleep(max(0.0, claimed_at + 2.05 - time.monotonic()))
    status, body, replayed, _ = await sync(b, "k", data)
    assert (status, body["id"], replayed) == (202, str(event.id), None)
    [(published, _)] = b_publisher.published
    assert published.model_dump() == event.model_dump()


async def test_failed_logins_spread_over_two_gateways_lock_after_the_configured_number(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    redis_prefix: str,
) -> None:
    clock = FakeClock()
    settings = make_settings(login_max_failures=5, login_lockout_base=30)
    gateways = [
        await gateway(
            aiohttp_client, settings, redis_prefix, FakePublisher(), clock, signed_in=False
        )
        for _ in range(2)
    ]
    outcomes = [await attempt_login(gateways[i % 2], "wrong") for i in range(7)]
    assert outcomes == [(401, None)] * 5 + [(429, "30")] * 2
    assert await attempt_login(gateways[1], PASSWORD) == (429, "30")
    clock.now += 30
    assert (await attempt_login(gateways[0], PASSWORD))[0] == 200
    # The success at one gateway cleared the count for both.
    outcomes = [await attempt_login(gateways[i % 2], "wrong") for i in range(6)]
    assert outcomes == [(401, None)] * 5 + [(429, "30")]


async def test_the_shared_lockout_keeps_escalating_past_the_caps_cycle(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    redis_prefix: str,
) -> None:
    clock = FakeClock()
    settings = make_settings(
        login_max_failures=2,
        login_lockout_base=30,
        login_lockout_max=100,
        login_quiet_period=3600,
    )
    a, b = [
        await gateway(
            aiohttp_client, settings, redis_prefix, FakePublisher(), clock, signed_in=False
        )
        for _ in range(2)
    ]
    retry_afters = []
    for round_ in range(6):
        client = (a, b)[round_ % 2]
        while (outcome := await attempt_login(client, "wrong"))[0] == 401:
            pass
        retry_afters.append(outcome[1])
        clock.now += int(outcome[1] or 0) + 200  # quiet for twice the cap, not the quiet period
    # One failure after each lockout doubles it, then locks for the cap again and again: the
    # count never started over, though each pause outlasted the cap.
    assert retry_afters == ["30", "60", "100", "100", "100", "100"]
    clock.now += 3600 + 1
    assert [(await attempt_login(b, "wrong"))[0] for _ in range(3)] == [401, 401, 429]


# -- Two real gateways on the real broker ---------------------------------------------------


async def real_gateway(
    aiohttp_client: AiohttpClient, settings: GatewaySettings, *, signed_in: bool = True
) -> Client:
    client: Client = await aiohttp_client(build_app(settings))
    await wait_readiness(client, 200, within=15)
    if signed_in:
        await login(client)
    return client


async def test_two_real_gateways_on_one_redis_never_give_a_key_two_ids(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    redis_prefix: str,
) -> None:
    # A generous Redis timeout: 80 requests at once through two gateways and four clients on
    # one test loop, on a shared machine; this test is about ids, not about the bound.
    settings = make_settings(
        **names.gateway_overrides(),
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        redis_timeout=2.0,
    )
    a = await real_gateway(aiohttp_client, settings)
    b = await real_gateway(aiohttp_client, settings)
    channel = await amqp.channel()
    probe = await channel.declare_queue(f"{names.prefix}.probe", exclusive=True)
    await probe.bind(names.exchange, routing_key="#")

    keys = [uuid.uuid4().hex for _ in range(20)]
    answers: dict[str, list[tuple[int, str, str | None]]] = {key: [] for key in keys}
    for key in keys:
        for client in (a, b, a, b):  # each retry goes to the other gateway
            status, body, replayed, _ = await sync(client, key, {"key": key})
            answers[key].append((status, str(body.get("id")), replayed))
    # The same keys at once at both gateways, too.
    racing = [uuid.uuid4().hex for _ in range(20)]
    raced = await asyncio.gather(
        *(sync(client, key, {"key": key}) for key in racing for client in (a, b, a, b))
    )

    published: list[str] = []
    while len(published) < len(keys) + len(racing):
        message = await probe.get(timeout=5, fail=False)
        if message is None:
            break
        published.append(orjson.loads(message.body)["id"])
        await message.ack()
    await asyncio.sleep(0.5)
    late = await probe.get(timeout=1, fail=False)

    for key in keys:
        [(first_status, first_id, first_replayed), *retries] = answers[key]
        assert (first_status, first_replayed) == (202, None)
        assert retries == [(202, first_id, "true")] * 3
    ids_by_key: dict[str, set[str]] = {}
    for index, (status, body, _, _) in enumerate(raced):
        assert status == 202, body
        ids_by_key.setdefault(racing[index // 4], set()).add(body["id"])
    assert all(len(ids) == 1 for ids in ids_by_key.values()), ids_by_key
    # One event per key on the broker: a retry at the other gateway published nothing.
    assert late is None
    assert sorted(published) == sorted(
        [answers[key][0][1] for key in keys] + [ids.pop() for ids in ids_by_key.values()]
    )


async def test_failed_logins_at_two_real_gateways_lock_after_the_configured_number(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    redis_prefix: str,
) -> None:
    settings = make_settings(
        **names.gateway_overrides(),
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        login_max_failures=4,
    )
    a = await real_gateway(aiohttp_client, settings, signed_in=False)
    b = await real_gateway(aiohttp_client, settings, signed_in=False)
    statuses = [(await attempt_login((a, b)[i % 2], "wrong"))[0] for i in range(6)]
    assert statuses == [401] * 4 + [429] * 2
