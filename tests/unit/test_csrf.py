"""CSRF: a state-changing request needs our origin, a JSON body and its session's token."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from cryptography.fernet import Fernet

from gateway.settings import GatewaySettings
from tests.conftest import EMAIL, PASSWORD, AiohttpClient, login
from tests.support.app import gateway_app, gateway_client
from tests.support.fakes import FakePublisher

Client = TestClient[web.Request, web.Application]
STATE_CHANGING = ["/api/sync", "/api/route", "/api/auth/logout"]


async def signed_in(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    publisher: FakePublisher,
    **overrides: Any,
) -> tuple[Client, str]:
    client = await gateway_client(aiohttp_client, make_settings(**overrides), publisher=publisher)
    token = await login(client)
    del client.session.headers["X-CSRF-Token"]  # each test sends (or withholds) it itself
    return client, token


async def assert_refused(response: Any, status: int, code: str) -> None:
    assert response.status == status
    assert (await response.json())["error"]["code"] == code


def own_origin(client: Client) -> str:
    return str(client.make_url("/")).rstrip("/")


@pytest.mark.parametrize("path", STATE_CHANGING)
async def test_a_missing_or_wrong_token_is_403_and_nothing_happens(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    path: str,
) -> None:
    client, token = await signed_in(aiohttp_client, make_settings, fake_publisher)
    wrong = token[:-1] + ("B" if token.endswith("A") else "A")
    for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": wrong}):
        response = await client.post(path, json={}, headers=headers)
        await assert_refused(response, 403, "csrf_failed")
    assert fake_publisher.published == []
    # Still signed in (a refused logout did not log out), and the right token works.
    assert (await (await client.get("/api/auth/session")).json())["user"]["id"] == "u-ada"
    assert (await client.post(path, json={}, headers={"X-CSRF-Token": token})).status < 300


async def test_a_token_from_another_session_is_403(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client, _ = await signed_in(aiohttp_client, make_settings, fake_publisher)
    other = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    bobs_token = await login(other, "bob@example.com")
    # The same user's own earlier session does not count either: the token binds the session.
    earlier = await login(client)
    current = await login(client)
    del client.session.headers["X-CSRF-Token"]
    assert earlier != current
    for token in (bobs_token, earlier):
        response = await client.post("/api/sync", json={}, headers={"X-CSRF-Token": token})
        await assert_refused(response, 403, "csrf_failed")
    assert fake_publisher.published == []


async def test_the_token_endpoint_matches_login_and_survives_a_key_rotation(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    session_key: str,
) -> None:
    client, token = await signed_in(aiohttp_client, make_settings, fake_publisher)
    assert await (await client.get("/api/auth/csrf")).json() == {"csrfToken": token}
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["syncgate"].value

    rotated = await gateway_client(
        aiohttp_client,
        make_settings(session_keys=f"{Fernet.generate_key().decode()}, {session_key}"),
        publisher=fake_publisher,
    )
    headers = {"Cookie": f"syncgate={cookie}", "X-CSRF-Token": token}
    assert (await rotated.post("/api/sync", json={}, headers=headers)).status == 202

    anonymous = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    await assert_refused(await anonymous.get("/api/auth/csrf"), 401, "not_authenticated")


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "null", "http://127.0.0.1.evil.example"]
)
async def test_a_foreign_origin_is_403_even_with_the_token(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    origin: str,
) -> None:
    client, token = await signed_in(aiohttp_client, make_settings, fake_publisher)
    headers = {"X-CSRF-Token": token, "Origin": origin}
    await assert_refused(
        await client.post("/api/sync", json={}, headers=headers), 403, "csrf_failed"
    )
    assert fake_publisher.published == []
    headers["Origin"] = own_origin(client)
    assert (await client.post("/api/sync", json={}, headers=headers)).status == 202


async def test_allowed_origins_replace_the_own_origin(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client, token = await signed_in(
        aiohttp_client,
        make_settings,
        fake_publisher,
        allowed_origins="https://app.example.com, https://admin.example.com/",
    )
    for origin, status in (
        ("https://app.example.com", 202),
        ("https://admin.example.com", 202),
        (own_origin(client), 403),
        ("https://example.com", 403),
    ):
        headers = {"X-CSRF-Token": token, "Origin": origin}
        assert (await client.post("/api/sync", json={}, headers=headers)).status == status
    assert len(fake_publisher.published) == 2


@pytest.mark.parametrize(("site", "status"), [("cross-site", 403), ("same-origin", 202)])
async def test_sec_fetch_site_cross_site_is_403(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    site: str,
    status: int,
) -> None:
    client, token = await signed_in(aiohttp_client, make_settings, fake_publisher)
    headers = {"X-CSRF-Token": token, "Sec-Fetch-Site": site}
    assert (await client.post("/api/sync", json={}, headers=headers)).status == status
    assert len(fake_publisher.published) == (status == 202)


@pytest.mark.parametrize("path", STATE_CHANGING)
@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"],
)
@pytest.mark.parametrize("body", [b"", b'{"data": 1}'])
async def test_form_multipart_and_text_bodies_are_415_even_when_empty(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    path: str,
    content_type: str,
    body: bytes,
) -> None:
    client, token = await signed_in(aiohttp_client, make_settings, fake_publisher)
    headers = {"X-CSRF-Token": token, "Content-Type": content_type}
    response = await client.post(path, data=body, headers=headers)
    await assert_refused(response, 415, "unsupported_media_type")
    assert fake_publisher.published == []
    assert (await (await client.get("/api/auth/session")).json())["user"]["id"] == "u-ada"


async def test_a_real_form_post_is_415(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client, token = await signed_in(aiohttp_client, make_settings, fake_publisher)
    form = FormData({"data": "x"})
    response = await client.post("/api/sync", data=form, headers={"X-CSRF-Token": token})
    await assert_refused(response, 415, "unsupported_media_type")
    assert fake_publisher.published == []


async def test_login_refuses_foreign_origins_and_form_bodies(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    credentials = {"email": EMAIL, "password": PASSWORD}
    response = await client.post(
        "/api/auth/login", json=credentials, headers={"Origin": "https://evil.example"}
    )
    await assert_refused(response, 403, "csrf_failed")
    assert "Set-Cookie" not in response.headers
    response = await client.post("/api/auth/login", data=credentials)
    await assert_refused(response, 415, "unsupported_media_type")
    assert "Set-Cookie" not in response.headers


async def test_no_session_is_still_401_and_unknown_paths_404(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(aiohttp_client, make_settings(), publisher=fake_publisher)
    await assert_refused(await client.post("/api/sync", json={}), 401, "not_authenticated")
    await assert_refused(await client.post("/api/nope", json={}), 404, "not_found")


@pytest.mark.parametrize(
    ("secure", "origins", "warned"),
    [(True, "", True), (True, "https://app.example.com", False), (False, "", False)],
)
def test_secure_cookies_without_allowed_origins_warn_at_start_up(
    make_settings: Callable[..., GatewaySettings],
    caplog: pytest.LogCaptureFixture,
    secure: bool,
    origins: str,
    warned: bool,
) -> None:
    caplog.set_level(logging.WARNING)
    gateway_app(make_settings(cookie_secure=secure, allowed_origins=origins))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("SYNCGATE_ALLOWED_ORIGINS" in w for w in warnings) is warned
