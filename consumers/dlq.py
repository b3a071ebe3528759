"""`syncgate dlq`: one consumer's dead-letter queue, named by its settings.

The browsing and replaying is common.dead_letters', which the gateway's DLQ page shares.
Browsing never removes anything: messages are fetched without an ack on a channel of their
own, and closing that channel hands every one of them back to the queue, in their order.
A replay republishes a message to the events exchange on a confirming channel (mandatory,
returns raise) and acks it in the DLQ only once the broker confirmed the republish, so a
crash in between duplicates an event (the consumer dedupes on its id) and never loses it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from common.amqp import BrokerUnreachable, connect_once
from common.dead_letters import DeadLetter, DeadLetterError, DeadLetters, describe
from consumers.settings import ConsumerSettings

__all__ = ["DeadLetter", "DeadLetterError", "DeadLetterQueue", "describe"]


class DeadLetterQueue:
    """One connection to the broker, for browsing and replaying one consumer's DLQ."""

    @staticmethod
    @contextlib.asynccontextmanager
    async def open(settings: ConsumerSettings) -> AsyncIterator[DeadLetters]:
        try:
            # A plain connection to the first node that answers: an operator's command should
            # fail, not wait for a broker.
            connection = await connect_once(settings.amqp_url.get_secret_value(), "dlq")
        except BrokerUnreachable as exc:
            raise DeadLetterError(f"cannot reach the broker: {exc}") from None
        async with connection:
            yield DeadLetters(
                connection,
                queue=settings.topology.dead_letter_queue,
                work_queue=settings.queue,
                exchange=settings.exchange,
                missing=(f": has a consumer with SYNCGATE_QUEUE={settings.queue!r} ever started?"),
            )
