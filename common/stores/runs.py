"""The run store: which events a consumer has handled, and the record of each sync run.

Everyone goes through the interfaces here, never through a backend's queries:
- the consumer writes through `RunStore`: before running a handler it claims the event id
  (`claim`), which answers None for an event already processed; the claim is the message's
  unit of work, and its commit puts the handler's writes and the processed mark in one
  transaction, before the message is acked;
- the gateway (`GET /api/runs/{event_id}`) and `syncgate runs` read through `RunReader`,
  which never creates or writes the store.

"Handled once": while a consumer holds the claim on an event id, no other claim on that id
is granted (within one process, a second copy waits for the first; across consumers, as
the backend says); once a claim's commit is durable, every later claim on that id answers
None. A claim that ends without a commit (the handler failed, the process died) lets the
next copy run the handler again.

`common/stores/backends.py` picks the backend from the location (SYNCGATE_RUN_STORE): a
file path is SQLite (`runs_sqlite.py`), one machine's store, so the gateway and the
consumer must see one file; a `postgresql://` URL is PostgreSQL (`runs_postgres.py`),
shared by consumers and gateways on any host. The location may carry a password: it is a
secret, named only through `backends.describe`.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Protocol

from pydantic import BeforeValidator, SecretStr

from schemas.events import ConfluenceAppSync

DEFAULT_LOCATION = Path("syncgate-runs.sqlite3")
"""SYNCGATE_RUN_STORE's default, for the gateway, the consumer and `syncgate runs` alike."""


def _location_text(value: object) -> object:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


RunStoreLocation = Annotated[SecretStr, BeforeValidator(_location_text)]
"""SYNCGATE_RUN_STORE in both processes' settings: a path or a URL, kept secret (it may
carry a password); a `Path` is taken as its text."""


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
    """The store cannot be read or written right now (locked, corrupt, unreachable).

    Its message never holds the store's password."""


class RunStoreRefused(RunStoreUnavailable):
    """The store answered, but refused us (a wrong password, no such database): trying again
    as configured will not help, so a process starting with it stops with the reason."""


class RunWrites(Protocol):
    """One message's unit of work, and its claim on the event id: what its handler records,
    plus "processed", in one commit."""

    def record_sync(self, event: ConfluenceAppSync, *, received_at: int) -> None:
        """Stage the run; an event id already recorded is left as it was."""
        ...

    def mark_processed(self, event_id: str) -> None: ...

    async def commit(self) -> None:
        """Commit what is staged, atomically; return once it is durable. RunStoreUnavailable
        if it is not (then it may or may not have been committed: a redelivery finds out)."""
        ...

    async def release(self) -> None:
        """End the claim: after a commit, or without one (nothing staged is kept). Never
        raises; a second call does nothing."""
        ...


class RunStore(Protocol):
    """What the consumer writes through."""

    async def start(self) -> None:
        """Open the store; RunStoreRefused if it refuses us. A store that does not answer yet
        is opened by `probe` later."""
        ...

    async def probe(self) -> None:
        """Return once the store answers (reconnecting if need be); RunStoreUnavailable if not."""
        ...

    async def is_processed(self, event_id: str) -> bool: ...

    async def claim(self, event_id: str) -> RunWrites | None:
        """The claim on this event id, for one handler run; None if it was processed already.

        Waits while another holder has it. The caller must `release` what it gets."""
        ...

    async def close(self) -> None: ...


class RunReader(Protocol):
    """What the gateway and the CLI read through; it never creates the store."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, event_id: str) -> Run | None:
        """The run with this id; None while it is not recorded, or the store not yet made."""
        ...

    async def recent(self, *, limit: int) -> list[Run]:
        """The latest runs, newest first; RunStoreUnavailable if there is no store there."""
        ...


class LocalClaims:
    """Claims within one process: a second copy of an event in flight at once (a republish
    racing a redelivery) waits for the first copy's claim to end."""

    def __init__(self) -> None:
        self._held: dict[str, asyncio.Event] = {}

    async def acquire(self, event_id: str) -> None:
        while (held := self._held.get(event_id)) is not None:
            await held.wait()
        self._held[event_id] = asyncio.Event()

    def release(self, event_id: str) -> None:
        held = self._held.pop(event_id, None)
        if held is not None:
            held.set()
