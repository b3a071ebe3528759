"""The run store: which events a consumer has handled, and the record of each sync run.

Everyone goes through the interfaces here, never through a backend's queries:
- the consumer writes through `RunStore`: it asks whether an event was processed, and commits
  each message's unit of work (the handler's writes and the processed mark) in one
  transaction, before the message is acked;
- the gateway (`GET /api/runs/{event_id}`) and `syncgate runs` read through `RunReader`,
  which never creates or writes the store.

`common/stores/backends.py` picks the backend from the location: a file path is SQLite
(`runs_sqlite.py`), one machine's store, so the gateway and the consumer must see one file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from schemas.events import ConfluenceAppSync

DEFAULT_LOCATION = Path("syncgate-runs.sqlite3")
"""SYNCGATE_RUN_STORE's default, for the gateway, the consumer and `syncgate runs` alike."""


@dataclass(frozen=True, slots=True)
class Run:
    event_id: str
    user_id: str
    user_email: str
    user_name: str
    app_settings: str
    data: str
    event_ts: int
    received_at: int
    handled_at: int


class RunStoreUnavailable(Exception):
    """The store cannot be read or written right now (locked, corrupt, unreachable)."""


class RunWrites(Protocol):
    """One message's unit of work: what its handler records, plus "processed", in one commit."""

    def record_sync(self, event: ConfluenceAppSync, *, received_at: int) -> None:
        """Stage the run; an event id already recorded is left as it was."""
        ...

    def mark_processed(self, event_id: str) -> None: ...

    async def commit(self) -> None:
        """Commit what is staged, atomically; return once it is durable."""
        ...


class RunStore(Protocol):
    """What the consumer writes through."""

    async def is_processed(self, event_id: str) -> bool: ...

    def unit_of_work(self) -> RunWrites: ...

    async def close(self) -> None: ...


class RunReader(Protocol):
    """What the gateway and the CLI read through; it never creates the store."""

    async def get(self, event_id: str) -> Run | None:
        """The run with this id; None while it is not recorded, or the store not yet made."""
        ...

    async def recent(self, *, limit: int) -> list[Run]:
        """The latest runs, newest first; RunStoreUnavailable if there is no store there."""
        ...
