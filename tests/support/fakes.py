"""The fakes unit tests give the app factory in place of the broker's publisher and
revocation stream: the same parameters production fills (gateway/bootstrap.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from common.dead_letters import DeadLetter, DeadLetterError
from gateway.dead_letters import DeadLetterSource, QueueName, QueuesUnavailable
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


@dataclass
class FakeQueue:
    """A queue of dead letters in memory: replayed events are recorded, not published."""

    name: str
    letters: list[tuple[DeadLetter, bytes]] = field(default_factory=list)
    replayed: list[DeadLetter] = field(default_factory=list)
    unreplayable: set[str] = field(default_factory=set)

    async def count(self) -> int:
        return len(self.letters)

    async def read(self, *, limit: int) -> list[tuple[DeadLetter, bytes]]:
        return list(self.letters[:limit])

    def _take(self, event_id: str) -> DeadLetter:
        for n, (letter, _) in enumerate(self.letters):
            if letter.event_id == event_id:
                if event_id in self.unreplayable:
                    raise DeadLetterError(f"event {event_id} cannot be replayed")
                del self.letters[n]
                return letter
        raise DeadLetterError(f"no event {event_id!r} in {self.name}")

    async def replay_one(self, event_id: str) -> DeadLetter:
        letter = self._take(event_id)
        self.replayed.append(letter)
        return letter

    async def discard_one(self, event_id: str) -> DeadLetter:
        for n, (letter, _) in enumerate(self.letters):
            if letter.event_id == event_id:
                del self.letters[n]
                return letter
        raise DeadLetterError(f"no event {event_id!r} in {self.name}")

    async def replay_all(self, *, limit: int) -> AsyncIterator[DeadLetter]:
        for _ in range(limit):
            if not self.letters:
                return
            yield await self.replay_one(self.letters[0][0].event_id)


class FakeOperatorQueues:
    """The DLQ and the unrouted queue in memory; `down` makes every open fail as an outage."""

    def __init__(self) -> None:
        self.queues: dict[QueueName, FakeQueue] = {
            "dlq": FakeQueue("syncgate.confluence-sync.dlq"),
            "unrouted": FakeQueue("syncgate.unrouted"),
        }
        self.down = False

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @contextlib.asynccontextmanager
    async def open(self, which: QueueName) -> AsyncIterator[DeadLetterSource]:
        if self.down:
            raise QueuesUnavailable("cannot reach the broker: down (fake)")
        yield self.queues[which]
