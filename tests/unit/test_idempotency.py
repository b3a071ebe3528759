"""Idempotency-Key on POST /api/sync: through the real app factory with a fake publisher, and
the cache on its own with a fake clock."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from gateway.app import create_app
from gateway.errors import BrokerUnavailable
from gateway.idempotency import IdempotencyCache
from gateway.settings import GatewaySettings
from schemas.events import ConfluenceAppSync
from tests.conftest import AiohttpClient, FakePublisher, login

Client = TestClient[web.Request, web.Application]


class GatedPublisher(FakePublisher):
    """Holds every publish until `gate` opens, so a test can overlap two requests."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = 0
        self.first_entered = asyncio.Event()

    async def publish(self, event: ConfluenceAppSync, *, correlation_id: str) -> None:
        self.entered += 1
        self.first_entered.set()
        await self.gate.wait()
        await super().publish(event, correlation_id=correlation_id)


async def signed_in_client(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    publisher: FakePublisher,
) -> Client:
    client: Client = await aiohttp_client(create_app(make_settings(), publisher=publisher))
    await login(client)
    return client


async def sync(client: Client, key: str | None) -> tuple[int, dict[str, Any], str | None]:
    headers = {} if key is None else {"Idempotency-Key": key}
    response = await client.post("/api/sync", json={"data": "data"}, headers=headers)
    return response.status, await response.json(), response.headers.get("Idempotent-Replayed")


