"""Idempotency-Key on POST /api/sync: through the real app factory with a fake publisher, and
the cache on its own with a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from pydantic import JsonValue

from common.stores.idempotency_memory import MemoryIdempotencyStore
from gateway import idempotency
from gateway.errors import BrokerUnavailable, IdempotencyKeyReused
from gateway.idempotency import IdempotencyCache, Outcome
from gateway.settings import GatewaySettings
from schemas.events import AppSettings, ConfluenceAppSync, EventUser
from tests.conftest import AiohttpClient, login
from tests.support.app import gateway_app
from tests.support.fakes import FakePublisher, GatedPublisher, RecordingPublisher

Client = TestClient[web.Request, web.Application]
MiB = 1024 * 1024


async def signed_in_client(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    publisher: FakePublisher,
) -> Client:
    client: Client = await aiohttp_client(gateway_app(make_settings(), publisher=publisher))
    await login(client)
    return client


async def sync(
    client: Client, key: str | None, data: JsonValue = "data"
) -> tuple[int, dict[str, Any], str | None]:
    headers = {} if key is None else {"Idempotency-Key": key}
    response = await client.post("/api/sync", json={"data": data}, headers=headers)
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
    # Bob's "a" is his own key: another body than Ada's is no reuse.
    ids.append((await sync(client, "a", data="bob's"))[1]["id"])
    assert len(set(ids)) == 5
    assert len(fake_publisher.published) == 5
    assert fake_publisher.published[-1][0].user.id == "u-bob"


async def test_the_retry_after_a_503_publishes_the_attempted_event_again(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    publisher = RecordingPublisher()
    client = await signed_in_client(aiohttp_client, make_settings, publisher)
    publisher.fail_with = BrokerUnavailable("no confirm", retry_after=5)
    status, body, _ = await sync(client, "retry-me", data={"page": 7, "space": "ENG"})
    assert status == 503
    assert body["error"]["code"] == "broker_unavailable"
    [attempt] = publisher.attempted

    publisher.fail_with = None
    # The same data, its keys in another order: the same request.
    status, body, replayed = await sync(client, "retry-me", data={"space": "ENG", "page": 7})
    # This request did the publish that was confirmed: a plain 202, not a replay.
    assert (status, replayed) == (202, None)
    assert body["id"] == str(attempt.id)
    [(published, _)] = publisher.published
    # The very event: same id, ts, user, appSettings and data, so consumers can dedupe a first
    # copy that reached the broker although its confirm did not reach the gateway.
    assert published.model_dump() == attempt.model_dump()


async def test_a_retry_confirmed_after_a_503_is_replayed_from_then_on(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    publisher = RecordingPublisher()
    client = await signed_in_client(aiohttp_client, make_settings, publisher)
    publisher.fail_with = BrokerUnavailable("no confirm", retry_after=5)
    assert (await sync(client, "k"))[0] == 503
    assert (await sync(client, "k"))[0] == 503  # failed twice: still the first event
    publisher.fail_with = None
    confirmed = await sync(client, "k")
    later = [await sync(client, "k") for _ in range(2)]

    assert confirmed[0] == 202
    assert confirmed[2] is None
    assert [(status, body["id"], replayed) for status, body, replayed in later] == [
        (202, confirmed[1]["id"], "true")
    ] * 2
    assert [str(event.id) for event in publisher.attempted] == [confirmed[1]["id"]] * 3
    assert len(publisher.published) == 1


@pytest.mark.parametrize("first_fails", [False, True], ids=["after-a-202", "after-a-503"])
async def test_the_same_key_with_another_body_is_422_and_publishes_nothing(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    first_fails: bool,
) -> None:
    publisher = RecordingPublisher()
    client = await signed_in_client(aiohttp_client, make_settings, publisher)
    if first_fails:
        publisher.fail_with = BrokerUnavailable("no confirm", retry_after=5)
    first_status = (await sync(client, "k", data={"page": 1}))[0]
    publisher.fail_with = None
    attempts_before = len(publisher.attempted)

    others: list[JsonValue] = [{"page": 2}, {"page": 1, "extra": True}, [{"page": 1}], None, 1]
    for other in others:
        status, body, replayed = await sync(client, "k", data=other)
        assert (status, replayed) == (422, None), other
        assert body["error"]["code"] == "idempotency_key_reused"
        assert body["error"]["message"]

    assert first_status == (503 if first_fails else 202)
    assert len(publisher.attempted) == attempts_before == 1
    # The key still answers for its first body.
    status, body, _ = await sync(client, "k", data={"page": 1})
    assert (status, body["id"]) == (202, str(publisher.attempted[0].id))


async def test_no_data_and_null_data_are_the_same_body(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await signed_in_client(aiohttp_client, make_settings, fake_publisher)
    headers = {"Idempotency-Key": "empty"}
    first = await client.post("/api/sync", json={}, headers=headers)
    second = await client.post("/api/sync", json={"data": None}, headers=headers)
    assert (first.status, second.status) == (202, 202)
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(fake_publisher.published) == 1


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


async def test_a_concurrent_request_with_another_body_is_422_without_waiting(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    publisher = GatedPublisher()
    client = await signed_in_client(aiohttp_client, make_settings, publisher)
    first = asyncio.create_task(sync(client, "k", data="first"))
    await publisher.first_entered.wait()
    # The gate is still shut: had this request waited for the first, it would never answer.
    status, body, _ = await asyncio.wait_for(sync(client, "k", data="second"), 5)
    publisher.gate.set()
    assert (status, body["error"]["code"]) == (422, "idempotency_key_reused")
    assert (await first)[0] == 202
    assert publisher.entered == 1


async def test_a_concurrent_duplicate_shares_a_failure_and_the_retry_sends_the_same_event(
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
    status, body, _ = await sync(client, "k")
    assert (status, body["id"]) == (202, str(publisher.attempted[0].id))
    assert publisher.entered == 2
    assert [event for event, _ in publisher.published] == [publisher.attempted[0]]


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


USER = EventUser(id="u", email="u@example.com", name="U")
APP = AppSettings(baseUrl="https://example.atlassian.net/wiki", spaceKeys=("ENG",))


class FakeBroker:
    """`build` and `publish` for the cache on its own; `fail` makes publishes raise."""

    def __init__(self) -> None:
        self.built: list[ConfluenceAppSync] = []
        self.attempted: list[ConfluenceAppSync] = []
        self.fail = False

    def build(self) -> ConfluenceAppSync:
        event = ConfluenceAppSync.new(user=USER, app_settings=APP, data=len(self.built))
        self.built.append(event)
        return event

    async def publish(self, event: ConfluenceAppSync) -> None:
        self.attempted.append(event)
        if self.fail:
            raise BrokerUnavailable("no confirm", retry_after=1)

    async def run(
        self, cache: IdempotencyCache, key: str | None, data: JsonValue = "data"
    ) -> Outcome:
        return await cache.run_once(
            "u",
            key,
            data=data,
            build=self.build,
            publish=self.publish,
            decode=ConfluenceAppSync.model_validate_json,
        )

    async def fails(self, cache: IdempotencyCache, key: str, data: JsonValue = "data") -> None:
        with pytest.raises(BrokerUnavailable):
            await self.run(cache, key, data)

    def ids(self) -> list[str]:
        return [str(event.id) for event in self.built]


def new_cache(
    clock: FakeClock | None = None, *, max_keys: int = 10, max_attempt_bytes: int = MiB
) -> IdempotencyCache:
    """A cache over the memory store with a 60 s window on a fake clock."""
    store = MemoryIdempotencyStore(
        window=60,
        max_keys=max_keys,
        max_attempt_bytes=max_attempt_bytes,
        clock=clock if clock is not None else FakeClock(),
    )
    return IdempotencyCache(store, wait_limit=5, retry_after=1)


def store_of(cache: IdempotencyCache) -> MemoryIdempotencyStore:
    assert isinstance(cache.store, MemoryIdempotencyStore)
    return cache.store


async def test_a_key_expires_after_the_window() -> None:
    clock = FakeClock()
    cache = new_cache(clock)
    broker = FakeBroker()
    first = await broker.run(cache, "k")
    clock.now += 59.9
    assert (await broker.run(cache, "k")) == Outcome(first.event_id, replayed=True)
    clock.now += 0.1
    # Expired: the key is free, for another body too.
    second = await broker.run(cache, "k", data="other")
    assert second == Outcome(broker.ids()[1], replayed=False)
    assert broker.ids() == [first.event_id, second.event_id]


async def test_a_failed_attempt_is_built_once_and_published_until_confirmed() -> None:
    cache = new_cache()
    broker = FakeBroker()
    broker.fail = True
    await broker.fails(cache, "k")
    await broker.fails(cache, "k")
    broker.fail = False
    outcome = await broker.run(cache, "k")
    assert outcome == Outcome(broker.ids()[0], replayed=False)
    assert len(broker.built) == 1
    assert broker.attempted == [broker.built[0]] * 3
    assert await broker.run(cache, "k") == Outcome(outcome.event_id, replayed=True)
    assert len(broker.attempted) == 3


async def test_a_failed_attempt_expires_after_the_window_from_its_latest_failure() -> None:
    clock = FakeClock()
    cache = new_cache(clock)
    broker = FakeBroker()
    broker.fail = True
    await broker.fails(cache, "k")
    clock.now += 50
    await broker.fails(cache, "k")  # failed again: the attempt lives 60 s from now
    clock.now += 59.9
    await broker.fails(cache, "k")
    assert len(broker.built) == 1
    clock.now += 60
    broker.fail = False
    outcome = await broker.run(cache, "k", data="other body: the key is free again")
    assert len(broker.built) == 2
    assert outcome == Outcome(broker.ids()[1], replayed=False)
    assert outcome.event_id != broker.ids()[0]


async def test_failed_attempts_count_towards_the_bound_and_the_oldest_goes_first() -> None:
    clock = FakeClock()
    cache = new_cache(clock, max_keys=3)
    broker = FakeBroker()
    broker.fail = True
    await broker.fails(cache, "a")
    broker.fail = False
    for key in ("b", "c", "d"):
        clock.now += 1
        await broker.run(cache, key)
    assert len(store_of(cache)) == 3
    # "a" was dropped: its retry builds a new event.
    assert await broker.run(cache, "a") == Outcome(broker.ids()[4], replayed=False)


async def test_failed_attempts_have_a_byte_budget_and_the_oldest_attempt_goes_first() -> None:
    broker = FakeBroker()
    one_event = len(broker.build().model_dump_json())
    broker.built.clear()
    # Room for two attempts' events, not three; confirmed keys do not count against it.
    cache = new_cache(max_keys=100, max_attempt_bytes=2 * one_event + 10)
    confirmed = await broker.run(cache, "confirmed")
    broker.fail = True
    for key in ("a", "b", "c"):
        await broker.fails(cache, key)
    assert store_of(cache).attempt_bytes <= 2 * one_event + 10
    broker.fail = False
    # "a" was the oldest attempt: forgotten, so its retry publishes a new event.
    assert (await broker.run(cache, "a")).event_id == broker.ids()[4]
    # "b" and "c" were kept: their retries publish the events that failed.
    assert (await broker.run(cache, "b")).event_id == broker.ids()[2]
    assert (await broker.run(cache, "c")).event_id == broker.ids()[3]
    assert store_of(cache).attempt_bytes == 0, "a confirmed attempt gives its bytes back"
    assert await broker.run(cache, "confirmed") == Outcome(confirmed.event_id, replayed=True)


async def test_a_confirm_after_a_failure_makes_the_entry_the_newest() -> None:
    clock = FakeClock()
    cache = new_cache(clock, max_keys=2)
    broker = FakeBroker()
    broker.fail = True
    await broker.fails(cache, "a")
    broker.fail = False
    clock.now += 1
    await broker.run(cache, "b")
    clock.now += 1
    await broker.run(cache, "a")  # confirmed now: "b" is older
    clock.now += 1
    await broker.run(cache, "c")
    assert (await broker.run(cache, "a")).replayed
    assert not (await broker.run(cache, "b")).replayed


async def test_another_body_is_refused_by_the_cache_and_nothing_is_built() -> None:
    cache = new_cache()
    broker = FakeBroker()
    await broker.run(cache, "k", data={"a": 1, "b": [1, 2]})
    assert (await broker.run(cache, "k", data={"b": [1, 2], "a": 1})).replayed
    others: list[JsonValue] = [
        {"a": 1, "b": [2, 1]},  # list order counts
        {"a": 1.0, "b": [1, 2]},  # a float is not an integer
        {"a": "1", "b": [1, 2]},
    ]
    for other in others:
        with pytest.raises(IdempotencyKeyReused):
            await broker.run(cache, "k", data=other)
    assert len(broker.built) == len(broker.attempted) == 1


async def test_the_cache_is_bounded_and_drops_the_oldest_key() -> None:
    clock = FakeClock()
    cache = new_cache(clock, max_keys=3)
    broker = FakeBroker()
    for key in ("a", "b", "c", "d"):
        clock.now += 1
        await broker.run(cache, key)
    assert len(store_of(cache)) == 3
    assert (await broker.run(cache, "d")).replayed
    assert not (await broker.run(cache, "a")).replayed  # "a" was dropped
    assert len(broker.attempted) == 5


async def test_expired_keys_are_dropped_when_new_ones_arrive() -> None:
    clock = FakeClock()
    cache = new_cache(clock, max_keys=100)
    broker = FakeBroker()
    await broker.run(cache, "a")
    broker.fail = True
    await broker.fails(cache, "b")
    broker.fail = False
    clock.now += 61
    await broker.run(cache, "c")
    assert len(store_of(cache)) == 1


async def test_without_a_key_nothing_is_hashed_or_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_hashing(data: JsonValue) -> bytes:
        raise AssertionError("a request without a key was hashed")

    monkeypatch.setattr(idempotency, "body_fingerprint", no_hashing)
    cache = new_cache()
    broker = FakeBroker()
    outcomes = [await broker.run(cache, None), await broker.run(cache, None)]
    assert outcomes == [Outcome(event_id, replayed=False) for event_id in broker.ids()]
    broker.fail = True
    with pytest.raises(BrokerUnavailable):
        await broker.run(cache, None)
    assert len(store_of(cache)) == 0
    assert len(set(broker.ids())) == 3


async def test_a_waiter_takes_over_when_the_first_request_is_cancelled() -> None:
    cache = new_cache()
    broker = FakeBroker()
    started = asyncio.Event()

    async def hangs(event: ConfluenceAppSync) -> None:
        broker.attempted.append(event)
        started.set()
        await asyncio.Event().wait()

    first = asyncio.create_task(
        cache.run_once(
            "u",
            "k",
            data="data",
            build=broker.build,
            publish=hangs,
            decode=ConfluenceAppSync.model_validate_json,
        )
    )
    await started.wait()
    second = asyncio.create_task(broker.run(cache, "k"))
    await asyncio.sleep(0.01)
    first.cancel()
    outcome = await second
    # The cancelled publish may have reached the broker: the waiter sends that same event.
    assert outcome == Outcome(broker.ids()[0], replayed=False)
    assert len(broker.built) == 1
    assert broker.attempted == [broker.built[0]] * 2
    with pytest.raises(asyncio.CancelledError):
        await first
