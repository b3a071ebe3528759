"""X-Request-Id: on every response, echoed when sane, replaced when not, and in the logs.

That the id becomes the published message's correlation_id on the real broker is in
tests/integration/test_sync_end_to_end.py; here the fake publisher shows it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.errors import BrokerUnavailable
from gateway.responses import ErrorBody
from gateway.settings import GatewaySettings
from tests.conftest import AiohttpClient, login
from tests.support.app import gateway_app
from tests.support.fakes import FakePublisher
from tests.support.log_capture import json_log_lines

Client = TestClient[web.Request, web.Application]

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> Client:
    app = gateway_app(make_settings(), publisher=fake_publisher)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    # A route with a bug, to see the 500 the outermost middleware makes of it.
    app.router.add_get("/boom", boom)
    made: Client = await aiohttp_client(app)
    return made


async def test_every_kind_of_response_carries_a_request_id(
    client: Client, fake_publisher: FakePublisher
) -> None:
    answers: dict[int, str] = {}
    for method, path, body in (
        ("GET", "/healthz", None),
        ("POST", "/api/sync", {}),  # 401: not signed in yet
        ("GET", "/nope", None),
        ("DELETE", "/api/sync", None),
        ("GET", "/boom", None),
    ):
        response = await client.request(method, path, json=body)
        answers[response.status] = response.headers["X-Request-Id"]
    await login(client)
    response = await client.post("/api/sync", json={"data": 1})
    answers[response.status] = response.headers["X-Request-Id"]
    response = await client.post("/api/sync", data=b"x" * 70_000, headers=JSON)
    answers[response.status] = response.headers["X-Request-Id"]
    fake_publisher.fail_with = BrokerUnavailable("no confirm", retry_after=1)
    response = await client.post("/api/sync", json={})
    answers[response.status] = response.headers["X-Request-Id"]

    assert set(answers) == {200, 202, 401, 404, 405, 413, 500, 503}
    assert all(GENERATED.fullmatch(request_id) for request_id in answers.values())
    assert len(set(answers.values())) == len(answers), "each request gets its own id"


JSON = {"Content-Type": "application/json"}


async def test_a_500_has_the_error_shape_and_says_nothing_of_the_bug(client: Client) -> None:
    response = await client.get("/boom")
    assert response.status == 500
    error = ErrorBody.model_validate(await response.json())
    assert error.error.code == "internal_error"
    assert "a bug" not in await response.text()


@pytest.mark.parametrize(
    "offered", ["req-123", "9f1c.trace:span_2", "A" * 128, "0123456789abcdef0123456789abcdef"]
)
async def test_a_sane_request_id_is_echoed_and_becomes_the_correlation_id(
    client: Client, fake_publisher: FakePublisher, offered: str
) -> None:
    await login(client)
    response = await client.post("/api/sync", json={}, headers={"X-Request-Id": offered})
    assert response.status == 202
    assert response.headers["X-Request-Id"] == offered
    [(_, correlation_id)] = fake_publisher.published
    assert correlation_id == offered


@pytest.mark.parametrize(
    "offered",
    [
        "A" * 129,
        "has space",
        "caf\u00e9",
        "a/b",
        'quote"d',
        "semi;colon",
        "",
    ],
    ids=["too long", "a space", "non-ASCII", "a slash", "a quote", "a semicolon", "empty"],
)
async def test_an_insane_request_id_is_replaced_everywhere(
    client: Client, fake_publisher: FakePublisher, offered: str
) -> None:
    await login(client)
    response = await client.post("/api/sync", json={}, headers={"X-Request-Id": offered})
    assert response.status == 202
    replaced = response.headers["X-Request-Id"]
    assert GENERATED.fullmatch(replaced)
    [(_, correlation_id)] = fake_publisher.published
    assert correlation_id == replaced


async def test_log_lines_carry_the_request_id(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with json_log_lines() as lines:
        # A forged cookie is logged while the request is handled; the bug, too.
        forged = await client.get(
            "/api/auth/session", headers={"X-Request-Id": "forged-1", "Cookie": "syncgate=x"}
        )
        crashed = await client.get("/boom", headers={"X-Request-Id": "crash-1"})
    assert forged.headers["X-Request-Id"] == "forged-1"
    assert crashed.headers["X-Request-Id"] == "crash-1"

    # caplog: the request log line has the id as a field of its own.
    access = [r for r in caplog.records if r.name == "syncgate.gateway.http"]
    assert {getattr(r, "request_id", None) for r in access} >= {"forged-1", "crash-1"}

    # The production JSON handler: every line the gateway writes for a request names it.
    # (aiohttp's own access log is silenced in production by configure_logging.)
    by_id: dict[str, list[str]] = {}
    for record in lines.records():
        if record["logger"] == "aiohttp.access":
            continue
        by_id.setdefault(record.get("request_id", ""), []).append(record["message"])
    assert any("rejected a session cookie" in m for m in by_id["forged-1"])
    assert "unhandled error" in by_id["crash-1"]
    assert "GET /boom 500" in by_id["crash-1"]
    assert "" not in by_id, f"lines without a request id: {by_id.get('')}"