async def test_a_retry_with_the_same_key_gets_the_same_id_and_publishes_once(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await signed_in_client(aiohttp_client, make_settings, fake_publisher)
    first = await sync(client, "order-42")
    second = await sync(client, "order-42")
    assert first[0] == second[0] == 202
    assert first[1]["id"] == second[1]["id"] == str(fake_publisher.published[0][0].id)
    assert len(fake_publisher.published) == 1
    assert (first[2], second[2]) == (None, "true")


async def test_other_keys_no_key_and_other_users_each_publish(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await signed_in_client(aiohttp_client, make_settings, fake_publisher)
    ids = [(await sync(client, key))[1]["id"] for key in ("a", "b", None, None)]
    await login(client, "bob@example.com")
    ids.append((await sync(client, "a"))[1]["id"])
    assert len(set(ids)) == 5
    assert len(fake_publisher.published) == 5
    assert fake_publisher.published[-1][0].user.id == "u-bob"


async def test_a_failed_publish_is_not_remembered_so_the_retry_publishes(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await signed_in_client(aiohttp_client, make_settings, fake_publisher)
    fake_publisher.fail_with = BrokerUnavailable("no confirm", retry_after=5)
    status, body, _ = await sync(client, "retry-me")
    assert status == 503
    assert body["error"]["code"] == "broker_unavailable"

    fake_publisher.fail_with = None
    status, body, replayed = await sync(client, "retry-me")
    assert (status, replayed) == (202, None)
    assert [str(event.id) for event, _ in fake_publisher.published] == [body["id"]]


async def test_a_concurrent_duplicate_waits_for_the_first_and_shares_its_id(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    publisher = GatedPublisher()
    client = await signed_in_client(aiohttp_client, make_settings, publisher)
    first = asyncio.create_task(sync(client, "double-click"))
    second = asyncio.create_task(sync(client, "double-click"))
    await publisher.first_entered.wait()
    await asyncio.sleep(0.05)  # time for the second request to reach the cache
    publisher.gate.set()
    results = await asyncio.gather(first, second)

    assert publisher.entered == 1
    assert [status for status, _, _ in results] == [202, 202]
    assert results[0][1]["id"] == results[1][1]["id"] == str(publisher.published[0][0].id)
    assert sorted(str(replayed) for _, _, replayed in results) == ["None", "true"]


async def test_a_concurrent_duplicate_shares_a_failure_and_the_key_stays_free(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    publisher = GatedPublisher()
    publisher.fail_with = BrokerUnavailable("no confirm", retry_after=5)
    client = await signed_in_client(aiohttp_client, make_settings, publisher)
    first = asyncio.create_task(sync(client, "k"))
    second = asyncio.create_task(sync(client, "k"))
    await publisher.first_entered.wait()
    await asyncio.sleep(0.05)
    publisher.gate.set()
    assert [status for status, _, _ in await asyncio.gather(first, second)] == [503, 503]
    assert publisher.entered == 1

    publisher.fail_with = None
    assert (await sync(client, "k"))[0] == 202
    assert publisher.entered == 2
    assert len(publisher.published) == 1


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("Idempotency-Key", "")], id="empty"),
        pytest.param([("Idempotency-Key", "x" * 256)], id="too-long"),
        pytest.param([("Idempotency-Key", "tab\there")], id="control-character"),
        pytest.param([("Idempotency-Key", "caf\u00e9")], id="not-ascii"),
        pytest.param([("Idempotency-Key", "a"), ("Idempotency-Key", "b")], id="two-headers"),
    ],
)
async def test_a_bad_key_is_400_in_the_error_shape_and_nothing_is_published(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    headers: list[tuple[str, str]],
) -> None:
    client = await signed_in_client(aiohttp_client, make_settings, fake_publisher)
    response = await client.post("/api/sync", json={"data": 1}, headers=CIMultiDict(headers))
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_idempotency_key"
    assert error["message"]
    assert fake_publisher.published == []


async def test_the_longest_valid_key_is_accepted(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await signed_in_client(aiohttp_client, make_settings, fake_publisher)
    assert (await sync(client, "~ !" + "k" * 252))[0] == 202


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def publisher_of_ids() -> tuple[Callable[[], Any], list[str]]:
    published: list[str] = []
    counter = itertools.count()

    async def publish() -> str:
        published.append(event_id := f"event-{next(counter)}")
        return event_id

    return publish, published


async def test_a_key_expires_after_the_window() -> None:
    clock = FakeClock()
    cache = IdempotencyCache(window=60, max_keys=10, clock=clock)
    publish, published = publisher_of_ids()
    assert (await cache.run_once("u", "k", publish)).event_id == "event-0"
    clock.now += 59.9
    assert (await cache.run_once("u", "k", publish)).replayed
    clock.now += 0.1
    outcome = await cache.run_once("u", "k", publish)
    assert (outcome.event_id, outcome.replayed) == ("event-1", False)
    assert published == ["event-0", "event-1"]


async def test_the_cache_is_bounded_and_drops_the_oldest_key() -> None:
    clock = FakeClock()
    cache = IdempotencyCache(window=60, max_keys=3, clock=clock)
    publish, published = publisher_of_ids()
    for key in ("a", "b", "c", "d"):
        clock.now += 1
        await cache.run_once("u", key, publish)
    assert len(cache) == 3
    assert (await cache.run_once("u", "d", publish)).replayed
    assert not (await cache.run_once("u", "a", publish)).replayed  # "a" was dropped
    assert len(published) == 5


async def test_expired_keys_are_dropped_when_new_ones_arrive() -> None:
    clock = FakeClock()
    cache = IdempotencyCache(window=60, max_keys=100, clock=clock)
    publish, _ = publisher_of_ids()
    for key in ("a", "b"):
        await cache.run_once("u", key, publish)
    clock.now += 61
    await cache.run_once("u", "c", publish)
    assert len(cache) == 1


async def test_a_waiter_takes_over_when_the_first_request_is_cancelled() -> None:
    cache = IdempotencyCache(window=60, max_keys=10)
    started = asyncio.Event()

    async def hangs() -> str:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def confirms() -> str:
        return "event-2"

    first = asyncio.create_task(cache.run_once("u", "k", hangs))
    await started.wait()
    second = asyncio.create_task(cache.run_once("u", "k", confirms))
    await asyncio.sleep(0.01)
    first.cancel()
    outcome = await second
    assert (outcome.event_id, outcome.replayed) == ("event-2", False)
    with pytest.raises(asyncio.CancelledError):
        await first
