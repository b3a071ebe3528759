"""The run store on PostgreSQL: the one module that holds its schema and its queries.

Chosen when SYNCGATE_RUN_STORE is a `postgresql://` (or `postgres://`) URL. Consumers and
gateways on any host share it: the consumers write `runs` and `processed_events` (the same
tables as on SQLite), the gateway's `GET /api/runs/{event_id}` and `syncgate runs` read
`runs`. The first consumer to connect creates the tables and the function `syncgate_claim`
(its role needs CREATE on the database's `public` schema); readers never create anything.

Handled once, across consumers
------------------------------
A consumer runs an event's handler only while it holds the event id's **claim**. The claim
is granted to one consumer at a time: while consumer A holds it, a copy of the same event at
consumer B (a republish racing a redelivery) waits, and never runs the handler alongside A.
A claim ends in one of three ways:
- A commits: the handler's writes and the processed mark are durable, in one transaction,
  and only then is the claim released. Every later claim on that id, by any consumer, finds
  it processed: the copy is acked as a duplicate and the handler does not run again.
- A's handler fails (retry, dead-letter): the claim is released without a commit, and the
  next copy may run the handler again (a retry, as on one host).
- A dies (kill -9, a lost host, a lost connection to PostgreSQL): its session ends, and
  PostgreSQL releases all its claims with it; its uncommitted batch is rolled back. Its
  unacked messages are redelivered, and whoever claims one next finds it processed if A's
  commit made it, and runs the handler again if not.
So the handler of an event runs at most once at a time, and never again once its run is
recorded; a handler whose run was not recorded (its consumer died before the commit) may
run again, elsewhere, as at-least-once delivery requires. Side effects a handler has outside
the run store are subject to the same rule.

How
---
A claim is a session-level advisory lock on a 64-bit hash of the event id, taken with
`pg_try_advisory_lock` on the consumer's one connection, followed by a look at
`processed_events`, both inside `syncgate_claim`: in a VOLATILE function each query has a
snapshot of its own, taken after the lock, so it sees the commit of a consumer that released
the lock just before (one statement's single snapshot could miss it and run the handler
twice). The claims of every delivery read in one turn of the loop go in one call, together
with the releases of claims that ended without a commit. A copy whose lock is held by
another session polls again, from 10 ms backing off to 0.5 s; a hash collision between two
ids only makes one of them wait.

The group commit keeps its one transaction per batch (`group_commit.py`): one statement
inserts every message's run and processed mark of the batch, and hands each claim over from
the session lock to a transaction lock (`pg_try_advisory_xact_lock`, then
`pg_advisory_unlock`) that PostgreSQL releases only after the COMMIT is durable and visible.
A batch holding many messages therefore releases all their claims at once, at its commit,
never before. The commit waits for the WAL flush (synchronous_commit as the server sets it,
`on` by default) before any message of the batch is acked.

A claim belongs to the connection that took it. When that connection fails, the store drops
it (so PostgreSQL ends its claims at once) and every claim, commit and release in flight
fails with RunStoreUnavailable; a claim of the lost session never commits through a new
one. The consumer then pauses (`consumers/pause.py`), and `probe` reconnects.

Sessions ask for READ COMMITTED (the claim's fresh look depends on it) and TCP keepalives
(10 s idle, 5 s apart, 3 probes), so the claims of a consumer whose host vanished are
released within about 25 s. Advisory locks share the server's lock table (about
max_locks_per_transaction x max_connections entries): each consumer holds up to twice its
prefetch. Keep syncgate's tables in a database of their own: other users of single-key
advisory locks there could only make claims wait, but nothing else should share them.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncpg
import orjson

from common.amqp import connection_name
from common.stores.group_commit import GroupCommit
from common.stores.runs import LocalClaims, Run, RunStoreRefused, RunStoreUnavailable
from schemas.events import ConfluenceAppSync

# The advisory lock taken first, until the schema is made, so that consumers starting together
# do not race on it, is 0x73796E6367617465 ("syncgate").
_SCHEMA = """
SELECT pg_advisory_xact_lock(8320803159758959717);
CREATE TABLE IF NOT EXISTS runs (
    event_id       TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    user_email     TEXT NOT NULL,
    user_name      TEXT NOT NULL,
    app_settings   TEXT NOT NULL,
    data           TEXT NOT NULL,
    event_ts       BIGINT NOT NULL,
    received_at    BIGINT NOT NULL,
    handled_at     BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_handled_at ON runs (handled_at);
CREATE TABLE IF NOT EXISTS processed_events (
    event_id       TEXT PRIMARY KEY,
    processed_at   BIGINT NOT NULL
);
CREATE OR REPLACE FUNCTION syncgate_claim(releases BIGINT[], ids TEXT[], keys BIGINT[])
RETURNS TEXT[] LANGUAGE plpgsql VOLATILE AS $claim$
DECLARE
    states TEXT[] := ARRAY[]::TEXT[];
BEGIN
    PERFORM pg_advisory_unlock(k) FROM unnest(releases) AS k;
    FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP
        IF NOT pg_try_advisory_lock(keys[i]) THEN
            states := states || 'busy'::TEXT;
        -- A query of its own, so a snapshot taken after the lock.
        ELSIF EXISTS (SELECT 1 FROM processed_events WHERE event_id = ids[i]) THEN
            PERFORM pg_advisory_unlock(keys[i]);
            states := states || 'processed'::TEXT;
        ELSE
            states := states || 'claimed'::TEXT;
        END IF;
    END LOOP;
    RETURN states;
END
$claim$;
"""

_CLAIM = "SELECT syncgate_claim($1::BIGINT[], $2::TEXT[], $3::BIGINT[])"

# One statement, so one transaction: the runs, the marks, and the claims' hand-over from the
# session locks to transaction locks, which end with the COMMIT. CASE evaluates its test
# first: each key is locked for the transaction before its session lock goes.
_COMMIT = """
WITH recorded AS (
    INSERT INTO runs (event_id, user_id, user_email, user_name, app_settings, data,
                      event_ts, received_at, handled_at)
    SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                         $6::TEXT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[])
    ON CONFLICT (event_id) DO NOTHING
), marked AS (
    INSERT INTO processed_events (event_id, processed_at)
    SELECT * FROM unnest($10::TEXT[], $11::BIGINT[])
    ON CONFLICT (event_id) DO NOTHING
)
SELECT count(*) FROM (
    SELECT CASE WHEN pg_try_advisory_xact_lock(k) THEN pg_advisory_unlock(k) END AS handed
    FROM unnest($12::BIGINT[]) AS k
) AS handover WHERE handed
"""

_IS_PROCESSED = "SELECT EXISTS (SELECT 1 FROM processed_events WHERE event_id = $1)"

_RUN_COLUMNS = (
    "event_id, user_id, user_email, user_name, app_settings, data, event_ts, received_at, "
    "handled_at"
)
_GET = f"SELECT {_RUN_COLUMNS} FROM runs WHERE event_id = $1"  # noqa: S608 (constants only)
_RECENT = f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY handled_at DESC LIMIT $1"  # noqa: S608

# A claim held by another consumer is asked for again after this, doubling up to the most.
_BUSY_FIRST = 0.01
_BUSY_MOST = 0.5

# What answers "the store refused us" rather than "the store is not there".
_REFUSALS = (
    asyncpg.InvalidAuthorizationSpecificationError,  # a wrong password, an unknown role
    asyncpg.InvalidCatalogNameError,  # no such database
    asyncpg.InsufficientPrivilegeError,  # may not create the tables
    asyncpg.ClientConfigurationError,  # a URL asyncpg cannot use
    ValueError,
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def claim_key(event_id: str) -> int:
    """The advisory lock key of an event id: 64 bits of its BLAKE2b hash."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _session_settings(role: str) -> dict[str, str]:
    return {
        "application_name": connection_name(role),
        "default_transaction_isolation": "read committed",
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
    }


