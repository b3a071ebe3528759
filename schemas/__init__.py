"""Event contracts: one frozen pydantic model per event and version."""

from schemas.events import AppSettings, ConfluenceAppSync, EventUser
from schemas.registry import (
    REGISTRY,
    Event,
    EventRegistry,
    EventType,
    UnknownEvent,
    routing_key_for,
)
from schemas.sync_completed import ConfluenceAppSyncCompleted

__all__ = [
    "REGISTRY",
    "AppSettings",
    "ConfluenceAppSync",
    "ConfluenceAppSyncCompleted",
    "Event",
    "EventRegistry",
    "EventType",
    "EventUser",
    "UnknownEvent",
    "routing_key_for",
]
