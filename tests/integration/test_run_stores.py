"""The run store's backends side by side: SQLite (a file) and PostgreSQL (a database of the
test's own on the machine's server). Units of work, the group commit, dedupe and claims
through the RunStore interface; the readers; and, on PostgreSQL, claims across consumers
(two stores, two connections)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from common.stores.backends import open_run_reader, open_run_store
from common.stores.runs import RunStore, RunStoreUnavailable
from common.stores.runs_postgres import PostgresRunStore
from consumers.handlers import Deps, HandlerDeps
from consumers.runner import Runner, Settlement
from consumers.settings import ConsumerSettings
from schemas.events import ConfluenceAppSync
from tests.support.deliveries import EVENT_NAME, delivery_of
from tests.support.events import sync_event
from tests.support.postgres import fetch, fresh_database

pytestmark = pytest.mark.postgres

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
async def location(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SecretStr]:
    """SYNCGATE_RUN_STORE for each backend: a file, or a fresh database."""
    if request.param == "sqlite":
        yield SecretStr(str(tmp_path / "runs.sqlite3"))
        return
    async with fresh_database() as url:
        yield SecretStr(url)


async def opened(location: SecretStr, **tuning: float) -> RunStore:
    store = open_run_store(
        location,
        commit_delay=tuning.get("commit_delay", 0.0),
        full_at=int(tuning.get("full_at", 64)),
    )
    await store.start()
    await store.probe()
    return store


async def handled(store: RunStore, event: ConfluenceAppSync, *, received_at: int = 1) -> bool:
    """What the runner does for one delivery that succeeds; False if it was a duplicate."""
    writes = await store.claim(str(event.id))
    if writes is None:
        return False
    try:
        writes.record_sync(event, received_at=received_at)
        writes.mark_processed(str(event.id))
        await writes.commit()
    finally:
        await writes.release()
    return True


async def test_a_committed_unit_of_work_is_processed_and_read_back(location: SecretStr) -> None:
    store = await opened(location)
    reader = open_run_reader(location)
    await reader.start()
    try:
        event = sync_event({"n": 1})
        assert not await store.is_processed(str(event.id))
        assert await handled(store, event, received_at=7)
        assert await store.is_processed(str(event.id))
        run = await reader.get(str(event.id))
        assert run is not None
        assert (run.event_id, run.user_id, run.received_at) == (str(event.id), event.user.id, 7)
        assert run.data == '{"n":1}'
        assert run.handled_at >= event.ts
        assert [r.event_id for r in await reader.recent(limit=10)] == [str(event.id)]
    finally:
        await reader.close()
        await store.close()


async def test_a_processed_event_cannot_be_claimed_again(location: SecretStr) -> None:
    store = await opened(location)
    try:
        event = sync_event()
        assert await handled(store, event, received_at=1)
        assert await store.claim(str(event.id)) is None
        assert not await handled(store, event, received_at=2)
    finally:
        await store.close()
    reader = open_run_reader(location)
    await reader.start()
    try:
        run = await reader.get(str(event.id))
        assert run is not None
        assert run.received_at == 1, "the first record stays"
    finally:
        await reader.close()


async def test_a_claim_released_without_a_commit_leaves_nothing_and_can_be_claimed_again(
    location: SecretStr,
) -> None:
    store = await opened(location)
    try:
        event = sync_event()
        writes = await store.claim(str(event.id))
        assert writes is not None
        writes.record_sync(event, received_at=1)
        writes.mark_processed(str(event.id))
        await writes.release()  # the handler failed: nothing is committed
        await writes.release()  # a second release does nothing
        assert not await store.is_processed(str(event.id))
        assert await asyncio.wait_for(handled(store, event), 5)
    finally:
        await store.close()


async def test_concurrent_units_of_work_share_commits(location: SecretStr) -> None:
    store = await opened(location)
    reader = open_run_reader(location)
    await reader.start()
    try:
        events = [sync_event(i) for i in range(100)]
        assert all(await asyncio.gather(*(handled(store, e) for e in events)))
        commits = getattr(store, "commits")  # noqa: B009 (both backends count them)
        print(f"{location.get_secret_value()[:10]}: 100 units in {commits} commits")
        assert 1 <= commits < 10, "one commit should serve many messages"
        assert len(await reader.recent(limit=1000)) == 100
        assert all([await store.is_processed(str(e.id)) for e in events])
    finally:
        await reader.close()
        await store.close()


async def test_writers_within_the_commit_delay_share_one_commit_until_full(
    location: SecretStr,
) -> None:
    store = await opened(location, commit_delay=30.0, full_at=10)
    try:

        async def arriving(n: int) -> bool:
            await asyncio.sleep(0.002 * n)
            return await handled(store, sync_event(n))

        # A delay far longer than the test: only a full batch can end the wait early.
        assert all(await asyncio.wait_for(asyncio.gather(*(arriving(n) for n in range(10))), 10))
        assert getattr(store, "commits") == 1  # noqa: B009
    finally:
        await store.close()


async def test_two_copies_in_flight_in_one_consumer_run_the_handler_once(
    location: SecretStr,
) -> None:
    store = await opened(location)
    calls: list[ConfluenceAppSync] = []
    release = asyncio.Event()

    async def slow(event: ConfluenceAppSync, deps: HandlerDeps) -> None:
        calls.append(event)
        await release.wait()
        deps.runs.record_sync(event, received_at=1)

    runner = Runner(ConsumerSettings(queue="work"), {EVENT_NAME: slow}, Deps(runs=store))
    try:
        event = sync_event()
        first = asyncio.create_task(runner.decide(delivery_of(event)))
        second = asyncio.create_task(runner.decide(delivery_of(event)))
        await asyncio.sleep(0.05)
        release.set()
        decisions = {(await first).settlement, (await second).settlement}
    finally:
        await store.close()
    assert decisions == {Settlement.ACK, Settlement.DUPLICATE}
    assert len(calls) == 1


async def test_a_reader_before_any_consumer_finds_nothing_and_creates_nothing(
    location: SecretStr,
) -> None:
    reader = open_run_reader(location)
    await reader.start()
    try:
        assert await reader.get(str(sync_event().id)) is None
        if location.get_secret_value().startswith("postgresql://"):
            assert await reader.recent(limit=5) == []
            tables = await fetch(
                location.get_secret_value(),
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            )
            assert tables == [], "the reader never creates the store"
        else:
            assert not await asyncio.to_thread(os.path.exists, location.get_secret_value())
    finally:
        await reader.close()


# --- PostgreSQL: claims across consumers -----------------------------------------------


@pytest.fixture
async def two_consumers(postgres_url: str) -> AsyncIterator[tuple[PostgresRunStore, ...]]:
    """Two stores on one database: two consumers' connections."""
    stores = tuple(
        PostgresRunStore(postgres_url, described="test", commit_delay=0.005, full_at=64)
        for _ in range(2)
    )
    for store in stores:
        await store.start()
        await store.probe()
    yield stores
    for store in stores:
        await store.close()


