"""/readyz follows the broker link, and the robust channel brings the topology back, without
restarting the gateway."""

from __future__ import annotations

from collections.abc import Callable

import aio_pika
import pytest

from gateway.bootstrap import build_app
from gateway.settings import GatewaySettings
from tests.conftest import AMQP_URL, AiohttpClient, BrokerNames, login
from tests.support.broker import broker_stopped
from tests.support.gateway import Client, timed_sync, wait_readiness

pytestmark = pytest.mark.integration

DEADLINE = 1.0
SLACK = 0.5


async def gateway(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
) -> Client:
    settings = make_settings(**names.gateway_overrides(), publish_deadline=DEADLINE, retry_after=2)
    client: Client = await aiohttp_client(build_app(settings))
    await wait_readiness(client, 200, within=10)
    await login(client)
    return client


@pytest.mark.fault
async def test_readyz_follows_a_broker_restart_and_publishing_resumes(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    client = await gateway(aiohttp_client, make_settings, names)
    channel = await amqp.channel()
    probe = await channel.declare_queue(f"{names.prefix}.probe", durable=True)
    await probe.bind(names.exchange, routing_key="#")

    async with broker_stopped():
        noticed = await wait_readiness(client, 503, within=10)
        during = await timed_sync(client)
    recovered = await wait_readiness(client, 200, within=30)
    after = await timed_sync(client)
    print(
        f"\noutage noticed after {noticed:.2f}s; 503 in {during.elapsed:.2f}s; "
        f"ready {recovered:.2f}s after start_app; 202 in {after.elapsed:.2f}s"
    )

    assert during.status == 503
    assert during.retry_after == "2"
    assert during.elapsed <= DEADLINE + SLACK
    assert after.status == 202
    # A connection of its own: the fixture's robust one reconnects on aio-pika's own 5 s
    # schedule, which the gateway's (common.amqp) no longer waits for.
    fresh = await aio_pika.connect(AMQP_URL)
    async with fresh:
        reading = await fresh.channel()
        message = await (await reading.declare_queue(probe.name, passive=True)).get(timeout=5)
        await message.ack()
    assert message.message_id == after.event_id


async def test_a_deleted_exchange_is_declared_again_with_its_alternate_exchange(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    client = await gateway(aiohttp_client, make_settings, names)
    channel = await amqp.channel()
    await channel.exchange_delete(names.exchange)

    # The broker closes the gateway's channel for the publish to a missing exchange: no
    # confirm, so 503. The robust channel reopens and declares the exchange again.
    first = await timed_sync(client)
    assert first.status == 503
    statuses = [first.status]
    while (result := await timed_sync(client)).status != 202:
        statuses.append(result.status)
        assert result.status == 503
        assert len(statuses) < 50, "the exchange never came back"
    print(f"\nstatuses before the exchange came back: {statuses}")

    # Nothing is bound to the new exchange, so its alternate exchange kept the event.
    unrouted = await channel.declare_queue(names.unrouted, passive=True)
    message = await unrouted.get(timeout=5)
    await message.ack()
    assert message.message_id == result.event_id
