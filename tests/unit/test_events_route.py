"""POST /api/events through the real app factory, with fake publishers and the memory stores."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from gateway.errors import BrokerUnavailable
from gateway.responses import BatchResults, ErrorBody, EventsAccepted
from gateway.settings import GatewaySettings
from schemas.events import ConfluenceAppSync
from schemas.registry import Event
from tests.conftest import EMAIL, AiohttpClient, login
from tests.support.app import gateway_client
from tests.support.fakes import FakePublisher, GatedPublisher
from tests.support.gateway import Client

SYNC = "confluence/app.sync"
COMPLETED = "confluence/app.sync.completed"


class FailingFor(FakePublisher):
    """Refuses (as a missed confirm) every event whose `data` is in `refused`."""

    def __init__(self, *refused: object) -> None:
        super().__init__()
        self.refused = list(refused)
        self.attempts: list[Any] = []

    async def publish(self, event: Event, *, correlation_id: str) -> None:
        self.attempts.append(event)
        if getattr(event, "data", None) in self.refused:
            raise BrokerUnavailable("no confirm", retry_after=7)
        await super().publish(event, correlation_id=correlation_id)


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> Client:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    await login(client)
    return client


async def post(client: Client, body: Any, **kwargs: Any) -> tuple[int, Any]:
    response = await client.post("/api/events", json=body, **kwargs)
    return response.status, await response.json()


async def test_one_sync_event_is_made_as_api_sync_makes_it(
    client: Client, fake_publisher: FakePublisher
) -> None:
    status, body = await post(client, {"name": SYNC, "data": {"page": 1}})
    assert status == 202
    assert (await client.post("/api/sync", json={"data": {"page": 1}})).status == 202
    [(event, _), (via_sync, _)] = fake_publisher.published
    assert isinstance(event, ConfluenceAppSync)
    assert body == {"id": str(event.id)}
    assert event.v == "1"  # the latest, when v is left out
    assert event.user.model_dump() == {"id": "u-ada", "email": EMAIL, "name": "Ada Lovelace"}
    assert event.appSettings == via_sync.appSettings
    assert event.data == via_sync.data == {"page": 1}
    assert event.id != via_sync.id


async def test_the_user_and_the_app_settings_are_never_read_from_the_body(
    client: Client, fake_publisher: FakePublisher
) -> None:
    extras: list[dict[str, object]] = [{"user": {"id": "mallory"}}, {"appSettings": {}}, {"ts": 1}]
    for extra in extras:
        status, body = await post(client, {"name": SYNC, **extra})
        assert status == 422, body
        assert body["error"]["code"] == "validation_failed"
    assert fake_publisher.published == []


async def test_an_unknown_name_or_version_is_422_naming_the_known_ones(
    client: Client, fake_publisher: FakePublisher
) -> None:
    status, body = await post(client, {"name": "jira/app.sync"})
    assert status == 422
    assert body["error"]["code"] == "unknown_event"
    assert "confluence/app.sync v1" in body["error"]["message"]
    assert "confluence/app.sync.completed v1" in body["error"]["message"]
    status, body = await post(client, {"name": SYNC, "v": "9"})
    assert status == 422
    assert body["error"]["code"] == "unknown_event"
    assert body["error"]["message"].endswith("known versions: 1")
    assert fake_publisher.published == []


async def test_an_event_clients_may_not_publish_is_403(
    client: Client, fake_publisher: FakePublisher
) -> None:
    data = {"syncId": "0190a5b2-0000-7000-8000-000000000000", "receivedAt": 1}
    for v in (None, "1"):
        status, body = await post(client, {"name": COMPLETED, "v": v, "data": data})
        assert status == 403
        assert body["error"]["code"] == "not_publishable"
    assert fake_publisher.published == []


async def test_data_is_validated_by_the_model_and_the_request_is_strict(
    client: Client, fake_publisher: FakePublisher
) -> None:
    for request in ({"name": 1}, {"v": "1"}, {"name": SYNC, "v": 1}, {"name": SYNC, "id": ""}):
        status, body = await post(client, request)
        assert status == 422, request
        assert body["error"]["code"] == "validation_failed"
        assert body["error"]["details"], request
    wrongs: list[object] = [[], "x", 3, None]
    for wrong in wrongs:
        assert (await post(client, wrong))[0] == 422
    assert (await client.post("/api/events")).status == 422
    assert fake_publisher.published == []


async def test_a_batch_answers_each_item_and_publishes_only_the_valid_ones(
    client: Client, fake_publisher: FakePublisher
) -> None:
    batch = [
        {"name": SYNC, "data": "first"},
        {"name": "nope/event"},
        {"name": COMPLETED},
        {"name": SYNC, "user": "mallory"},
        {"name": SYNC, "data": "last", "v": "1"},
    ]
    status, body = await post(client, batch)
    assert status == 207
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in results] == [202, 422, 403, 422, 202]
    assert [r.get("error", {}).get("code") for r in results] == [
        None,
        "unknown_event",
        "not_publishable",
        "validation_failed",
        None,
    ]
    published = {str(event.id): event.data for event, _ in fake_publisher.published}
    assert published == {results[0]["id"]: "first", results[4]["id"]: "last"}


async def test_a_batch_whose_items_are_all_accepted_is_202_and_published_in_parallel(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    gated = GatedPublisher()
    client = await gateway_client(aiohttp_client, make_settings(), publisher=gated)
    await login(client)
    answer = asyncio.create_task(post(client, [{"name": SYNC, "data": i} for i in range(5)]))
    # Every publish has started before any is confirmed: they run side by side.
    async with asyncio.timeout(10):
        while gated.entered < 5:  # noqa: ASYNC110 - GatedPublisher counts; it has no event per count
            await asyncio.sleep(0.01)
    assert gated.published == []
    gated.gate.set()
    status, body = await answer
    assert status == 202
    assert [r["status"] for r in body["results"]] == [202] * 5
    assert sorted(r["id"] for r in body["results"]) == sorted(str(e.id) for e, _ in gated.published)


async def test_an_item_the_broker_does_not_confirm_is_a_503_among_accepted_ones(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    publisher = FailingFor("refused")
    client = await gateway_client(aiohttp_client, make_settings(), publisher=publisher)
    await login(client)
    batch = [{"name": SYNC, "data": "ok", "id": "a"}, {"name": SYNC, "data": "refused", "id": "b"}]
    response = await client.post("/api/events", json=batch)
    assert response.status == 207
    assert response.headers["Retry-After"] == "5"
    ok, refused = (await response.json())["results"]
    assert ok["status"] == 202
    assert refused["status"] == 503
    assert refused["error"]["code"] == "broker_unavailable"
    assert [str(e.id) for e, _ in publisher.published] == [ok["id"]]
    # The retry of the whole batch publishes only what was not confirmed, and the refused
    # item again under the id it was attempted with (consumers dedupe on it).
    publisher.refused.clear()
    status, body = await post(client, batch)
    assert status == 202
    again_ok, again_refused = body["results"]
    assert again_ok == {"index": 0, "status": 202, "id": ok["id"], "replayed": True}
    assert again_refused["status"] == 202
    assert "replayed" not in again_refused
    assert again_refused["id"] == str(publisher.attempts[1].id)
    assert len(publisher.published) == 2


async def test_one_event_the_broker_does_not_confirm_is_503_like_api_sync(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    publisher = FailingFor("x")
    client = await gateway_client(aiohttp_client, make_settings(), publisher=publisher)
    await login(client)
    response = await client.post("/api/events", json={"name": SYNC, "data": "x"})
    assert response.status == 503
    assert response.headers["Retry-After"] == "7"
    assert (await response.json())["error"]["code"] == "broker_unavailable"


async def test_batch_limits_are_settings(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    settings = make_settings(events_max_batch=3, events_max_body_bytes=200_000)
    client = await gateway_client(aiohttp_client, settings, publisher=fake_publisher)
    await login(client)
    status, body = await post(client, [{"name": SYNC}] * 4)
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"
    # Above the app's 64 KiB, within the route's own limit, compressed or not.
    big = [{"name": SYNC, "data": "x" * 60_000} for _ in range(3)]
    assert (await post(client, big))[0] == 202
    encoded = gzip.compress(orjson.dumps(big))
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    assert (await client.post("/api/events", data=encoded, headers=headers)).status == 202
    too_big = [{"name": SYNC, "data": "x" * 70_000} for _ in range(3)]
    assert (await post(client, too_big))[0] == 413
    assert (await client.post("/api/sync", json={"data": "x" * 70_000})).status == 413
    assert len(fake_publisher.published) == 6


async def test_the_default_limits_are_100_events_and_1_mib() -> None:
    settings = GatewaySettings(session_keys="x" * 43 + "=")
    assert (settings.events_max_batch, settings.events_max_body_bytes) == (100, 1024 * 1024)
    assert settings.max_body_bytes == 64 * 1024


async def test_a_client_id_is_published_once_per_user_and_repeats_the_first_outcome(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    settings = make_settings()
    client = await gateway_client(aiohttp_client, settings, publisher=fake_publisher)
    await login(client)
    first = await client.post("/api/events", json={"name": SYNC, "data": 1, "id": "click-1"})
    again = await client.post("/api/events", json={"name": SYNC, "data": 1, "id": "click-1"})
    assert first.status == again.status == 202
    assert (await first.json()) == (await again.json())
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(fake_publisher.published) == 1
    # In a batch too, twice in one batch included.
    status, body = await post(client, [{"name": SYNC, "data": 1, "id": "click-1"}] * 2)
    assert status == 202
    assert {r["id"] for r in body["results"]} == {(await first.json())["id"]}
    assert len(fake_publisher.published) == 1
    # The same id with another event is refused, not answered for.
    status, body = await post(client, {"name": SYNC, "data": 2, "id": "click-1"})
    assert status == 422
    assert body["error"]["code"] == "idempotency_key_reused"
    assert len(fake_publisher.published) == 1


async def test_client_ids_are_scoped_to_the_user_and_apart_from_idempotency_keys(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    await login(client)
    status, ada = await post(client, {"name": SYNC, "data": 1, "id": "k"})
    assert status == 202
    # An Idempotency-Key "k" on /api/sync is another scope: a new event.
    synced = await client.post("/api/sync", json={"data": 1}, headers={"Idempotency-Key": "k"})
    assert synced.status == 202
    assert (await synced.json())["id"] != ada["id"]
    await client.post("/api/auth/logout")
    await login(client, email="bob@example.com")
    status, bob = await post(client, {"name": SYNC, "data": 1, "id": "k"})
    assert status == 202
    assert bob["id"] != ada["id"]
    assert [event.user.id for event, _ in fake_publisher.published] == ["u-ada", "u-ada", "u-bob"]


async def test_the_route_keeps_the_session_csrf_and_header_rules(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    status, body = await post(client, {"name": SYNC})
    assert (status, body["error"]["code"]) == (401, "not_authenticated")
    await login(client)
    del client.session.headers["X-CSRF-Token"]
    status, body = await post(client, {"name": SYNC})
    assert (status, body["error"]["code"]) == (403, "csrf_failed")
    await login(client)
    status, body = await post(client, {"name": SYNC}, headers={"Idempotency-Key": "k"})
    assert (status, body["error"]["code"]) == (400, "invalid_idempotency_key")
    response = await client.post(
        "/api/events", data="name=x", headers={"Content-Type": "text/plain"}
    )
    assert response.status == 415
    assert fake_publisher.published == []


async def test_numbers_past_64_bits_are_refused_before_anything_is_published(
    client: Client, fake_publisher: FakePublisher
) -> None:
    for data in (1e19, [-1e300], {"n": 2**63}):
        status, body = await post(client, {"name": SYNC, "data": data})
        assert status in (400, 422), data
        status, body = await post(client, [{"name": SYNC}, {"name": SYNC, "data": data}])
        assert status in (400, 422), data
        assert "results" not in body
    assert (await post(client, [{"name": SYNC, "data": [2**63 - 1, -(2**63), 1.5e18]}]))[0] == 202
    assert len(fake_publisher.published) == 1


async def test_the_answers_match_their_documented_models_and_the_document_lists_the_route(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
) -> None:
    publisher = FailingFor("refused")
    client = await gateway_client(aiohttp_client, make_settings(), publisher=publisher)
    await login(client)
    status, body = await post(client, {"name": SYNC, "id": "a"})
    assert status == 202
    EventsAccepted.model_validate(body)
    status, body = await post(client, [{"name": SYNC}, {"name": SYNC, "data": "refused"}, 3])
    assert status == 207
    BatchResults.model_validate(body)
    status, body = await post(client, [{"name": SYNC, "id": "b"}])
    assert status == 202
    EventsAccepted.model_validate(body)
    assert isinstance(EventsAccepted.model_validate(body).root, BatchResults)
    status, body = await post(client, {"name": "x"})
    ErrorBody.model_validate(body)

    document = await (await client.get("/openapi.json")).json()
    operation = document["paths"]["/api/events"]["post"]
    assert {"202", "207", "403", "413", "422", "503"} <= set(operation["responses"])
    assert operation["security"] == [{"session": [], "csrfToken": []}]
    request = document["components"]["schemas"]["EventRequest"]
    assert request["properties"]["name"]["enum"] == [SYNC, "confluence/app.sync.completed"]