async def test_a_claim_held_by_one_consumer_makes_the_other_wait_then_find_it_processed(
    two_consumers: tuple[PostgresRunStore, PostgresRunStore],
) -> None:
    a, b = two_consumers
    event = sync_event()
    held = await a.claim(str(event.id))
    assert held is not None
    at_b = asyncio.create_task(b.claim(str(event.id)))
    await asyncio.sleep(0.3)
    assert not at_b.done(), "B must wait while A holds the claim"
    held.record_sync(event, received_at=1)
    held.mark_processed(str(event.id))
    await held.commit()
    await held.release()
    assert await asyncio.wait_for(at_b, 5) is None, "processed: B does not run it"


async def test_a_claim_released_by_a_failed_handler_goes_to_the_other_consumer(
    two_consumers: tuple[PostgresRunStore, PostgresRunStore],
) -> None:
    a, b = two_consumers
    event = sync_event()
    held = await a.claim(str(event.id))
    assert held is not None
    at_b = asyncio.create_task(b.claim(str(event.id)))
    await asyncio.sleep(0.1)
    await held.release()
    taken = await asyncio.wait_for(at_b, 5)
    assert taken is not None
    await taken.release()


async def test_the_claims_of_a_consumer_that_dies_go_to_the_other_and_its_batch_is_gone(
    postgres_url: str, two_consumers: tuple[PostgresRunStore, PostgresRunStore]
) -> None:
    a, b = two_consumers
    events = [sync_event(i) for i in range(20)]
    claims = [await a.claim(str(e.id)) for e in events]
    waiting = [asyncio.create_task(b.claim(str(e.id))) for e in events]
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in waiting)
    # What kill -9 does to A's session: PostgreSQL ends it, and every claim with it.
    admin = await asyncpg.connect(postgres_url)
    try:
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name LIKE 'syncgate-consumer@%' AND pid IN "
            "(SELECT pid FROM pg_locks WHERE locktype = 'advisory')"
        )
    finally:
        await admin.close()
    assert ended == 1
    taken = await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert all(t is not None for t in taken), "B claims every event A held"
    for claim, event in zip(claims, events, strict=True):
        assert claim is not None
        claim.mark_processed(str(event.id))
        with pytest.raises(RunStoreUnavailable):
            await claim.commit()  # A's claims went with its session: nothing commits
        await claim.release()
    for t in taken:
        assert t is not None
        await t.release()
    await a.probe()  # A comes back on a new connection
    assert await handled(a, events[0])


async def test_a_batch_releases_its_claims_only_at_its_commit(
    two_consumers: tuple[PostgresRunStore, PostgresRunStore],
) -> None:
    a, b = two_consumers
    events = [sync_event(i) for i in range(50)]
    claims = [await a.claim(str(e.id)) for e in events]
    for claim, event in zip(claims, events, strict=True):
        assert claim is not None
        claim.record_sync(event, received_at=1)
        claim.mark_processed(str(event.id))
    at_b = [asyncio.create_task(b.claim(str(e.id))) for e in events]
    commits_before = a.commits
    await asyncio.gather(*(claim.commit() for claim in claims if claim is not None))
    assert a.commits - commits_before == 1, "one transaction for the batch"
    for claim in claims:
        assert claim is not None
        await claim.release()
    assert await asyncio.wait_for(asyncio.gather(*at_b), 10) == [None] * len(events)


async def test_racing_claims_on_many_ids_run_each_once(
    two_consumers: tuple[PostgresRunStore, PostgresRunStore],
) -> None:
    """Both consumers get every id at once, many times over: each is handled exactly once."""
    events = [sync_event(i) for i in range(200)]
    ran: dict[str, int] = {}

    async def deliver(store: PostgresRunStore, event: ConfluenceAppSync) -> None:
        writes = await store.claim(str(event.id))
        if writes is None:
            return
        try:
            ran[str(event.id)] = ran.get(str(event.id), 0) + 1
            await asyncio.sleep(0.001)
            writes.record_sync(event, received_at=1)
            writes.mark_processed(str(event.id))
            await writes.commit()
        finally:
            await writes.release()

    deliveries = [deliver(store, e) for e in events for store in two_consumers for _ in range(2)]
    await asyncio.wait_for(asyncio.gather(*deliveries), 60)
    assert ran == {str(e.id): 1 for e in events}
