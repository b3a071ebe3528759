"""On the real broker: requests refused as cross-site leave the exchange untouched."""

from __future__ import annotations

from collections.abc import Callable

import aio_pika
import pytest

from gateway.bootstrap import build_app
from gateway.settings import GatewaySettings
from tests.conftest import AiohttpClient, BrokerNames, login
from tests.support.gateway import Client, wait_readiness

pytestmark = pytest.mark.integration


async def test_csrf_failures_publish_nothing_to_the_exchange(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    client: Client = await aiohttp_client(build_app(make_settings(**names.gateway_overrides())))
    await wait_readiness(client, 200, within=10)
    channel = await amqp.channel()
    probe = await channel.declare_queue(f"{names.prefix}.probe", exclusive=True)
    await probe.bind(names.exchange, routing_key="#")
    token = await login(client)
    del client.session.headers["X-CSRF-Token"]

    refused = [
        await client.post("/api/sync", json={"data": 1}),
        await client.post("/api/sync", json={"data": 1}, headers={"X-CSRF-Token": "forged"}),
        await client.post(
            "/api/sync",
            json={"data": 1},
            headers={"X-CSRF-Token": token, "Origin": "https://evil.example"},
        ),
        await client.post(
            "/api/route",
            json={"data": 1},
            headers={"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"},
        ),
        await client.post("/api/sync", data={"data": "1"}, headers={"X-CSRF-Token": token}),
    ]
    assert [response.status for response in refused] == [403, 403, 403, 403, 415]

    accepted = await client.post("/api/sync", json={"data": 2}, headers={"X-CSRF-Token": token})
    assert accepted.status == 202
    # The probe gets exactly the accepted event: so it would have seen any refused one.
    message = await probe.get(timeout=5)
    await message.ack()
    assert message.message_id == (await accepted.json())["id"]
    assert await probe.get(fail=False) is None
