"""Business logic only. A handler gets a validated event and its dependencies; the runner
decodes, validates, dispatches and settles."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from common.stores.runs import RunStore, RunWrites
from schemas.events import ConfluenceAppSync
from schemas.registry import Event
from schemas.sync_completed import ConfluenceAppSyncCompleted


@dataclass(frozen=True, slots=True)
class Deps:
    """What the consumer process holds: opened once by `bootstrap.build_deps`."""

    runs: RunStore


@dataclass(frozen=True, slots=True)
class HandlerDeps:
    """What one handler call gets. Its writes commit with the message's processed mark;
    its follow-ups are published after that commit (consumers/follow_ups.py)."""

    runs: RunWrites
    follow_ups: list[Event] = field(default_factory=list)


Handler = Callable[[Any, HandlerDeps], Awaitable[None]]


async def record_confluence_sync(event: ConfluenceAppSync, deps: HandlerDeps) -> None:
    """Record the sync request, so the person who clicked can see that it arrived, and
    announce it once recorded."""
    received_at = time.time_ns() // 1_000_000
    deps.runs.record_sync(event, received_at=received_at)
    deps.follow_ups.append(
        ConfluenceAppSyncCompleted.new(
            sync_id=str(event.id), user=event.user, received_at=received_at
        )
    )
