"""Which backend serves a store's location: the one place that knows every backend."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from common.stores.idempotency import IdempotencyStore
from common.stores.idempotency_memory import MemoryIdempotencyStore
from common.stores.idempotency_redis import RedisIdempotencyStore
from common.stores.login_failures import LockoutPolicy, LoginFailureStore
from common.stores.login_failures_memory import MemoryLoginFailures
from common.stores.login_failures_redis import RedisLoginFailures
from common.stores.redis_link import RedisLink
from common.stores.runs import RunReader, RunStore
from common.stores.runs_sqlite import BatchedRunStore, SqliteRunReader


def open_run_store(location: Path, *, commit_delay: float, full_at: int) -> RunStore:
    """The consumer's store at `location`, created if missing (`BatchedRunStore` explains the
    group commit that `commit_delay` and `full_at` tune)."""
    return BatchedRunStore(location, commit_delay=commit_delay, full_at=full_at)


def open_run_reader(location: Path) -> RunReader:
    """A reader of the store at `location`; it opens the store only to read."""
    return SqliteRunReader(location)


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Where the shared stores live (the URL stays secret, in its repr too), and how long a
    call to Redis may take (`common/stores/redis_link.py`)."""

    url: SecretStr
    prefix: str
    timeout: float
    max_connections: int

    def link(self, name: str) -> RedisLink:
        return RedisLink(
            self.url, name=name, timeout=self.timeout, max_connections=self.max_connections
        )


def open_idempotency_store(
    redis: RedisOptions | None,
    *,
    window: float,
    max_keys: int,
    max_attempt_bytes: int,
    publish_deadline: float,
) -> IdempotencyStore:
    """In this process's memory without `redis`, else in Redis for every gateway to share.

    A Redis claim's lease covers what its holder does while it holds it: its publish (at
    most `publish_deadline`), the Redis calls around it, and a second for scheduling.
    """
    if redis is None:
        # The monotonic clock: a key's window does not move with the wall clock.
        return MemoryIdempotencyStore(
            window=window, max_keys=max_keys, max_attempt_bytes=max_attempt_bytes
        )
    return RedisIdempotencyStore(
        redis.link("syncgate-gateway-idempotency"),
        prefix=redis.prefix,
        window=window,
        lease=publish_deadline + 3 * redis.timeout + 1.0,
        max_attempt_bytes=max_attempt_bytes,
    )


def open_login_failure_store(
    redis: RedisOptions | None, *, accounts: LockoutPolicy, addresses: LockoutPolicy
) -> LoginFailureStore:
    """In this process's memory without `redis`, else in Redis for every gateway to share."""
    if redis is None:
        return MemoryLoginFailures(accounts=accounts, addresses=addresses, clock=time.time)
    return RedisLoginFailures(
        redis.link("syncgate-gateway-login-limits"),
        prefix=redis.prefix,
        accounts=accounts,
        addresses=addresses,
    )
