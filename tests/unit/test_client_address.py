"""The client's address behind a trusted proxy: from Forwarded or X-Forwarded-For only when the
TCP peer is a listed proxy, the rightmost hop that is no proxy, and the peer for anything
malformed. Then through the real app: login limits and the request log see the client, and a
client cannot spoof its address."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError

from gateway.client_address import client_address, parse_trusted_proxies
from gateway.settings import GatewaySettings
from tests.conftest import EMAIL, PASSWORD, AiohttpClient
from tests.support.app import gateway_app
from tests.support.log_capture import json_log_lines

Client = TestClient[web.Request, web.Application]

PROXIES = parse_trusted_proxies("10.0.0.5, 10.1.0.0/16, fd00::/8")
PROXY = "10.0.0.5"
WRONG = "not the password"


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def seen(peer: str | None, *pairs: tuple[str, str]) -> str | None:
    return client_address(peer, headers(*pairs), PROXIES)


def test_the_setting_takes_addresses_and_networks_and_names_a_bad_entry() -> None:
    assert [str(n) for n in parse_trusted_proxies(" 10.0.0.5 ,10.1.2.3/16,, ::1").networks] == [
        "10.0.0.5/32",
        "10.1.0.0/16",
        "::1/128",
    ]
    assert not parse_trusted_proxies("")
    with pytest.raises(ValueError, match=r"entry 2 \('proxy.example'\) is not an IP address"):
        parse_trusted_proxies("10.0.0.5, proxy.example")


def test_the_gateway_refuses_a_bad_trusted_proxy_setting(session_key: str) -> None:
    with pytest.raises(ValidationError, match="trusted_proxies"):
        GatewaySettings(session_keys=session_key, trusted_proxies="10.0.0.0/33")
    assert not GatewaySettings(session_keys=session_key).proxies, "trusts nobody by default"


@pytest.mark.parametrize(
    "header",
    [
        ("X-Forwarded-For", "203.0.113.7"),
        ("Forwarded", "for=203.0.113.7;proto=https"),
        ("Forwarded", 'for="203.0.113.7:4711"'),
    ],
)
def test_headers_from_a_peer_that_is_no_proxy_are_ignored(header: tuple[str, str]) -> None:
    assert seen("198.51.100.9", header) == "198.51.100.9"
    # Nobody is trusted by default, not even the loopback.
    assert client_address("127.0.0.1", headers(header), parse_trusted_proxies("")) == "127.0.0.1"


@pytest.mark.parametrize(
    ("pairs", "client"),
    [
        ([("X-Forwarded-For", "203.0.113.7")], "203.0.113.7"),
        ([("X-Forwarded-For", " 203.0.113.7:51234 ")], "203.0.113.7"),
        ([("Forwarded", "for=203.0.113.7")], "203.0.113.7"),
        (
            [("Forwarded", 'For="[2001:db8:cafe::17]:4711";proto=https;by=10.0.0.5')],
            "2001:db8:cafe::17",
        ),
        ([("X-Forwarded-For", "[2001:db8::1]:80")], "2001:db8::1"),
        # What the client wrote itself is left of what the proxies appended: never believed.
        ([("X-Forwarded-For", "1.2.3.4, 203.0.113.7")], "203.0.113.7"),
        ([("Forwarded", "for=1.2.3.4, for=203.0.113.7")], "203.0.113.7"),
        # A chain of trusted proxies: the rightmost address that is not one of them.
        ([("X-Forwarded-For", "1.2.3.4, 203.0.113.7, 10.1.4.4")], "203.0.113.7"),
        (
            [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "203.0.113.7, 10.1.4.4")],
            "203.0.113.7",
        ),
        (
            [("Forwarded", "for=203.0.113.7"), ("Forwarded", "for=10.1.4.4;by=10.0.0.5")],
            "203.0.113.7",
        ),
        # Both headers, naming the same client.
        ([("Forwarded", "for=203.0.113.7"), ("X-Forwarded-For", "203.0.113.7")], "203.0.113.7"),
    ],
)
def test_a_trusted_proxy_names_the_client(pairs: list[tuple[str, str]], client: str) -> None:
    assert seen(PROXY, *pairs) == client
    assert seen("::ffff:10.0.0.5", *pairs) == client, "an IPv4-mapped peer is the same proxy"
    assert seen("fd00::1", *pairs) == client


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("X-Forwarded-For", "")],
        [("X-Forwarded-For", "not-an-address")],
        [("X-Forwarded-For", "203.0.113.7,,10.1.4.4")],
        [("X-Forwarded-For", "203.0.113.7:port")],
        [("X-Forwarded-For", "[2001:db8::1")],
        [("X-Forwarded-For", "999.0.113.7")],
        [("X-Forwarded-For", ", ".join(["203.0.113.7"] * 40))],
        [("Forwarded", "for=unknown")],
        [("Forwarded", "for=_hidden")],
        [("Forwarded", "proto=https")],
        [("Forwarded", "for=203.0.113.7;for=1.2.3.4")],
        [("Forwarded", 'for="203.0.113.7')],
        [("Forwarded", "for 203.0.113.7")],
        [("Forwarded", "for=203.0.113.7 x")],
        [("Forwarded", "for=203.0.113.7,")],
        [("Forwarded", "\x00\xff" * 100)],
        # Only proxies: nobody said who the client was.
        [("X-Forwarded-For", "10.1.4.4, 10.0.0.5")],
        # Two headers naming different clients: one came from the client itself.
        [("Forwarded", "for=1.2.3.4"), ("X-Forwarded-For", "203.0.113.7")],
    ],
)
def test_anything_else_falls_back_to_the_peer(pairs: list[tuple[str, str]]) -> None:
    assert seen(PROXY, *pairs) == PROXY


def test_a_peer_that_is_no_ip_address_is_never_a_proxy() -> None:
    assert seen("", ("X-Forwarded-For", "203.0.113.7")) == ""
    assert seen(None, ("X-Forwarded-For", "203.0.113.7")) is None


# -- Through the app: the test client's peer is 127.0.0.1 -------------------------------------


async def login_as(client: Client, forwarded_for: str, password: str = WRONG) -> int:
    response = await client.post(
        "/api/auth/login",
        json={"email": EMAIL, "password": password},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return response.status


async def test_a_client_cannot_spoof_its_address_past_the_address_lockout(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    # The gateway trusts a proxy, but the peer (127.0.0.1) is not it: every header names
    # another address, and all of them count as 127.0.0.1.
    settings = make_settings(
        login_max_failures=100, login_max_failures_per_address=3, trusted_proxies="10.0.0.0/8"
    )
    client: Client = await aiohttp_client(gateway_app(settings))
    statuses = [await login_as(client, f"203.0.113.{i}") for i in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


async def test_behind_a_trusted_proxy_each_client_has_its_own_address_lockout(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    settings = make_settings(
        login_max_failures=100, login_max_failures_per_address=3, trusted_proxies="127.0.0.1"
    )
    client: Client = await aiohttp_client(gateway_app(settings))
    assert [await login_as(client, "203.0.113.1") for _ in range(4)] == [401, 401, 401, 429]
    # Another client behind the same proxy is not locked out by the first one's guesses...
    assert await login_as(client, "203.0.113.2", PASSWORD) == 200
    # ...and the first cannot get out by writing another address left of the proxy's.
    assert await login_as(client, "198.51.100.1, 203.0.113.1") == 429


async def test_the_request_log_names_the_client_and_a_malformed_header_is_no_error(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    settings = make_settings(trusted_proxies="127.0.0.0/8")
    client: Client = await aiohttp_client(gateway_app(settings))
    with json_log_lines() as lines:
        for value in ("203.0.113.7", "garbage, ,]", "for=x"):
            assert (await client.get("/healthz", headers={"X-Forwarded-For": value})).status == 200
        forwarded = await client.get("/healthz", headers={"Forwarded": 'for="\\'})
        assert forwarded.status == 200
    requests = [r for r in lines.records() if r.get("message") == "GET /healthz 200"]
    assert [r["client"] for r in requests] == ["203.0.113.7", "127.0.0.1", "127.0.0.1", "127.0.0.1"]
    assert not [r for r in lines.records() if r["level"] in ("ERROR", "CRITICAL")]
