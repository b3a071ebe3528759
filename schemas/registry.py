"""Resolves (name, v) to its model, so the gateway and the consumers agree on every event."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from schemas.events import ConfluenceAppSync, EventUser
from schemas.sync_completed import ConfluenceAppSyncCompleted


class UnknownEvent(LookupError):
    """No model is registered for this (name, v)."""


class Event(Protocol):
    """What every registered model has: the envelope the publishers and consumers read."""

    @property
    def id(self) -> object: ...
    @property
    def name(self) -> str: ...
    @property
    def v(self) -> str: ...
    @property
    def ts(self) -> int: ...
    @property
    def user(self) -> EventUser: ...

    def model_dump_json(self) -> str: ...


def routing_key_for(name: str) -> str:
    """`confluence/app.sync` -> `confluence.app.sync`: topic patterns match on dots."""
    return name.replace("/", ".")


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    v: str
    model: type[BaseModel]
    client_publishable: bool = False
    """Whether POST /api/events takes it from clients; False: only syncgate's own processes
    publish it (the gateway answers 403)."""

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

    def versions(self, name: str) -> list[str]:
        """The registered versions of `name`, oldest first ([] for an unknown name)."""
        return sorted((t.v for t in self if t.name == name), key=_version_order)

    def latest(self, name: str) -> EventType:
        """The newest version of `name`; UnknownEvent if there is none."""
        versions = self.versions(name)
        if not versions:
            raise UnknownEvent(f"no event model for name={_quoted(name)}")
        return self._by_key[(name, versions[-1])]

    def known(self) -> list[str]:
        """Every registered `name vN`, for error messages."""
        return [
            f"{t.name} v{t.v}" for t in sorted(self, key=lambda t: (t.name, _version_order(t.v)))
        ]


def _version_order(v: str) -> tuple[int, str]:
    """Numeric versions in numeric order ("2" before "10"), anything else after, by text."""
    return (int(v), "") if v.isdigit() else (2**63, v)


REGISTRY = EventRegistry(
    EventType(name="confluence/app.sync", v="1", model=ConfluenceAppSync, client_publishable=True),
    # Published by the consumer once a sync run is committed (consumers/runner.py).
    EventType(name="confluence/app.sync.completed", v="1", model=ConfluenceAppSyncCompleted),
)
