"""The run store on SQLite: the one module that holds its schema and its queries.

`SqliteRunStore` is the plain, blocking store (tests use it). The consumer uses
`BatchedRunStore`: reads run on the event loop (a WAL read takes microseconds and never
waits for the writer), and writes from all in-flight messages are committed together in one
transaction, fsync'd, by the group commit (`group_commit.py` explains its linger,
`commit_delay`, and `full_at`).

A batch's statements run on the event loop and only its COMMIT (the fsync) on a worker
thread. Running every statement on the thread was far slower under load: each one hands the
GIL back and forth with a busy loop, and each hand-over waits up to the interpreter's switch
interval (5 ms), so a batch that takes 1 ms alone took 0.5 s (measured). The price: where
consumers share one file, BEGIN IMMEDIATE waits on the loop for another's commit (an fsync,
under a millisecond here).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from common.stores.group_commit import GroupCommit
from common.stores.runs import LocalClaims, Run, RunStoreUnavailable
from schemas.events import ConfluenceAppSync

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    event_id       TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    user_email     TEXT NOT NULL,
    user_name      TEXT NOT NULL,
    app_settings   TEXT NOT NULL,
    data           TEXT NOT NULL,
    event_ts       INTEGER NOT NULL,
    received_at    INTEGER NOT NULL,
    handled_at     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS processed_events (
    event_id       TEXT PRIMARY KEY,
    processed_at   INTEGER NOT NULL
);
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


Write = tuple[str, tuple[object, ...]]
"""One SQL statement and its parameters, applied inside a batch's transaction."""

_MARK_PROCESSED = "INSERT OR IGNORE INTO processed_events (event_id, processed_at) VALUES (?, ?)"
_RECORD_SYNC = "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def mark_processed_write(event_id: str) -> Write:
    return (_MARK_PROCESSED, (event_id, _now_ms()))


def record_sync_write(event: ConfluenceAppSync, *, received_at: int) -> Write:
    return (
        _RECORD_SYNC,
        (
            str(event.id),
            event.user.id,
            event.user.email,
            event.user.name,
            event.appSettings.model_dump_json(),
            orjson.dumps(event.data).decode(),
            event.ts,
            received_at,
            _now_ms(),
        ),
    )


class SqliteRunStore:
    """Blocking SQLite calls, on one connection."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def is_processed(self, event_id: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM processed_events WHERE event_id = ?", (event_id,)
        ).fetchone()
        return row is not None

    def mark_processed(self, event_id: str) -> None:
        self.apply([mark_processed_write(event_id)])

    def record_sync(self, event: ConfluenceAppSync, *, received_at: int) -> bool:
        """Record the run once; False if this event id was already recorded."""
        return self.apply([record_sync_write(event, received_at=received_at)])[0]

    def apply(self, writes: Sequence[Write]) -> list[bool]:
        """All writes in one transaction (one fsync); for each, whether it changed a row."""
        changed = self.stage(writes)
        self.commit()
        return changed

    def stage(self, writes: Sequence[Write]) -> list[bool]:
        """Open a transaction holding these writes; `commit` or `rollback` must follow."""
        changed = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in writes:
                changed.append(self._db.execute(sql, params).rowcount == 1)
        except BaseException:
            self.rollback()
            raise
        return changed

    def commit(self) -> None:
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise

    def rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def runs(self, *, limit: int = 50) -> list[Run]:
        rows = self._db.execute(
            "SELECT * FROM runs ORDER BY handled_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [Run(*row) for row in rows]

    def get(self, event_id: str) -> Run | None:
        row = self._db.execute("SELECT * FROM runs WHERE event_id = ?", (event_id,)).fetchone()
        return Run(*row) if row else None

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


class BatchedRunStore:
    """The consumer's run store: reads on the loop, writes group-committed off it."""

    def __init__(
        self,
        path: Path,
        *,
        max_batch: int = 1024,
        commit_delay: float = 0.0,
        full_at: int | None = None,
    ) -> None:
        self._writer = SqliteRunStore(path)  # one batch at a time, by `_flush` alone
        self._reader = SqliteRunStore(path)
        self._claims = LocalClaims()
        self._group: GroupCommit[list[Write]] = GroupCommit(
            self._flush,
            name="syncgate-run-store-flush",
            max_batch=max_batch,
            commit_delay=commit_delay,
            full_at=full_at,
        )

    @property
    def commits(self) -> int:
        """Transactions committed so far: fewer than writers whenever batching helped."""
        return self._group.commits

    async def start(self) -> None:
        """Nothing to open: the file was opened (and made) with the store."""

    async def probe(self) -> None:
        self._reader.is_processed("")

    async def is_processed(self, event_id: str) -> bool:
        return self._reader.is_processed(event_id)

    async def claim(self, event_id: str) -> BatchedRunWrites | None:
        """One process writes this file, so a claim is held in the process alone: a second
        copy of the event waits for the first copy's claim to end, then finds it processed."""
        await self._claims.acquire(event_id)
        if self._reader.is_processed(event_id):
            self._claims.release(event_id)
            return None
        return BatchedRunWrites(self, event_id)

    def unit_of_work(self) -> BatchedRunWrites:
        """Writes staged outside any claim (tools and tests), committed together."""
        return BatchedRunWrites(self, None)

    async def commit(self, writes: list[Write]) -> None:
        """Commit these writes atomically, in the next batch; return once they are on disk."""
        await self._group.commit(writes)

    async def _flush(self, batch: list[list[Write]]) -> None:
        self._writer.stage([write for group in batch for write in group])
        await asyncio.to_thread(self._writer.commit)

    async def close(self) -> None:
        self._writer.close()
        self._reader.close()


