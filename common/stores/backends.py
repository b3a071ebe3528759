"""Which backend serves a store's location: the one place that knows every backend."""

from __future__ import annotations

from pathlib import Path

from common.stores.runs import RunReader, RunStore
from common.stores.runs_sqlite import BatchedRunStore, SqliteRunReader


def open_run_store(location: Path, *, commit_delay: float, full_at: int) -> RunStore:
    """The consumer's store at `location`, created if missing (`BatchedRunStore` explains the
    group commit that `commit_delay` and `full_at` tune)."""
    return BatchedRunStore(location, commit_delay=commit_delay, full_at=full_at)


def open_run_reader(location: Path) -> RunReader:
    """A reader of the store at `location`; it opens the store only to read."""
    return SqliteRunReader(location)