class _Secrets:
    """The password a URL carries, in every spelling an error message might repeat."""

    def __init__(self, dsn: str, described: str) -> None:
        self.described = described
        parts = urlsplit(dsn)
        raw = parts.netloc.rpartition("@")[0].partition(":")[2]
        values = {raw, unquote(raw)}
        values |= {v for k, v in parse_qsl(parts.query) if k.lower() == "password"}
        self._values = sorted((v for v in values if v), key=len, reverse=True)

    def failure(self, what: str, exc: BaseException) -> RunStoreUnavailable:
        """RunStoreUnavailable (or RunStoreRefused), saying what failed, without the password."""
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        for value in self._values:
            reason = reason.replace(value, "***")
        kind = RunStoreRefused if isinstance(exc, _REFUSALS) else RunStoreUnavailable
        return kind(f"the run store {self.described} {what}: {reason}")


class PostgresRunStore:
    """The consumer's run store: claims and group commits on one connection of its own."""

    def __init__(
        self,
        dsn: str,
        *,
        described: str,
        commit_delay: float = 0.0,
        full_at: int | None = None,
        max_batch: int = 1024,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._secrets = _Secrets(dsn, described)
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._connection: asyncpg.Connection | None = None
        self._session = 0
        """Counts connections: a claim names the one it was taken on."""
        self._using = asyncio.Lock()  # one statement at a time on the connection
        self._local = LocalClaims()
        self._requests: list[tuple[str, int, asyncio.Future[tuple[str, int]]]] = []
        self._releases: list[tuple[int, int]] = []  # (key, session)
        self._locker: asyncio.Task[None] | None = None
        self._group: GroupCommit[PostgresClaim] = GroupCommit(
            self._flush,
            name="syncgate-run-store-flush",
            max_batch=max_batch,
            commit_delay=commit_delay,
            full_at=full_at,
        )

    def __repr__(self) -> str:
        return f"PostgresRunStore({self._secrets.described!r})"

    @property
    def commits(self) -> int:
        """Transactions committed so far: fewer than writers whenever batching helped."""
        return self._group.commits

    async def start(self) -> None:
        try:
            await self.probe()
        except RunStoreRefused:
            raise
        except RunStoreUnavailable:
            pass  # not there yet: the consumer probes before it consumes

    async def probe(self) -> None:
        async with self._using:
            connection, session = await self._connected()
            try:
                await connection.fetchval("SELECT 1")
            except Exception as exc:
                raise self._lost(session, "did not answer", exc) from None

    async def _connected(self) -> tuple[asyncpg.Connection, int]:
        """The connection (opened, with the schema, if there is none); with `_using` held."""
        if self._connection is not None and not self._connection.is_closed():
            return self._connection, self._session
        try:
            connection = await asyncpg.connect(
                self._dsn,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
                server_settings=_session_settings("consumer"),
            )
        except Exception as exc:
            raise self._secrets.failure("cannot be reached", exc) from None
        try:
            await connection.execute(_SCHEMA)
        except Exception as exc:
            connection.terminate()
            raise self._secrets.failure("cannot create its tables", exc) from None
        self._connection = connection
        self._session += 1
        return connection, self._session

    def _current(self) -> tuple[asyncpg.Connection, int]:
        """The open connection; RunStoreUnavailable while there is none (`probe` opens it)."""
        if self._connection is None or self._connection.is_closed():
            raise RunStoreUnavailable(f"the run store {self._secrets.described} is not connected")
        return self._connection, self._session

    def _lost(self, session: int, what: str, exc: Exception) -> RunStoreUnavailable:
        """Drop the failed connection, so that PostgreSQL ends its claims now; with `_using`."""
        if self._session == session and self._connection is not None:
            self._connection.terminate()
            self._connection = None
        if isinstance(exc, RunStoreUnavailable):
            return exc
        return self._secrets.failure(what, exc)

    async def is_processed(self, event_id: str) -> bool:
        async with self._using:
            connection, session = self._current()
            try:
                return bool(await connection.fetchval(_IS_PROCESSED, event_id))
            except Exception as exc:
                raise self._lost(session, "cannot be read", exc) from None

    async def claim(self, event_id: str) -> PostgresClaim | None:
        await self._local.acquire(event_id)
        try:
            key = claim_key(event_id)
            wait = _BUSY_FIRST
            while True:
                state, session = await self._request(event_id, key)
                if state == "claimed":
                    return PostgresClaim(self, event_id, key, session)
                if state == "processed":
                    self._local.release(event_id)
                    return None
                # Another consumer holds it: its commit, its failure or its end frees it.
                await asyncio.sleep(wait)
                wait = min(wait * 2, _BUSY_MOST)
        except BaseException:
            self._local.release(event_id)
            raise

    async def _request(self, event_id: str, key: int) -> tuple[str, int]:
        done: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        self._requests.append((event_id, key, done))
        self._wake_locker()
        return await done

    def _release(self, key: int, session: int) -> None:
        self._releases.append((key, session))
        self._wake_locker()

    def _wake_locker(self) -> None:
        if self._locker is None or self._locker.done():
            self._locker = asyncio.create_task(self._lock(), name="syncgate-run-store-claims")

    async def _lock(self) -> None:
        while self._requests or self._releases:
            # One turn of the loop: the deliveries read in the same turn claim together.
            await asyncio.sleep(0)
            requests, self._requests = self._requests, []
            releases, self._releases = self._releases, []
            try:
                async with self._using:
                    connection, session = self._current()
                    # A lost session's claims ended with it.
                    keys = [key for key, held_on in releases if held_on == session]
                    try:
                        states: list[str] = await connection.fetchval(
                            _CLAIM, keys, [r[0] for r in requests], [r[1] for r in requests]
                        )
                    except Exception as exc:
                        raise self._lost(session, "cannot take claims", exc) from None
            except RunStoreUnavailable as failure:
                for _, _, done in requests:
                    if not done.done():
                        done.set_exception(failure)
                continue
            for (_, key, done), state in zip(requests, states, strict=True):
                if not done.done():
                    done.set_result((state, session))
                elif state == "claimed":  # its claimant is gone (cancelled): let it go
                    self._releases.append((key, session))

    async def _flush(self, batch: list[PostgresClaim]) -> None:
        async with self._using:
            connection, session = self._current()
            live = []
            for claim in batch:
                if claim.session == session:
                    live.append(claim)
                else:
                    claim.lost = True
            if not live:
                return
            runs = [row for claim in live for row in claim.runs]
            marks = [mark for claim in live for mark in claim.marks]
            run_columns: list[Any] = [list(c) for c in zip(*runs, strict=True)] or [[]] * 9
            mark_columns: list[Any] = [list(c) for c in zip(*marks, strict=True)] or [[]] * 2
            try:
                await connection.fetchval(
                    _COMMIT, *run_columns, *mark_columns, [claim.key for claim in live]
                )
            except Exception as exc:
                raise self._lost(session, "cannot commit", exc) from None

    async def commit(self, claim: PostgresClaim) -> None:
        await self._group.commit(claim)
        if claim.lost:
            raise RunStoreUnavailable(
                f"the claim on {claim.event_id} was lost with the connection to the run store "
                f"{self._secrets.described}; nothing of it was committed"
            )

    async def close(self) -> None:
        if self._locker is not None:
            self._locker.cancel()
        async with self._using:
            connection, self._connection = self._connection, None
            if connection is not None:
                try:
                    await connection.close(timeout=5)
                except Exception:
                    connection.terminate()


class PostgresClaim:
    """One message's claim on its event id, and its unit of work: committed in the store's
    next batch, with the claim handed over to that batch's transaction."""

    def __init__(self, store: PostgresRunStore, event_id: str, key: int, session: int) -> None:
        self._store = store
        self.event_id = event_id
        self.key = key
        self.session = session
        self.runs: list[tuple[str, str, str, str, str, str, int, int, int]] = []
        self.marks: list[tuple[str, int]] = []
        self.lost = False
        self._committed = False
        self._released = False

    def record_sync(self, event: ConfluenceAppSync, *, received_at: int) -> None:
        """Stage the run; an event id already recorded is left as it was."""
        self.runs.append(
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
            )
        )

    def mark_processed(self, event_id: str) -> None:
        self.marks.append((event_id, _now_ms()))

    async def commit(self) -> None:
        if self._committed or self._released:
            raise RuntimeError("a claim commits once, before it is released")
        if not self.runs and not self.marks:
            return
        await self._store.commit(self)
        self._committed = True

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.runs, self.marks = [], []
        if not self._committed:
            self._store._release(self.key, self.session)
        self._store._local.release(self.event_id)


