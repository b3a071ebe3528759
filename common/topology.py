"""What syncgate declares on the broker: the exchanges every process agrees on, and each
consumer's queues.

The gateway and the consumers both declare the events exchange with the same arguments, so
either may start first. RabbitMQ refuses a redeclaration with other arguments, which turns a
drift between the two into a start-up error instead of a silent difference.

The consumer's queues. Declaring them is idempotent, so every start declares them all.

events exchange --(binding)--> work queue --(handler fails)--> retry queue per attempt
      ^     |                     |  ^                              | TTL expires
      |     |                     |  +------------------------------+
 `dlq replay`                     +--(dead-letter)--> DLX --> work queue's DLQ
            +--(confluence.app.sync.completed)--> completed queue (bounded, for subscribers)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
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


# Quorum queues dead-letter at most once by default; at-least-once needs reject-publish.
AT_LEAST_ONCE_DEAD_LETTERING: FieldTable = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


@dataclass(frozen=True)
class ConsumerTopology:
    """Everything a consumer declares, and the names it derives. The defaults are the
    production ones: the consumer's settings and definitions.json both start from them."""

    events: EventsTopology = field(default_factory=EventsTopology)
    queue: str = "syncgate.confluence-sync"
    # Exactly the routing key of the one event its handlers take: a wildcard such as the
    # former `confluence.#` would also feed it the consumer's own
    # `confluence.app.sync.completed`, to be dead-lettered as having no handler.
    binding: str = "confluence.app.sync"
    dead_letter_exchange: str = "syncgate.dlx"
    max_attempts: int = 5
    retry_base_delay: float = 1.0
    # A backstop against crash loops: the broker dead-letters a message after this many
    # deliveries even if the consumer never gets to settle it.
    delivery_limit: int = 20
    # The consumer's own confluence/app.sync.completed events are kept here for subscribers
    # (or bind a queue of your own): the newest this many, older ones dropped, so a queue
    # nobody reads stays bounded, and the events never sit in the unrouted queue.
    completed_binding: str = "confluence.app.sync.completed"
    completed_max_length: int = 100_000

    @property
    def completed_queue(self) -> str:
        return f"{self.queue}.completed"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"

    def retry_queue(self, attempt: int) -> str:
        # The delay is in the name: a queue's TTL cannot change, so a new delay is a new queue.
        return f"{self.queue}.retry.{self.retry_delay_ms(attempt)}ms"

    def retry_delay_ms(self, attempt: int) -> int:
        """Exponential backoff: base, 2 x base, 4 x base, ..."""
        return int(self.retry_base_delay * 1000 * 2 ** (attempt - 1))


# The work queue's binding before confluence/app.sync.completed existed. A consumer bound
# otherwise removes it, so a broker that kept it (bindings outlive restarts) stops routing the
# completed events to the work queue. Removing a binding that is not there does nothing.
FORMER_BINDING = "confluence.#"


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic exchange routes `routing_key` to a binding of `pattern`: words split
    on dots, `*` is exactly one word, `#` zero or more."""
    return _matches(pattern.split("."), routing_key.split("."))


def _matches(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_matches(rest, words[skip:]) for skip in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _matches(rest, words[1:])


def work_queue_arguments(topology: ConsumerTopology) -> FieldTable:
    return {
        **QUORUM,
        **AT_LEAST_ONCE_DEAD_LETTERING,
        "x-dead-letter-exchange": topology.dead_letter_exchange,
        "x-dead-letter-routing-key": topology.queue,
        "x-delivery-limit": topology.delivery_limit,
    }


def completed_queue_arguments(topology: ConsumerTopology) -> FieldTable:
    return {
        **QUORUM,
        "x-max-length": topology.completed_max_length,
        "x-overflow": "drop-head",
    }


def retry_queue_arguments(topology: ConsumerTopology, attempt: int) -> FieldTable:
    return {
        **QUORUM,
        **AT_LEAST_ONCE_DEAD_LETTERING,
        "x-message-ttl": topology.retry_delay_ms(attempt),
        # The default exchange routes by queue name: expired messages go back to work.
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": topology.queue,
    }


async def declare_consumer_topology(
    channel: AbstractChannel, topology: ConsumerTopology
) -> AbstractQueue:
    exchange = await declare_events_exchange(channel, topology.events)
    dlx = await channel.declare_exchange(
        topology.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dlq = await channel.declare_queue(topology.dead_letter_queue, durable=True, arguments=QUORUM)
    await dlq.bind(dlx, routing_key=topology.queue)
    queue = await channel.declare_queue(
        topology.queue, durable=True, arguments=work_queue_arguments(topology)
    )
    await queue.bind(exchange, routing_key=topology.binding)
    if topology.binding != FORMER_BINDING:
        await queue.unbind(exchange, routing_key=FORMER_BINDING)
    completed = await channel.declare_queue(
        topology.completed_queue, durable=True, arguments=completed_queue_arguments(topology)
    )
    await completed.bind(exchange, routing_key=topology.completed_binding)
    for attempt in range(1, topology.max_attempts):
        await channel.declare_queue(
            topology.retry_queue(attempt),
            durable=True,
            arguments=retry_queue_arguments(topology, attempt),
        )
    return queue
