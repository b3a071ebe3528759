"""The durable record of sync runs, and of which events were already processed (SQLite)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

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


class RunStore:
    """Blocking SQLite calls: the runner calls them from a worker thread."""

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
        self._db.execute(
            "INSERT OR IGNORE INTO processed_events (event_id, processed_at) VALUES (?, ?)",
            (event_id, _now_ms()),
        )

    def record_sync(self, event: ConfluenceAppSync, *, received_at: int) -> bool:
        """Record the run once; False if this event id was already recorded."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        return cursor.rowcount == 1

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
