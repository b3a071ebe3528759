"""The shedding middleware on aiohttp's test server (no guarded connections there, so the
middleware does all the counting): the bound on requests in flight, the handling deadline,
and the body's own deadline standing the handling deadline still.

The same limits at the connection level, with real sockets and processes, are in
tests/integration/test_slow_clients.py and tests/integration/test_overload.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from tests.conftest import AiohttpClient, login
from tests.support.app import gateway_client
from tests.support.fakes import GatedPublisher


async def test_a_request_past_the_bound_in_flight_is_refused_at_once_with_retry_after(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    publisher, metrics = GatedPublisher(), GatewayMetrics()
    settings = make_settings(max_in_flight=1, retry_after=7)
    client = await gateway_client(aiohttp_client, settings, publisher=publisher, metrics=metrics)
    await login(client)
    first = asyncio.create_task(client.post("/api/sync", json={"data": 1}))
    await publisher.first_entered.wait()  # the one place in flight is taken

    refused = await client.post("/api/sync", json={"data": 2})
    probe = await client.get("/healthz")  # never counted
    publisher.gate.set()
    accepted = await first

    assert refused.status == 503
    assert refused.headers["Retry-After"] == "7"
    assert (await refused.json())["error"]["code"] == "overloaded"
    assert probe.status == 200
    assert accepted.status == 202
    assert publisher.entered == 1  # the refused one did no work
    assert metrics.shed_by_reason["in_flight"]._value.get() == 1
    # The place is free again.
    assert (await client.post("/api/sync", json={"data": 3})).status == 202


async def test_a_request_past_the_handling_deadline_is_stopped_with_503_and_retry_after(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    publisher, metrics = GatedPublisher(), GatewayMetrics()  # its gate never opens
    # Long enough for the sign-in (scrypt, on a loaded machine) to pass within it.
    settings = make_settings(publish_deadline=2.5, deadline_margin=0.5, retry_after=3)
    client = await gateway_client(aiohttp_client, settings, publisher=publisher, metrics=metrics)
    await login(client)
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await client.post("/api/sync", json={"data": 1})
    took = loop.time() - started

    assert response.status == 503
    assert response.headers["Retry-After"] == "3"
    assert (await response.json())["error"]["code"] == "deadline_exceeded"
    assert took >= 3.0
    assert publisher.published == []
    assert metrics.shed_by_reason["deadline"]._value.get() == 1


async def test_waiting_for_the_body_stands_the_handling_deadline_still(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    """A body that takes longer than the handling deadline, but less than its own, is read:
    the client's time on the wire is not the gateway's."""
    settings = make_settings(publish_deadline=2.5, deadline_margin=0.5, body_timeout=10)
    client = await gateway_client(aiohttp_client, settings)
    await login(client)

    async def slow_body() -> object:
        yield b'{"data": '
        await asyncio.sleep(4.0)  # past the handling deadline (3 s)
        yield b'"late"}'

    response = await client.post(
        "/api/sync", data=slow_body(), headers={"Content-Type": "application/json"}
    )
    assert response.status == 202, await response.text()
