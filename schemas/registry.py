"""Resolves (name, v) to its model, so the gateway and the consumers agree on every event."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import BaseModel

from schemas.events import ConfluenceAppSync


class UnknownEvent(LookupError):
    """No model is registered for this (name, v)."""


def routing_key_for(name: str) -> str:
    """`confluence/app.sync` -> `confluence.app.sync`: topic patterns match on dots."""
    return name.replace("/", ".")


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    v: str
    model: type[BaseModel]

    @property
    def routing_key(self) -> str:
        return routing_key_for(self.name)

    @property
    def schema_file_name(self) -> str:
        return f"{self.routing_key}.v{self.v}.schema.json"


# Names and versions come from message bodies: an error quotes only this much of them.
_QUOTED_CHARACTERS = 100


def _quoted(value: str) -> str:
    """`value` as repr() shows it, cut to its first _QUOTED_CHARACTERS characters."""
    if len(value) <= _QUOTED_CHARACTERS:
        return repr(value)
    cut = len(value) - _QUOTED_CHARACTERS
    return f"{value[:_QUOTED_CHARACTERS]!r}…[truncated {cut} characters]"


class EventRegistry:
    def __init__(self, *event_types: EventType) -> None:
        self._by_key = {(t.name, t.v): t for t in event_types}
        if len(self._by_key) != len(event_types):
            raise ValueError("an event (name, v) is registered twice")

    def resolve(self, name: str, v: str) -> EventType:
        try:
            return self._by_key[(name, v)]
        except KeyError:
            raise UnknownEvent(f"no event model for name={_quoted(name)} v={_quoted(v)}") from None

    def __iter__(self) -> Iterator[EventType]:
        return iter(self._by_key.values())


REGISTRY = EventRegistry(
    EventType(name="confluence/app.sync", v="1", model=ConfluenceAppSync),
)
