"""The gateway's routes through the real app factory, with a fake publisher."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.errors import BrokerUnavailable
from gateway.settings import GatewaySettings
from tests.conftest import EMAIL, PASSWORD, AiohttpClient, login
from tests.support.app import gateway_client
from tests.support.fakes import FakePublisher

Client = TestClient[web.Request, web.Application]


async def test_sync_publishes_the_session_user_and_answers_202(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    await login(client)
    response = await client.post(
        "/api/sync", json={"data": "data"}, headers={"X-Request-Id": "req-123"}
    )
    assert response.status == 202
    body = await response.json()
    assert body["success"] == "true"
    [(event, correlation_id)] = fake_publisher.published
    assert body["id"] == str(event.id)
    assert correlation_id == "req-123" == response.headers["X-Request-Id"]
    assert event.user.model_dump() == {"id": "u-ada", "email": EMAIL, "name": "Ada Lovelace"}
    assert event.data == "data"
    assert event.appSettings.spaceKeys == ("ENG",)
    assert event.appSettings.includeAttachments is True


async def test_the_seed_path_and_an_empty_body_work(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    await login(client)
    assert (await client.post("/api/route", json={"data": "data"})).status == 202
    assert (await client.post("/api/sync")).status == 202
    assert [e.data for e, _ in fake_publisher.published] == ["data", None]


async def test_no_cookie_is_401_and_nothing_is_published(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    response = await client.post("/api/sync", json={"data": "data"})
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "not_authenticated"
    assert fake_publisher.published == []


async def test_a_tampered_cookie_is_401(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    await login(client)
    [cookie] = list(client.session.cookie_jar)
    value = cookie.value
    flipped = value[:-5] + ("A" if value[-5] != "A" else "B") + value[-4:]
    client.session.cookie_jar.clear()
    response = await client.post(
        "/api/sync", json={}, headers={"Cookie": f"{cookie.key}={flipped}"}
    )
    assert response.status == 401
    assert fake_publisher.published == []


async def test_a_cookie_from_another_key_is_401(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    await login(client)
    [cookie] = list(client.session.cookie_jar)
    other = await gateway_client(
        aiohttp_client,
        make_settings(session_keys="aGVsbG8taGVsbG8taGVsbG8taGVsbG8taGVsbG8tMTI="),
        publisher=fake_publisher,
    )
    response = await other.post("/api/sync", headers={"Cookie": f"{cookie.key}={cookie.value}"})
    assert response.status == 401
    assert fake_publisher.published == []


async def test_the_body_cannot_choose_the_user(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    await login(client)
    response = await client.post(
        "/api/sync", json={"user": {"id": "u-bob", "email": "bob@example.com", "name": "Bob"}}
    )
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "validation_failed"
    assert error["details"][0]["loc"] == "user"
    assert fake_publisher.published == []


async def test_an_unconfirmed_publish_is_503_with_retry_after(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    await login(client)
    fake_publisher.fail_with = BrokerUnavailable("no confirm", retry_after=7)
    response = await client.post("/api/sync", json={"data": "data"})
    assert response.status == 503
    assert response.headers["Retry-After"] == "7"
    assert (await response.json())["error"]["code"] == "broker_unavailable"


async def test_login_with_a_wrong_password_or_unknown_user_is_401(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    for email, password in ((EMAIL, "wrong password"), ("nobody@example.com", PASSWORD)):
        response = await client.post("/api/auth/login", json={"email": email, "password": password})
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "invalid_credentials"
        assert "Set-Cookie" not in response.headers


async def test_session_and_logout(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    assert await (await client.get("/api/auth/session")).json() == {}
    await login(client)
    session = await (await client.get("/api/auth/session")).json()
    assert session == {"user": {"id": "u-ada", "email": EMAIL, "name": "Ada Lovelace"}}
    assert (await client.post("/api/auth/logout")).status == 200
    assert await (await client.get("/api/auth/session")).json() == {}
    assert (await client.post("/api/sync")).status == 401


async def test_cookie_attributes(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    response = await client.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    set_cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie
    assert "Path=/" in set_cookie
    assert "SameSite=Lax" in set_cookie
    assert "Max-Age=28800" in set_cookie


async def test_secure_cookies_use_the_host_prefix(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(
        aiohttp_client, make_settings(cookie_secure=True), publisher=fake_publisher
    )
    response = await client.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    set_cookie = response.headers["Set-Cookie"]
    assert set_cookie.startswith("__Host-syncgate=")
    assert "Secure" in set_cookie


async def test_health_and_readiness(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    fake_publisher.ready = False
    assert (await client.get("/readyz")).status == 503


async def test_unknown_path_and_wrong_method_use_the_error_shape(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    response = await client.get("/nope")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    response = await client.get("/api/sync")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert (await response.json())["error"]["code"] == "method_not_allowed"
