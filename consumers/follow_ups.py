"""Follow-up events: what a handler asks the consumer to publish once its writes are durable.

A handler appends events to `HandlerDeps.follow_ups`; the runner publishes them only after the
run store's commit, each to the events exchange under its registered routing key, with a
publisher confirm (mandatory; the exchange's alternate exchange keeps an unbound one), and
only then acks the message that caused them. `confluence/app.sync.completed` is one.

If a publish fails, the work it reports is already committed: the message is handled. So the
policy is, deliberately:
- retry, bounded: `SYNCGATE_FOLLOW_UP_ATTEMPTS` tries, each within
  `SYNCGATE_FOLLOW_UP_TIMEOUT`, a short doubling pause between them; the event keeps its id
  across tries, so a confirm lost after the broker stored it makes a duplicate that
  subscribers dedupe, never a second event;
- then give up loudly: a WARNING naming the event and the message, and
  `syncgate_consumer_follow_ups_total{outcome="failed"}`; the message is acked as before.

Why not hold the ack, or retry the message? The handler must not run twice for one event
(the run store would refuse it anyway: a redelivery is a duplicate, acked without a handler
call), so a redelivery could not publish the follow-up either; and a sync must not count as
failed, nor be dead-lettered, because a notification about it could not be sent. The sync's
own semantics (committed, then acked; at least once, handled once) stay exactly as they were.
The follow-up is at most once per handled message, and once in every case the broker is up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractMessage

from common.cloudevents import EventSource, attribute_headers
from schemas.registry import REGISTRY, Event, routing_key_for

log = logging.getLogger(__name__)

APP_ID = "syncgate-consumer"
# The CloudEvents `source` of the consumer's events; `dataschema` names the schema file by URN
# (the gateway serves the files at GET /schemas/{file}, under its own public base URL).
SOURCE = EventSource(source="urn:syncgate:consumer")
FIRST_PAUSE = 0.2


class Exchange(Protocol):
    """An exchange on a confirming channel: `publish` returns once the broker confirmed."""

    async def publish(
        self, message: AbstractMessage, routing_key: str, *, mandatory: bool = True
    ) -> object: ...


def follow_up_message(event: Event, *, correlation_id: str | None) -> aio_pika.Message:
    """The message for `event`, with the properties and CloudEvents headers that the
    gateway's messages have."""
    ce = attribute_headers(
        SOURCE,
        event_id=str(event.id),
        name=event.name,
        ts=event.ts,
        subject=event.user.id,
        schema_file_name=REGISTRY.resolve(event.name, event.v).schema_file_name,
    )
    return aio_pika.Message(
        event.model_dump_json().encode(),
        content_type="application/json",
        content_encoding="utf-8",
        headers={"v": event.v, **ce},
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(event.id),
        correlation_id=correlation_id,
        type=event.name,
        timestamp=datetime.fromtimestamp(event.ts / 1000, tz=UTC),
        app_id=APP_ID,
    )


async def publish_follow_ups(
    exchange: Exchange,
    events: Sequence[Event],
    *,
    correlation_id: str | None,
    attempts: int,
    timeout: float,  # noqa: ASYNC109 - each try's bound, not the whole call's
) -> list[bool]:
    """Publish each event, confirmed, in parallel; whether each one was confirmed."""
    return list(
        await asyncio.gather(
            *(
                _publish_one(
                    exchange,
                    event,
                    correlation_id=correlation_id,
                    attempts=attempts,
                    timeout=timeout,
                )
                for event in events
            )
        )
    )


async def _publish_one(
    exchange: Exchange,
    event: Event,
    *,
    correlation_id: str | None,
    attempts: int,
    timeout: float,  # noqa: ASYNC109
) -> bool:
    message = follow_up_message(event, correlation_id=correlation_id)
    pause = FIRST_PAUSE
    for attempt in range(1, attempts + 1):
        try:
            async with asyncio.timeout(timeout):
                await exchange.publish(message, routing_key_for(event.name), mandatory=True)
            return True
        except (TimeoutError, aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            if attempt == attempts:
                log.warning(
                    "gave up publishing the follow-up %s %s after %d attempts (%r); the "
                    "message it follows is handled and acked without it",
                    event.name,
                    event.id,
                    attempts,
                    exc,
                )
                return False
            log.info("publishing the follow-up %s failed (%r); retrying", event.id, exc)
            await asyncio.sleep(pause)
            pause *= 2
    return False
