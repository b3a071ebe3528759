"""Wiring, in one place: which handler serves which event, and what it depends on.

To add a handler: write `async def handle_x(event, deps)` and add it to `HANDLERS` under the
event's name. The event's model must already be in `schemas.registry.REGISTRY`.
"""

from __future__ import annotations

from common.stores.backends import open_run_store
from consumers.handlers import Deps, Handler, record_confluence_sync
from consumers.settings import ConsumerSettings

HANDLERS: dict[str, Handler] = {
    "confluence/app.sync": record_confluence_sync,
}


def build_deps(settings: ConsumerSettings) -> Deps:
    store = open_run_store(
        settings.run_store, commit_delay=settings.commit_delay, full_at=settings.prefetch
    )
    return Deps(runs=store)
