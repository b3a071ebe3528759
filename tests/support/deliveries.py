"""Deliveries and exchanges without a broker, for the runner's unit tests: what the runner
reads from a message, and what it republishes to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractMessage
from aiormq.abc import FieldValue

from schemas.events import ConfluenceAppSync

EVENT_NAME = "confluence/app.sync"


@dataclass
class FakeDelivery:
    """The parts of an incoming message the runner uses; `log` records acks in order."""

    body: bytes
    headers: dict[str, FieldValue] = field(default_factory=dict)
    routing_key: str | None = "confluence.app.sync"
    content_type: str | None = "application/json"
    content_encoding: str | None = "utf-8"
    message_id: str | None = None
    correlation_id: str | None = "req-1"
    type: str | None = EVENT_NAME
    timestamp: datetime | None = datetime(2026, 1, 1, tzinfo=UTC)
    app_id: str | None = "syncgate-gateway"
    # Each delivery is the first on a channel of its own, as far as the acks can tell.
    delivery_tag: int | None = 1
    channel: object = field(default_factory=object)
    log: list[str] = field(default_factory=list)

    async def ack(self, multiple: bool = False) -> None:
        self.log.append("ack")

    async def reject(self, requeue: bool = False) -> None:
        self.log.append(f"reject(requeue={requeue})")


@dataclass
class FakeExchange:
    """Records what would have been published; `fail` makes the confirm fail."""

    name: str
    log: list[str]
    published: list[tuple[AbstractMessage, str]] = field(default_factory=list)
    fail: bool = False

    async def publish(
        self, message: AbstractMessage, routing_key: str, *, mandatory: bool = True
    ) -> object:
        assert mandatory, "a republish must never be dropped silently"
        if self.fail:
            raise ConnectionError("the broker went away")
        self.log.append(f"publish:{self.name}")
        self.published.append((message, routing_key))
        return None


def delivery_of(event: ConfluenceAppSync, **overrides: Any) -> FakeDelivery:
    values: dict[str, Any] = {
        "body": event.model_dump_json().encode(),
        "message_id": str(event.id),
    }
    values.update(overrides)
    return FakeDelivery(**values)
