"""The stores' semantics, the same against both backends: in memory, and on the machine's Redis
(under a prefix of the test's own, deleted afterwards). Then what only a store shared between
gateways has to get right: leases, takeover, fencing, and counts from several at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from common.stores.idempotency import (
    Busy,
    Claim,
    Confirmed,
    Failed,
    FingerprintMismatch,
    IdempotencyStore,
)
from common.stores.idempotency_memory import MemoryIdempotencyStore
from common.stores.idempotency_redis import RedisIdempotencyStore
from common.stores.login_failures import LockoutPolicy, LoginFailureStore
from common.stores.login_failures_memory import MemoryLoginFailures
from tests.support.redis import REDIS_URL, keys_under, redis_idempotency, redis_login_failures

MiB = 1024 * 1024
FP = b"f" * 16
OTHER_FP = b"o" * 16


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class MakeIdempotency(Protocol):
    def __call__(self, *, max_attempt_bytes: int = MiB, lease: float = 5) -> IdempotencyStore: ...


class MakeLoginFailures(Protocol):
    def __call__(self, accounts: LockoutPolicy, addresses: LockoutPolicy) -> LoginFailureStore: ...


BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=[pytest.mark.integration, pytest.mark.redis]),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def prefix(request: pytest.FixtureRequest, backend: str) -> str:
    return str(request.getfixturevalue("redis_prefix")) if backend == "redis" else ""


@pytest.fixture
async def closing() -> AsyncIterator[list[IdempotencyStore | LoginFailureStore]]:
    stores: list[IdempotencyStore | LoginFailureStore] = []
    yield stores
    for store in stores:
        await store.close()


@pytest.fixture
def make_idempotency(
    backend: str,
    prefix: str,
    clock: FakeClock,
    closing: list[IdempotencyStore | LoginFailureStore],
) -> MakeIdempotency:
    """A store with a 60 s window on the fake clock; on Redis, each one is a gateway."""

    def make(*, max_attempt_bytes: int = MiB, lease: float = 5) -> IdempotencyStore:
        store: IdempotencyStore
        if backend == "memory":
            store = MemoryIdempotencyStore(
                window=60, max_keys=100, max_attempt_bytes=max_attempt_bytes, clock=clock
            )
        else:
            store = redis_idempotency(
                REDIS_URL,
                prefix,
                window=60,
                lease=lease,
                max_attempt_bytes=max_attempt_bytes,
                clock=clock,
            )
        closing.append(store)
        return store

    return make


@pytest.fixture
def make_login_failures(
    backend: str,
    prefix: str,
    clock: FakeClock,
    closing: list[IdempotencyStore | LoginFailureStore],
) -> MakeLoginFailures:
    def make(accounts: LockoutPolicy, addresses: LockoutPolicy) -> LoginFailureStore:
        store: LoginFailureStore
        if backend == "memory":
            store = MemoryLoginFailures(accounts=accounts, addresses=addresses, clock=clock)
        else:
            store = redis_login_failures(
                REDIS_URL, prefix, accounts=accounts, addresses=addresses, clock=clock
            )
        closing.append(store)
        return store

    return make


async def held(store: IdempotencyStore, key: str, fingerprint: bytes = FP) -> Claim:
    claim = await store.claim(("u", key), fingerprint)
    assert isinstance(claim, Claim), claim
    return claim


# -- Idempotency: both backends -------------------------------------------------------------


async def test_a_new_scope_is_claimed_and_its_confirm_answers_from_then_on(
    make_idempotency: MakeIdempotency,
) -> None:
    store = make_idempotency()
    assert await store.peek(("u", "k"), FP) is None
    claim = await held(store, "k")
    assert claim.attempt is None
    assert await store.confirm(claim, "event-1")
    assert await store.claim(("u", "k"), FP) == Confirmed("event-1")
    assert await store.peek(("u", "k"), FP) == Confirmed("event-1")
    # Another owner's key of the same name is its own scope.
    other = await store.claim(("someone-else", "k"), OTHER_FP)
    assert isinstance(other, Claim)
    assert other.attempt is None


@pytest.mark.parametrize("first_fails", [False, True], ids=["confirmed", "attempted"])
async def test_another_fingerprint_is_a_mismatch_and_changes_nothing(
    make_idempotency: MakeIdempotency, first_fails: bool
) -> None:
    store = make_idempotency()
    claim = await held(store, "k")
    if first_fails:
        await store.fail(claim, b"the event")
    else:
        await store.confirm(claim, "event-1")
    for _ in range(2):
        with pytest.raises(FingerprintMismatch):
            await store.claim(("u", "k"), OTHER_FP)
        with pytest.raises(FingerprintMismatch):
            await store.peek(("u", "k"), OTHER_FP)
    again = await store.claim(("u", "k"), FP)
    if first_fails:
        assert isinstance(again, Claim)
        assert again.attempt == b"the event"
    else:
        assert again == Confirmed("event-1")


async def test_a_failed_attempt_comes_back_with_the_next_claim_until_confirmed(
    make_idempotency: MakeIdempotency,
) -> None:
    store = make_idempotency()
    first = await held(store, "k")
    assert await store.fail(first, b'{"id": "the event"}')
    assert await store.peek(("u", "k"), FP) == Failed()
    second = await held(store, "k")
    assert second.attempt == b'{"id": "the event"}'
    assert await store.fail(second, b'{"id": "the event"}')
    third = await held(store, "k")
    assert third.attempt == b'{"id": "the event"}'
    assert await store.confirm(third, "the event")
    assert await store.claim(("u", "k"), FP) == Confirmed("the event")


async def test_the_window_runs_from_the_latest_outcome(
    make_idempotency: MakeIdempotency, clock: FakeClock
) -> None:
    store = make_idempotency()
    await store.fail(await held(store, "k"), b"attempt")
    clock.now += 50
    await store.fail(await held(store, "k"), b"attempt")  # failed again: 60 s from now
    clock.now += 59.9
    retry = await held(store, "k")
    assert retry.attempt == b"attempt"
    await store.confirm(retry, "event-1")  # confirmed: 60 s from now
    clock.now += 59.9
    assert await store.claim(("u", "k"), FP) == Confirmed("event-1")
    clock.now += 0.1
    # Expired: the key is free, for another body too.
    assert await store.peek(("u", "k"), OTHER_FP) is None
    fresh = await held(store, "k", OTHER_FP)
    assert fresh.attempt is None


async def test_failed_attempts_have_a_byte_budget_and_the_oldest_goes_first(
    make_idempotency: MakeIdempotency, clock: FakeClock
) -> None:
    attempt = b"x" * 100
    # Room for two attempts, not three; confirmed keys do not count against it.
    store = make_idempotency(max_attempt_bytes=250)
    await store.confirm(await held(store, "confirmed"), "event-0")
    for key in ("a", "b", "c"):
        clock.now += 1
        await store.fail(await held(store, key), attempt + key.encode())
    # "a" was the oldest attempt: forgotten, so its retry gets no attempt (a new event).
    assert (await held(store, "a")).attempt is None
    assert (await held(store, "b")).attempt == attempt + b"b"
    assert (await held(store, "c")).attempt == attempt + b"c"
    assert await store.claim(("u", "confirmed"), FP) == Confirmed("event-0")


async def test_expired_attempts_leave_the_budget(
    make_idempotency: MakeIdempotency, clock: FakeClock
) -> None:
    store = make_idempotency(max_attempt_bytes=250)
    await store.fail(await held(store, "old"), b"x" * 200)
    clock.now += 61
    # The old attempt expired: it no longer counts, so this one fits beside another.
    await store.fail(await held(store, "new"), b"y" * 100)
    clock.now += 1
    await store.fail(await held(store, "newer"), b"z" * 100)
    assert (await held(store, "new")).attempt == b"y" * 100
    assert (await held(store, "newer")).attempt == b"z" * 100


# -- Idempotency: what only a shared store has to get right ---------------------------------


# Claims are contested only between processes: the shared store's case alone.
redis_only = pytest.mark.parametrize("backend", [BACKENDS[1]], indirect=True)


@redis_only
async def test_a_held_scope_is_busy_for_other_gateways_until_its_lease_runs_out(
    make_idempotency: MakeIdempotency, clock: FakeClock
) -> None:
    gateway_a, gateway_b = make_idempotency(lease=5), make_idempotency(lease=5)
    a = await held(gateway_a, "k")
    assert a.token is not None
    assert await gateway_a.record(a, b"A's event")
    assert await gateway_b.claim(("u", "k"), FP) == Busy()
    assert await gateway_b.peek(("u", "k"), FP) == Busy()
    with pytest.raises(FingerprintMismatch):
        await gateway_b.claim(("u", "k"), OTHER_FP)  # no waiting for another body
    clock.now += 4.9
    assert await gateway_b.claim(("u", "k"), FP) == Busy()
    clock.now += 0.1
    # A died mid-publish: its lease ran out. B takes over with A's event, never a new one.
    assert await gateway_b.peek(("u", "k"), FP) is None
    b = await held(gateway_b, "k")
    assert b.attempt == b"A's event"
    assert b.token != a.token
    # A, alive after all, is fenced off: it can neither record nor settle B's claim.
    assert not await gateway_a.record(a, b"another event")
    assert not await gateway_a.confirm(a, "A's id")
    assert not await gateway_a.fail(a, b"A's event")
    assert await gateway_b.confirm(b, "the id")
    assert await gateway_a.claim(("u", "k"), FP) == Confirmed("the id")


@redis_only
async def test_a_holder_taken_over_before_it_recorded_may_not_publish(
    make_idempotency: MakeIdempotency, clock: FakeClock
) -> None:
    gateway_a, gateway_b = make_idempotency(lease=5), make_idempotency(lease=5)
    a = await held(gateway_a, "k")
    clock.now += 5  # A stalled before recording anything
    b = await held(gateway_b, "k")
    assert b.attempt is None  # nothing was recorded, so nothing was published: B builds one
    assert await gateway_b.record(b, b"B's event")
    assert not await gateway_a.record(a, b"A's event"), "A would publish a second id"


@redis_only
async def test_one_of_many_concurrent_claims_wins(make_idempotency: MakeIdempotency) -> None:
    gateways = [make_idempotency() for _ in range(8)]
    answers = await asyncio.gather(
        *(gateway.claim(("u", "k"), FP) for gateway in gateways for _ in range(5))
    )
    assert sum(isinstance(answer, Claim) for answer in answers) == 1
    assert sum(answer == Busy() for answer in answers) == len(answers) - 1


@redis_only
async def test_redis_keys_name_no_user_or_key_and_the_budget_is_given_back(
    make_idempotency: MakeIdempotency, prefix: str
) -> None:
    store = make_idempotency()
    claim = await store.claim(("ada@example.com", "order-42"), FP)
    assert isinstance(claim, Claim)
    await store.fail(claim, b"x" * 100)
    retry = await store.claim(("ada@example.com", "order-42"), FP)
    assert isinstance(retry, Claim)
    await store.confirm(retry, "event-1")
    names = b" ".join(await keys_under(REDIS_URL, prefix))
    assert b"ada" not in names
    assert b"order-42" not in names
    assert isinstance(store, RedisIdempotencyStore)
    assert await store._link.client.get(f"{prefix}idem-attempt-bytes") == b"0"
    assert await store._link.client.zcard(f"{prefix}idem-attempts") == 0


# -- Login failures: both backends ----------------------------------------------------------

ACCOUNTS = LockoutPolicy(max_failures=3, base=30, cap=120, quiet=3600)
ADDRESSES = LockoutPolicy(max_failures=5, base=30, cap=120, quiet=3600)


async def fail_times(store: LoginFailureStore, n: int, account: str = "ada", at: str = "1") -> None:
    for _ in range(n):
        await store.failed(account, at)


async def test_the_lockout_starts_at_the_limit_and_doubles_up_to_the_cap(
    make_login_failures: MakeLoginFailures, clock: FakeClock
) -> None:
    store = make_login_failures(ACCOUNTS, ADDRESSES)
    await fail_times(store, 2)
    assert await store.retry_after("ada", "2") == 0
    waits = []
    for _ in range(4):
        await store.failed("ada", "2")
        waits.append(await store.retry_after("ada", "2"))
        clock.now += waits[-1]
    assert waits == [30, 60, 120, 120]
    clock.now -= 10
    assert await store.retry_after("ada", "2") == 10


async def test_the_lockout_keeps_escalating_after_the_longest_one(
    make_login_failures: MakeLoginFailures, clock: FakeClock
) -> None:
    """Issue 20, section 6: after the longest lockout, the count used to start over."""
    store = make_login_failures(ACCOUNTS, ADDRESSES)
    await fail_times(store, 3)
    for _ in range(3):  # up to the cap: 30, 60, 120
        clock.now += await store.retry_after("ada", "a")
        await store.failed("ada", "a")
    for cycle in range(5):
        # Past a full cap of quiet, yet well within the quiet period: still escalated.
        clock.now += await store.retry_after("ada", "a") + 121
        assert await store.retry_after("ada", "a") == 0
        await store.failed("ada", "a")
        assert await store.retry_after("ada", "a") == 120, f"cycle {cycle}"


async def test_the_count_starts_over_after_the_quiet_period_or_a_success(
    make_login_failures: MakeLoginFailures, clock: FakeClock
) -> None:
    store = make_login_failures(ACCOUNTS, ADDRESSES)
    await fail_times(store, 6, at="a")
    clock.now += 3600 + 1  # quiet for longer than the quiet period
    await fail_times(store, 2, at="b")
    assert await store.retry_after("ada", "b") == 0
    await store.failed("ada", "b")
    assert await store.retry_after("ada", "b") == 30  # the third failure since: from the base
    clock.now += 30
    await fail_times(store, 2, at="c")
    await store.succeeded("ada")
    await fail_times(store, 2, at="d")
    assert await store.retry_after("ada", "d") == 0  # cleared by the success


async def test_a_success_clears_the_account_and_not_the_address(
    make_login_failures: MakeLoginFailures,
) -> None:
    store = make_login_failures(ACCOUNTS, ADDRESSES)
    for i in range(5):
        await store.failed(f"user{i}", "10.0.0.1")
    await store.succeeded("user0")
    assert await store.retry_after("user9", "10.0.0.1") == 30  # the address is locked
    assert await store.retry_after("user0", "10.0.0.2") == 0


@redis_only
async def test_failures_from_many_gateways_at_once_are_all_counted(
    make_login_failures: MakeLoginFailures,
) -> None:
    gateways = [make_login_failures(ACCOUNTS, ADDRESSES) for _ in range(4)]
    await asyncio.gather(*(g.failed("ada", f"10.0.0.{i}") for i, g in enumerate(gateways)))
    # Four failures, counted once each though they raced: past the limit of three by one.
    assert await gateways[0].retry_after("ada", "10.0.0.9") == 60
