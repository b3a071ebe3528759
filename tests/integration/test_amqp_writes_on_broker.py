"""A broker connection writes through CoalescingTransport, and every frame still arrives."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from common.amqp import connect_with_retry
from common.amqp_writes import CoalescingTransportFactory
from tests.conftest import AMQP_URL


@pytest.mark.integration
async def test_a_connection_writes_through_it_and_the_broker_gets_every_publish() -> None:
    connection = await connect_with_retry(AMQP_URL, "test-coalescing")
    try:
        channel = await connection.channel()
        underlay = await channel.get_underlay_channel()
        factory = getattr(underlay.connection, "_transport_factory", None)  # aiormq keeps it
        assert isinstance(factory, CoalescingTransportFactory)
        queue = await channel.declare_queue("", exclusive=True)
        # 200 confirmed publishes started in one turn: their frames share writes.
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    aio_pika.Message(str(i).encode()), routing_key=queue.name
                )
                for i in range(200)
            )
        )
        bodies = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            bodies.append(int(message.body))
        assert bodies == list(range(200))
    finally:
        await connection.close()
