"""Business logic only. A handler gets a validated event and its dependencies; the runner
decodes, validates, dispatches and settles."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from consumers.run_store import BatchedRunStore
from schemas.events import ConfluenceAppSync

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Deps:
    runs: BatchedRunStore


Handler = Callable[[Any, Deps], Awaitable[None]]


async def record_confluence_sync(event: ConfluenceAppSync, deps: Deps) -> None:
    """Record the sync request, so the person who clicked can see that it arrived."""
    received_at = time.time_ns() // 1_000_000
    if not await deps.runs.record_sync(event, received_at=received_at):
        log.info("the sync run was already recorded")
