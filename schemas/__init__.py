"""Event contracts: one frozen pydantic model per event and version."""

from schemas.events import AppSettings, ConfluenceAppSync, EventUser
from schemas.registry import REGISTRY, EventRegistry, EventType, UnknownEvent, routing_key_for

__all__ = [
    "REGISTRY",
    "AppSettings",
    "ConfluenceAppSync",
    "EventRegistry",
    "EventType",
    "EventUser",
    "UnknownEvent",
    "routing_key_for",
]