class PostgresRunReader:
    """Reads `runs` through a small pool; never creates anything. A missing table reads as
    "nothing recorded yet", an unreachable server as RunStoreUnavailable."""

    def __init__(
        self, dsn: str, *, described: str, timeout: float = 2.0, max_connections: int = 4
    ) -> None:
        self._dsn = dsn
        self._secrets = _Secrets(dsn, described)
        self._timeout = timeout
        self._max_connections = max_connections
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresRunReader({self._secrets.described!r})"

    async def start(self) -> None:
        # No connection yet (min_size=0): the gateway starts whether or not the store answers.
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self._max_connections,
            timeout=self._timeout,
            command_timeout=self._timeout,
            server_settings=_session_settings("runs-reader"),
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except Exception:
                pool.terminate()

    async def get(self, event_id: str) -> Run | None:
        rows = await self._fetch(_GET, event_id)
        return Run(*rows[0]) if rows else None

    async def recent(self, *, limit: int) -> list[Run]:
        return [Run(*row) for row in await self._fetch(_RECENT, limit)]

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        if self._pool is None:
            raise RunStoreUnavailable(f"the run store {self._secrets.described} is not open")
        for attempt in (1, 2):
            try:
                return await self._pool.fetch(query, *args)
            except asyncpg.UndefinedTableError:
                return []  # no consumer has created the tables yet: nothing ran
            except (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError) as exc:
                # A pooled connection the server closed (a restart): once more, on a new one.
                if attempt == 2:
                    raise self._secrets.failure("cannot be read", exc) from None
            except Exception as exc:
                raise self._secrets.failure("cannot be read", exc) from None
        raise AssertionError("unreachable")
