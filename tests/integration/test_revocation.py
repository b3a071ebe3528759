"""A logout reaches every gateway, through the real broker's revocation stream.

The gateways here are real processes (`syncgate gateway`) sharing one session key, as behind
a load balancer: a cookie from one is accepted by the others, so only the revocation stream
can stop a logged-out cookie on a gateway that did not see the logout.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest

from gateway.bootstrap import build_app
from gateway.settings import GatewaySettings
from tests.conftest import AMQP_URL, EMAIL, PASSWORD, AiohttpClient, BrokerNames
from tests.support.gateway import Client, wait_readiness, wait_ready_at
from tests.support.tcp_proxy import proxy_in_front_of

pytestmark = pytest.mark.integration

SYNCGATE = Path(sys.executable).with_name("syncgate")
COOKIE = "syncgate"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Gateway:
    """One `syncgate gateway` process and an HTTP session that sends cookies by hand."""

    def __init__(self, base_url: str, http: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self.http = http

    async def request(
        self, method: str, path: str, *, cookie: str | None = None, **kwargs: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = dict(kwargs.pop("headers", {}))
        if cookie is not None:
            headers["Cookie"] = f"{COOKIE}={cookie}"
        async with self.http.request(
            method, self.base_url + path, headers=headers, **kwargs
        ) as response:
            return response.status, await response.json(), response


@pytest.fixture
def gateway_env(
    make_settings: Callable[..., GatewaySettings], names: BrokerNames
) -> dict[str, str]:
    settings = make_settings()
    return {
        **os.environ,
        "SYNCGATE_AMQP_URL": AMQP_URL,
        "SYNCGATE_SESSION_KEYS": settings.session_keys.get_secret_value(),
        "SYNCGATE_USERS_FILE": str(settings.users_file),
        "SYNCGATE_APP_SETTINGS_FILE": str(settings.app_settings_file),
        "SYNCGATE_COOKIE_SECURE": "false",
        "SYNCGATE_EXCHANGE": names.exchange,
        "SYNCGATE_UNROUTED_EXCHANGE": names.unrouted,
        "SYNCGATE_REVOCATION_STREAM": names.revocations,
        "SYNCGATE_LOG_FORMAT": "console",
    }


@asynccontextmanager
async def gateway_process(env: dict[str, str], log_path: Path) -> AsyncIterator[Gateway]:
    port = free_port()
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            str(SYNCGATE),
            "gateway",
            env={**env, "SYNCGATE_PORT": str(port)},
            stdout=log_file,
            stderr=log_file,
        )
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
                gateway = Gateway(f"http://127.0.0.1:{port}", http)
                await wait_ready_at(gateway.base_url, within=20)
                yield gateway
        finally:
            if process.returncode is None:
                process.terminate()
                await asyncio.wait_for(process.wait(), 15)


async def test_a_logout_on_one_gateway_is_refused_by_every_other_even_later_ones(
    gateway_env: dict[str, str],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    async with (
        gateway_process(gateway_env, tmp_path / "a.log") as a,
        gateway_process(gateway_env, tmp_path / "b.log") as b,
    ):
        channel = await amqp.channel()
        probe = await channel.declare_queue(f"{names.prefix}.probe", exclusive=True)
        await probe.bind(names.exchange, routing_key="#")

        status, body, response = await a.request(
            "POST", "/api/auth/login", json={"email": EMAIL, "password": PASSWORD}
        )
        assert status == 200
        cookie, token = response.cookies[COOKIE].value, body["csrfToken"]
        # B accepts A's cookie: without the stream nothing would stop it after the logout.
        assert (await b.request("GET", "/api/auth/session", cookie=cookie))[1]["user"]["id"]

        status, _, _ = await a.request(
            "POST", "/api/auth/logout", cookie=cookie, headers={"X-CSRF-Token": token}
        )
        assert status == 200
        assert (await a.request("GET", "/api/auth/session", cookie=cookie))[1] == {}

        # B learns of it through the stream: milliseconds, but not synchronously with A's 200.
        deadline = time.monotonic() + 5
        while (await b.request("GET", "/api/auth/session", cookie=cookie))[1] != {}:
            assert time.monotonic() < deadline, "gateway B never learned of the logout"
            await asyncio.sleep(0.02)
        status, body, _ = await b.request(
            "POST", "/api/sync", cookie=cookie, json={}, headers={"X-CSRF-Token": token}
        )
        assert (status, body["error"]["code"]) == (401, "not_authenticated")

        # A gateway started after the logout replays the stream before it is ready.
        async with gateway_process(gateway_env, tmp_path / "c.log") as c:
            assert (await c.request("GET", "/api/auth/session", cookie=cookie))[1] == {}
            status, _, _ = await c.request(
                "POST", "/api/sync", cookie=cookie, json={}, headers={"X-CSRF-Token": token}
            )
            assert status == 401

        assert await probe.get(fail=False) is None, "a revoked session published an event"


async def test_known_revocations_hold_while_the_broker_is_unreachable(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    async with proxy_in_front_of(AMQP_URL) as (proxy, url):
        settings = make_settings(**names.gateway_overrides(), amqp_url=url, publish_deadline=1.0)
        client: Client = await aiohttp_client(build_app(settings))
        try:
            await wait_readiness(client, 200, within=10)
            logins = []
            for _ in range(2):
                response = await client.post(
                    "/api/auth/login", json={"email": EMAIL, "password": PASSWORD}
                )
                logins.append(
                    (response.cookies[COOKIE].value, (await response.json())["csrfToken"])
                )
            (revoked, revoked_token), (kept, kept_token) = logins
            client.session.cookie_jar.clear()
            response = await client.post(
                "/api/auth/logout",
                headers={"Cookie": f"{COOKIE}={revoked}", "X-CSRF-Token": revoked_token},
            )
            assert response.status == 200

            proxy.pause()  # the broker stops answering; the gateway's link is half-open
            for cookie, expected_user in ((revoked, None), (kept, "u-ada")):
                response = await client.get(
                    "/api/auth/session", headers={"Cookie": f"{COOKIE}={cookie}"}
                )
                assert response.status == 200
                assert (await response.json()).get("user", {}).get("id") == expected_user
            # A logout that cannot be recorded says so, instead of pretending the cookie is dead.
            response = await client.post(
                "/api/auth/logout",
                headers={"Cookie": f"{COOKIE}={kept}", "X-CSRF-Token": kept_token},
            )
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "broker_unavailable"
        finally:
            proxy.resume()
            await client.close()
