"""Wiring, in one place: which handler serves which event, and what it depends on.

To add a handler: write `async def handle_x(event, deps)` and add it to `HANDLERS` under the
event's name. The event's model must already be in `schemas.registry.REGISTRY`, and the work
queue's binding (SYNCGATE_BINDING) must take its routing key: `check_routing` says so at
start-up, and also refuses a binding that takes a registered event with no handler here
(it would only be dead-lettered; the consumer's own `confluence/app.sync.completed` is one).
"""

from __future__ import annotations

from collections.abc import Mapping

from common.process import StartupError
from common.stores.backends import open_run_store
from common.topology import topic_matches
from consumers.handlers import Deps, Handler, record_confluence_sync
from consumers.settings import ConsumerSettings
from schemas.registry import REGISTRY, EventRegistry

HANDLERS: dict[str, Handler] = {
    "confluence/app.sync": record_confluence_sync,
}


def build_deps(settings: ConsumerSettings) -> Deps:
    store = open_run_store(
        settings.run_store, commit_delay=settings.commit_delay, full_at=settings.prefetch
    )
    return Deps(runs=store)


def check_routing(
    binding: str, handlers: Mapping[str, Handler], registry: EventRegistry = REGISTRY
) -> None:
    """StartupError unless the binding takes exactly the registered events handled here."""
    for event_type in registry:
        routed = topic_matches(binding, event_type.routing_key)
        if event_type.name in handlers and not routed:
            raise StartupError(
                f"SYNCGATE_BINDING={binding!r} does not take {event_type.routing_key}, the "
                f"routing key of {event_type.name}, which this consumer handles"
            )
        if event_type.name not in handlers and routed:
            raise StartupError(
                f"SYNCGATE_BINDING={binding!r} takes {event_type.routing_key}, the routing key "
                f"of {event_type.name}, which this consumer has no handler for: each one would "
                "be dead-lettered. Bind only the handled events' routing keys."
            )
    unknown = sorted(set(handlers) - {event_type.name for event_type in registry})
    if unknown:
        raise StartupError(f"handlers for unregistered events: {', '.join(unknown)}")
