"""Looking never loses a message, on this machine's RabbitMQ 3.x: 50 `dlq list` runs in a
row, and 50 looks into the unrouted queue, keep every message in its place; the DLQ and the
unrouted queue carry only the arguments the README states, and no policy applies to them.
(The 4.x branch, a policy, is unit-tested for exactly what it sends: test_broker_version.)
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import aio_pika
import pytest

from common.broker_version import Policy, broker_version
from common.management import ManagementApi, PolicyError, keep_dead_letters
from common.republish import ATTEMPT_HEADER, ERROR_HEADER, REASON_HEADER, ROUTING_KEY_HEADER
from common.topology import declare_consumer_topology
from consumers.dlq import DeadLetterQueue
from consumers.settings import ConsumerSettings
from tests.conftest import MANAGEMENT_URL, BrokerNames, management_get

pytestmark = pytest.mark.integration

LOOKS = 50
MESSAGES = 5


async def declared(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> ConsumerSettings:
    settings = names.consumer_settings(tmp_path)
    channel = await amqp.channel()
    await declare_consumer_topology(channel, settings.topology)
    version = await broker_version(channel)
    if version.major >= 4:
        pytest.skip(f"this test is about RabbitMQ 3.x; the broker is {version}")
    await channel.close()
    return settings


async def dead_letter(
    amqp: aio_pika.abc.AbstractRobustConnection, settings: ConsumerSettings
) -> list[str]:
    """MESSAGES events in the DLQ, as the consumer dead-letters them (through the DLX)."""
    channel = await amqp.channel(publisher_confirms=True)
    dlx = await channel.get_exchange(settings.dead_letter_exchange)
    ids = [f"evt-{n}" for n in range(MESSAGES)]
    for event_id in ids:
        await dlx.publish(
            aio_pika.Message(
                b'{"n": 1}',
                message_id=event_id,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={
                    REASON_HEADER: "handler-failed",
                    ERROR_HEADER: "boom",
                    ATTEMPT_HEADER: 5,
                    ROUTING_KEY_HEADER: "confluence.sync",
                },
            ),
            routing_key=settings.queue,
        )
    await channel.close()
    return ids


async def test_fifty_dlq_listings_keep_every_message(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = await declared(names, amqp, tmp_path)
    ids = await dead_letter(amqp, settings)
    for look in range(LOOKS):
        # A connection per look, as each `syncgate dlq list` opens its own.
        async with DeadLetterQueue.open(settings) as dlq:
            listed = await dlq.list(limit=MESSAGES + 10)
        assert [letter.event_id for letter in listed] == ids, f"look {look + 1}"
        assert {letter.reason for letter in listed} == {"handler-failed"}
    async with DeadLetterQueue.open(settings) as dlq:
        assert await dlq.count() == MESSAGES


async def test_fifty_looks_into_the_unrouted_queue_keep_every_message(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = await declared(names, amqp, tmp_path)
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(settings.exchange)
    ids = [f"lost-{n}" for n in range(MESSAGES)]
    for event_id in ids:
        # No binding matches: the alternate exchange keeps it in the unrouted queue.
        await exchange.publish(
            aio_pika.Message(b"{}", message_id=event_id), routing_key="nobody.listens"
        )
    await channel.close()
    for look in range(LOOKS):
        browsing = await amqp.channel()
        queue = await browsing.declare_queue(settings.unrouted_exchange, passive=True)
        seen = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            seen.append(message.message_id)
        await browsing.close()  # hands every one back
        assert seen == ids, f"look {look + 1}"


async def test_on_3x_the_queues_have_the_stated_arguments_and_no_policy(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = await declared(names, amqp, tmp_path)
    channel = await amqp.channel()
    assert (
        await keep_dead_letters(channel, settings.topology, management_url=None, vhost="/") is None
    )
    for queue in (settings.topology.dead_letter_queue, settings.unrouted_exchange):
        reported = await management_get(f"queues/%2F/{quote(queue, safe='')}")
        assert reported["arguments"] == {"x-queue-type": "quorum"}, queue
        assert not reported.get("policy"), queue
        assert not reported.get("effective_policy_definition"), queue
    assert not [p for p in await management_get("policies/%2F") if "syncgate" in p["name"]]


async def test_3x_refuses_an_unlimited_policy_and_the_error_says_so(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    """Why 3.x gets no policy: a `delivery-limit: -1` one is refused (and is a clear error)."""
    await declared(names, amqp, tmp_path)
    policy = Policy(
        name=f"{names.prefix}.unlimited",
        pattern=f"^{re.escape(names.prefix)}\\.",  # this test's queues only
        definition={"delivery-limit": -1},
        apply_to="quorum_queues",
        priority=0,
    )
    api = ManagementApi(MANAGEMENT_URL.replace("://", "://guest:guest@", 1))
    try:
        with pytest.raises(PolicyError, match="answered PUT with 400"):
            await api.apply(policy, "/", [])
    finally:
        assert not [p for p in await api.policies("/") if p["name"] == policy.name]
