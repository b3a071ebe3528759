"""The exchanges every syncgate process agrees on.

The gateway and the consumers both declare the events exchange with the same arguments, so
either may start first. RabbitMQ refuses a redeclaration with other arguments, which turns a
drift between the two into a start-up error instead of a silent difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from pamqp.common import FieldTable

QUORUM: FieldTable = {"x-queue-type": "quorum"}


@dataclass(frozen=True, slots=True)
class EventsTopology:
    exchange: str = "syncgate.events"
    unrouted: str = "syncgate.unrouted"


async def declare_events_exchange(
    channel: AbstractChannel, topology: EventsTopology
) -> AbstractExchange:
    """The durable topic exchange, with an alternate exchange that keeps unroutable events."""
    unrouted_exchange = await channel.declare_exchange(
        topology.unrouted, aio_pika.ExchangeType.FANOUT, durable=True
    )
    unrouted_queue = await channel.declare_queue(topology.unrouted, durable=True, arguments=QUORUM)
    await unrouted_queue.bind(unrouted_exchange)
    return await channel.declare_exchange(
        topology.exchange,
        aio_pika.ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": topology.unrouted},
    )
