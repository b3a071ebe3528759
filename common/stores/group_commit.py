"""A group commit: the units of work of every in-flight message, committed in one transaction.

Every commit still waits for its transaction to be durable before any of its callers is told
"done", so a message is acked only after its record is on disk; batching just shares one
commit (one fsync) among everything that arrived while the previous one ran.

Before each commit the batch waits up to `commit_delay` for more writers to join (a group
commit's linger, as PostgreSQL's commit_delay), but never once `full_at` writers wait: with
the consumer's prefetch as `full_at`, every delivery the broker may send is then waiting on
this commit, and no more can arrive until it is acked. Events that arrive one by one then
share commits (and acks) with the next few, for at most that much more latency before the ack.

The backends (`runs_sqlite.py`, `runs_postgres.py`) give it the function that commits one
batch; it is the only place that decides what a batch holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """Batches what `commit` is given and hands each batch to `flush`, one batch at a time.

    `flush(batch)` commits the whole batch atomically, or raises: every writer in the batch
    then gets that exception.
    """

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[None]],
        *,
        name: str,
        max_batch: int = 1024,
        commit_delay: float = 0.0,
        full_at: int | None = None,
    ) -> None:
        self._flush_batch = flush
        self._name = name
        self._max_batch = max_batch
        self._commit_delay = commit_delay
        self._full_at = min(full_at or max_batch, max_batch)
        self._batch_full = asyncio.Event()
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0
        """Transactions committed so far: fewer than writers whenever batching helped."""

    async def commit(self, item: T) -> None:
        """Commit `item` atomically, in the next batch; return once it is durable."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if len(self._pending) >= self._full_at:
            self._batch_full.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=self._name)
        await done

    async def _flush(self) -> None:
        while self._pending:
            await self._let_writers_join()
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                await self._flush_batch([item for item, _ in batch])
                self.commits += 1
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def _let_writers_join(self) -> None:
        # One turn of the loop at least: the deliveries read in the same turn join in.
        if self._commit_delay <= 0 or len(self._pending) >= self._full_at:
            await asyncio.sleep(0)
            return
        self._batch_full.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._commit_delay):
                await self._batch_full.wait()
