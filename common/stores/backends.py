"""Which backend serves a store's location: the one place that knows every backend.

SYNCGATE_RUN_STORE is a file path (SQLite) or a `postgresql://` / `postgres://` URL
(PostgreSQL). The URL may carry a password, so the location stays a SecretStr up to the
backend, and `describe` is the only way to name it in a log line, an error or the CLI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

from common.stores.idempotency import IdempotencyStore
from common.stores.idempotency_memory import MemoryIdempotencyStore
from common.stores.idempotency_redis import RedisIdempotencyStore
from common.stores.login_failures import LockoutPolicy, LoginFailureStore
from common.stores.login_failures_memory import MemoryLoginFailures
from common.stores.login_failures_redis import RedisLoginFailures
from common.stores.redis_link import RedisLink
from common.stores.runs import RunReader, RunStore
from common.stores.runs_postgres import PostgresRunReader, PostgresRunStore
from common.stores.runs_sqlite import BatchedRunStore, SqliteRunReader

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: SecretStr) -> bool:
    return location.get_secret_value().startswith(POSTGRES_SCHEMES)


def open_run_store(location: SecretStr, *, commit_delay: float, full_at: int) -> RunStore:
    """The consumer's store at `location`: created if missing, opened by its `start`
    (`common/stores/group_commit.py` explains the group commit that `commit_delay` and
    `full_at` tune)."""
    if is_postgres(location):
        return PostgresRunStore(
            location.get_secret_value(),
            described=describe(location),
            commit_delay=commit_delay,
            full_at=full_at,
        )
    return BatchedRunStore(
        Path(location.get_secret_value()), commit_delay=commit_delay, full_at=full_at
    )


def open_run_reader(location: SecretStr) -> RunReader:
    """A reader of the store at `location`; it opens the store only to read."""
    if is_postgres(location):
        return PostgresRunReader(location.get_secret_value(), described=describe(location))
    return SqliteRunReader(Path(location.get_secret_value()))


def describe(location: SecretStr) -> str:
    """The location as it may be shown: a URL's password (in its user part or its query)
    replaced by `***`; a path as it is."""
    text = location.get_secret_value()
    if not is_postgres(location):
        return text
    parts = urlsplit(text)
    netloc = parts.netloc
    users, at, hosts = netloc.rpartition("@")
    if at and ":" in users:
        netloc = f"{users.split(':', 1)[0]}:***@{hosts}"
    query = urlencode(
        [
            (key, "***" if key.lower() == "password" else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


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
