"""The operators' DLQ routes through the real app factory, with the queues in memory: the
role is checked server-side on every route (403 in the error shape for a plain user), pages
are bounded by the read depth, replays and discards do what they say and are audited."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from common.dead_letters import DeadLetter
from gateway.settings import GatewaySettings
from gateway.users import UserRecord, UsersFile
from tests.conftest import AiohttpClient, login
from tests.support.app import gateway_app
from tests.support.fakes import FakeOperatorQueues

Client = TestClient[web.Request, web.Application]

OPERATOR = "ops@example.com"
PLAIN = "ada@example.com"

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/operator/queues/dlq", None),
    ("GET", "/api/operator/queues/unrouted", None),
    ("GET", "/api/operator/queues/dlq/events/evt-0", None),
    ("POST", "/api/operator/queues/dlq/replay", {"eventIds": ["evt-0"]}),
    ("POST", "/api/operator/queues/dlq/replay", {"all": True}),
    ("POST", "/api/operator/queues/dlq/discard", {"eventId": "evt-0", "confirm": "evt-0"}),
    ("GET", "/api/operator/audit", None),
]


def letter(n: int) -> tuple[DeadLetter, bytes]:
    return (
        DeadLetter(
            event_id=f"evt-{n}",
            reason="handler-failed",
            attempts=5,
            dead_lettered_at=datetime(2026, 1, 1, 0, 0, n, tzinfo=UTC),
            error=f"boom {n}",
            routing_key="confluence.sync",
        ),
        b'{"n": %d}' % n,
    )


@pytest.fixture
def queues() -> FakeOperatorQueues:
    queues = FakeOperatorQueues()
    queues.queues["dlq"].letters.extend(letter(n) for n in range(5))
    return queues


@pytest.fixture
def settings(
    make_settings: Callable[..., GatewaySettings], tmp_path: Path, password_hash: str
) -> GatewaySettings:
    path = tmp_path / "users-with-roles.json"
    users = UsersFile(
        users=(
            UserRecord(id="u-ada", email=PLAIN, name="Ada", password_hash=password_hash),
            UserRecord(
                id="u-ops", email=OPERATOR, name="Ops", password_hash=password_hash, role="operator"
            ),
        )
    )
    path.write_text(users.model_dump_json())
    return make_settings(users_file=path, dlq_read_depth=3)


async def client_for(
    aiohttp_client: AiohttpClient,
    settings: GatewaySettings,
    queues: FakeOperatorQueues,
    email: str | None,
) -> Client:
    client: Client = await aiohttp_client(gateway_app(settings, operator_queues=queues))
    if email is not None:
        await login(client, email)
    return client


async def call(client: Client, method: str, path: str, body: dict[str, Any] | None) -> Any:
    response = await client.request(method, path, json=body)
    return response.status, await response.json()


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_a_plain_user_gets_403_and_nothing_changes(
    aiohttp_client: AiohttpClient,
    settings: GatewaySettings,
    queues: FakeOperatorQueues,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    client = await client_for(aiohttp_client, settings, queues, PLAIN)  # with a CSRF token
    status, answer = await call(client, method, path, body)
    assert status == 403
    assert answer["error"]["code"] == "forbidden"
    assert len(queues.queues["dlq"].letters) == 5
    assert queues.queues["dlq"].replayed == []


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_without_a_session_it_is_401(
    aiohttp_client: AiohttpClient,
    settings: GatewaySettings,
    queues: FakeOperatorQueues,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    client = await client_for(aiohttp_client, settings, queues, None)
    status, answer = await call(client, method, path, body)
    assert status == 401, answer
    assert len(queues.queues["dlq"].letters) == 5


async def test_an_operator_post_without_the_csrf_token_is_refused(
    aiohttp_client: AiohttpClient, settings: GatewaySettings, queues: FakeOperatorQueues
) -> None:
    client = await client_for(aiohttp_client, settings, queues, OPERATOR)
    del client.session.headers["X-CSRF-Token"]
    status, answer = await call(client, *ROUTES[4][:2], {"all": True})
    assert (status, answer["error"]["code"]) == (403, "csrf_failed")
    assert queues.queues["dlq"].replayed == []


async def test_a_page_lists_oldest_first_within_the_read_depth(
    aiohttp_client: AiohttpClient, settings: GatewaySettings, queues: FakeOperatorQueues
) -> None:
    client = await client_for(aiohttp_client, settings, queues, OPERATOR)
    status, page = await call(client, "GET", "/api/operator/queues/dlq", None)
    assert status == 200
    assert page["count"] == 5
    assert page["readDepth"] == 3
    assert page["beyondReadDepth"] == 2
    assert [item["eventId"] for item in page["items"]] == ["evt-0", "evt-1", "evt-2"]
    first = page["items"][0]
    assert first == {
        "position": 1,
        "eventId": "evt-0",
        "deadLetteredAt": int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000),
        "reason": "handler-failed",
        "attempts": 5,
        "routingKey": "confluence.sync",
        "error": "boom 0",
    }
    status, deeper = await call(client, "GET", "/api/operator/queues/dlq?page=2", None)
    assert (status, deeper["items"]) == (200, [])
    status, bad = await call(client, "GET", "/api/operator/queues/dlq?page=0", None)
    assert (status, bad["error"]["code"]) == (422, "validation_failed")
    status, unknown = await call(client, "GET", "/api/operator/queues/work", None)
    assert (status, unknown["error"]["code"]) == (404, "not_found")


async def test_the_body_is_shown_on_demand(
    aiohttp_client: AiohttpClient, settings: GatewaySettings, queues: FakeOperatorQueues
) -> None:
    dead, _ = letter(9)
    queues.queues["dlq"].letters.insert(0, (dead, b"\xff\xfe"))
    client = await client_for(aiohttp_client, settings, queues, OPERATOR)
    status, shown = await call(client, "GET", "/api/operator/queues/dlq/events/evt-1", None)
    assert status == 200
    assert (shown["body"], shown["encoding"], shown["position"]) == ('{"n": 1}', "utf-8", 3)
    status, binary = await call(client, "GET", "/api/operator/queues/dlq/events/evt-9", None)
    assert (binary["body"], binary["encoding"]) == ("//4=", "base64")
    status, _ = await call(client, "GET", "/api/operator/queues/dlq/events/evt-4", None)
    assert status == 404  # beyond the read depth of 3


async def test_replay_one_a_selection_and_all_are_audited(
    aiohttp_client: AiohttpClient,
    settings: GatewaySettings,
    queues: FakeOperatorQueues,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dlq = queues.queues["dlq"]
    client = await client_for(aiohttp_client, settings, queues, OPERATOR)
    replay = "/api/operator/queues/dlq/replay"
    with caplog.at_level(logging.INFO, logger="syncgate.audit"):
        status, one = await call(client, "POST", replay, {"eventIds": ["evt-3"]})
        assert (status, one["replayed"], one["failed"]) == (200, 1, 0)
        status, some = await call(client, "POST", replay, {"eventIds": ["evt-1", "nope"]})
        assert (some["replayed"], some["failed"]) == (1, 1)
        assert some["results"][1]["outcome"] == "failed"
        status, step = await call(client, "POST", replay, {"all": True, "limit": 2})
        assert (status, step["replayed"]) == (200, 2)  # a step of a long replay
        status, everything = await call(client, "POST", replay, {"all": True})
        assert everything["replayed"] == 1
    assert [d.event_id for d in dlq.replayed] == ["evt-3", "evt-1", "evt-0", "evt-2", "evt-4"]
    assert dlq.letters == []

    status, trail = await call(client, "GET", "/api/operator/audit", None)
    assert status == 200
    entries = trail["entries"]
    assert len(entries) == 6
    assert entries[0]["eventId"] == "evt-4"  # newest first
    assert {e["email"] for e in entries} == {OPERATOR}
    assert {e["action"] for e in entries} == {"replay"}
    assert [e["outcome"] for e in entries].count("failed") == 1
    audited = [r for r in caplog.records if r.name == "syncgate.audit"]
    assert len(audited) == 6
    assert all(r.levelno == logging.INFO for r in audited)

    status, neither = await call(client, "POST", replay, {})
    assert (status, neither["error"]["code"]) == (422, "validation_failed")
    status, _ = await call(client, "POST", replay, {"all": True, "eventIds": ["x"]})
    assert status == 422
    status, _ = await call(client, "POST", replay, {"eventIds": ["x"], "limit": 1})
    assert status == 422


async def test_discard_needs_the_typed_confirmation(
    aiohttp_client: AiohttpClient, settings: GatewaySettings, queues: FakeOperatorQueues
) -> None:
    dlq = queues.queues["dlq"]
    client = await client_for(aiohttp_client, settings, queues, OPERATOR)
    discard = "/api/operator/queues/dlq/discard"
    status, refused = await call(client, "POST", discard, {"eventId": "evt-2", "confirm": "yes"})
    assert (status, refused["error"]["code"]) == (422, "validation_failed")
    assert len(dlq.letters) == 5
    status, done = await call(client, "POST", discard, {"eventId": "evt-2", "confirm": "evt-2"})
    assert (status, done["outcome"]) == (200, "done")
    assert [d.event_id for d, _ in dlq.letters] == ["evt-0", "evt-1", "evt-3", "evt-4"]
    assert dlq.replayed == []
    status, _ = await call(client, "POST", discard, {"eventId": "gone", "confirm": "gone"})
    assert status == 404
    _, trail = await call(client, "GET", "/api/operator/audit", None)
    assert [(e["action"], e["eventId"], e["outcome"]) for e in trail["entries"]] == [
        ("discard", "gone", "failed"),
        ("discard", "evt-2", "done"),
    ]


async def test_a_broker_outage_is_503_with_retry_after(
    aiohttp_client: AiohttpClient, settings: GatewaySettings, queues: FakeOperatorQueues
) -> None:
    client = await client_for(aiohttp_client, settings, queues, OPERATOR)
    queues.down = True
    response = await client.get("/api/operator/queues/dlq")
    assert response.status == 503
    assert response.headers["Retry-After"] == str(settings.retry_after)
    assert (await response.json())["error"]["code"] == "broker_unavailable"