class BatchedRunWrites:
    """One message's unit of work: what its handler records, plus "processed", in one commit.

    Committing the handler's record and the processed mark together means a redelivery
    either finds both (and is acked as a duplicate) or neither (and is handled again), and it
    halves the commits each message waits for.
    """

    def __init__(self, store: BatchedRunStore, claimed: str | None) -> None:
        self._store = store
        self._claimed = claimed
        self._writes: list[Write] = []

    def record_sync(self, event: ConfluenceAppSync, *, received_at: int) -> None:
        """Stage the run; an event id already recorded is left as it was."""
        self._writes.append(record_sync_write(event, received_at=received_at))

    def mark_processed(self, event_id: str) -> None:
        self._writes.append(mark_processed_write(event_id))

    async def commit(self) -> None:
        writes, self._writes = self._writes, []
        if writes:
            await self._store.commit(writes)

    async def release(self) -> None:
        self._writes = []
        if self._claimed is not None:
            self._store._claims.release(self._claimed)
            self._claimed = None


class SqliteRunReader:
    """Reads the consumer's file without ever creating or writing it.

    Each read opens the file read-only, so a store the consumer has not made yet stays
    absent, and a store replaced on disk is read afresh.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        # Set once the consumer has created the table; tables are never dropped.
        self._has_table = False

    async def start(self) -> None:
        """Nothing to open: each read opens the file."""

    async def close(self) -> None:
        pass

    async def get(self, event_id: str) -> Run | None:
        return await asyncio.to_thread(self._get, event_id)

    async def recent(self, *, limit: int) -> list[Run]:
        if not self._path.exists():
            raise RunStoreUnavailable(f"no run store at {self._path}")
        return await asyncio.to_thread(self._recent, limit)

    def _get(self, event_id: str) -> Run | None:
        if not self._path.exists():
            return None
        with self._reading() as db:
            if not self._table_exists(db):
                return None
            row = db.execute("SELECT * FROM runs WHERE event_id = ?", (event_id,)).fetchone()
        return None if row is None else Run(*row)

    def _recent(self, limit: int) -> list[Run]:
        with self._reading() as db:
            if not self._table_exists(db):
                return []
            rows = db.execute(
                "SELECT * FROM runs ORDER BY handled_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [Run(*row) for row in rows]

    def _table_exists(self, db: sqlite3.Connection) -> bool:
        # The consumer creates the table when it opens the store; until then, nothing ran.
        if not self._has_table:
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'"
            ).fetchone()
            self._has_table = found is not None
        return self._has_table

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        # mode=ro: a missing file is an error rather than a new empty database.
        uri = f"{self._path.resolve().as_uri()}?mode=ro"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=2.0)) as db:
                yield db
        except sqlite3.Error as exc:
            raise RunStoreUnavailable(
                f"the run store {self._path} cannot be read: {exc!r}"
            ) from exc
