"""The fakes unit tests give the app factory in place of the broker's publisher and
revocation stream: the same parameters production fills (gateway/bootstrap.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.errors import BrokerUnavailable
from gateway.revocation import RevokedSessions
from schemas.registry import Event


class FakePublisher:
    """Stands in for the broker in unit tests: records what would have been published.

    The events are kept as Any: a test reads the fields of the event type it published."""

    def __init__(self) -> None:
        self.published: list[tuple[Any, str]] = []
        self.fail_with: BrokerUnavailable | None = None
        self.ready = True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def publish(self, event: Event, *, correlation_id: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.published.append((event, correlation_id))


class RecordingPublisher(FakePublisher):
    """Records every event it is asked to publish, the ones that then fail too."""

    def __init__(self) -> None:
        super().__init__()
        self.attempted: list[Any] = []

    async def publish(self, event: Event, *, correlation_id: str) -> None:
        self.attempted.append(event)
        await super().publish(event, correlation_id=correlation_id)


class GatedPublisher(RecordingPublisher):
    """Holds every publish until `gate` opens, so a test can overlap two requests."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = 0
        self.first_entered = asyncio.Event()

    async def publish(self, event: Event, *, correlation_id: str) -> None:
        self.entered += 1
        self.first_entered.set()
        await self.gate.wait()
        await super().publish(event, correlation_id=correlation_id)


class LocalRevocations:
    """Revocations inside one process, in place of the broker's stream."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.revoked = RevokedSessions(clock)
        # A test sets it to False for a gateway that has not replayed the stream yet.
        self.caught_up = True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @property
    def ready(self) -> bool:
        return self.caught_up

    def is_revoked(self, session_id: str) -> bool:
        return session_id in self.revoked

    async def revoke(self, session_id: str, *, until: float) -> None:
        self.revoked.add(session_id, until)
