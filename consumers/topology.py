"""The consumer's queues. Declaring them is idempotent, so every start declares them all.

events exchange --(binding)--> work queue --(handler fails)--> retry queue per attempt
      ^                           |  ^                              | TTL expires
      |                           |  +------------------------------+
 `dlq replay`                     +--(dead-letter)--> DLX --> work queue's DLQ
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue
from pamqp.common import FieldTable

from consumers.settings import ConsumerSettings
from syncgate.topology import QUORUM, declare_events_exchange

# Quorum queues dead-letter at most once by default; at-least-once needs reject-publish.
AT_LEAST_ONCE_DEAD_LETTERING: FieldTable = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def work_queue_arguments(settings: ConsumerSettings) -> FieldTable:
    return {
        **QUORUM,
        **AT_LEAST_ONCE_DEAD_LETTERING,
        "x-dead-letter-exchange": settings.dead_letter_exchange,
        "x-dead-letter-routing-key": settings.queue,
        "x-delivery-limit": settings.delivery_limit,
    }


def retry_queue_arguments(settings: ConsumerSettings, attempt: int) -> FieldTable:
    return {
        **QUORUM,
        **AT_LEAST_ONCE_DEAD_LETTERING,
        "x-message-ttl": settings.retry_delay_ms(attempt),
        # The default exchange routes by queue name: expired messages go back to work.
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": settings.queue,
    }


async def declare_consumer_topology(
    channel: AbstractChannel, settings: ConsumerSettings
) -> AbstractQueue:
    exchange = await declare_events_exchange(channel, settings.topology)
    dlx = await channel.declare_exchange(
        settings.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dlq = await channel.declare_queue(settings.dead_letter_queue, durable=True, arguments=QUORUM)
    await dlq.bind(dlx, routing_key=settings.queue)
    queue = await channel.declare_queue(
        settings.queue, durable=True, arguments=work_queue_arguments(settings)
    )
    await queue.bind(exchange, routing_key=settings.binding)
    for attempt in range(1, settings.max_attempts):
        await channel.declare_queue(
            settings.retry_queue(attempt),
            durable=True,
            arguments=retry_queue_arguments(settings, attempt),
        )
    return queue
