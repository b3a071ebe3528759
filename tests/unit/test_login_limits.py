"""Password guessing: lockouts per account and per address, and no user enumeration by time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import ValidationError

from common.stores.login_failures import LockoutPolicy
from common.stores.login_failures_memory import FailureCounter, MemoryLoginFailures
from gateway import users
from gateway.errors import TooManyAttempts
from gateway.login_limits import LoginLimits
from gateway.settings import GatewaySettings
from gateway.users import UserStore
from tests.conftest import EMAIL, PASSWORD, AiohttpClient
from tests.support.app import gateway_app
from tests.support.fakes import FakePublisher

Client = TestClient[web.Request, web.Application]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def attempt(client: Client, password: str, email: str = EMAIL) -> tuple[int, str | None]:
    response = await client.post("/api/auth/login", json={"email": email, "password": password})
    return response.status, response.headers.get("Retry-After")


async def test_the_sixth_bad_password_is_429_until_the_lockout_ends(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    clock = FakeClock()
    settings = make_settings(login_max_failures=5, login_lockout_base=30)
    client: Client = await aiohttp_client(
        gateway_app(settings, publisher=fake_publisher, clock=clock)
    )
    assert [await attempt(client, "wrong") for _ in range(5)] == [(401, None)] * 5
    response = await client.post("/api/auth/login", json={"email": EMAIL, "password": "wrong"})
    assert response.status == 429
    assert response.headers["Retry-After"] == "30"
    assert (await response.json())["error"]["code"] == "too_many_attempts"
    # Locked means locked: the right password does not get through either.
    assert await attempt(client, PASSWORD) == (429, "30")
    clock.now += 10
    assert await attempt(client, PASSWORD) == (429, "20")

    clock.now += 20
    assert (await attempt(client, PASSWORD))[0] == 200
    # The success cleared the account's count: five more tries before the next lockout.
    assert [(await attempt(client, "wrong"))[0] for _ in range(6)] == [401] * 5 + [429]


async def test_the_lockout_doubles_with_each_further_failure(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    clock = FakeClock()
    settings = make_settings(login_max_failures=2, login_lockout_base=30, login_lockout_max=100)
    client: Client = await aiohttp_client(
        gateway_app(settings, publisher=fake_publisher, clock=clock)
    )
    retry_afters = []
    for _ in range(4):
        while (outcome := await attempt(client, "wrong"))[0] == 401:
            pass
        retry_afters.append(outcome[1])
        clock.now += int(outcome[1] or 0)
    assert retry_afters == ["30", "60", "100", "100"]


async def test_the_lockout_keeps_escalating_after_the_longest_one_until_the_quiet_period(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    """Issue 20, section 6: after the longest lockout the count started over, so a patient
    guesser got a fresh budget every cycle."""
    clock = FakeClock()
    settings = make_settings(
        login_max_failures=2,
        login_lockout_base=30,
        login_lockout_max=100,
        login_quiet_period=3600,
    )
    client: Client = await aiohttp_client(
        gateway_app(settings, publisher=fake_publisher, clock=clock)
    )
    retry_afters = []
    for _ in range(6):
        while (outcome := await attempt(client, "wrong"))[0] == 401:
            pass
        retry_afters.append(outcome[1])
        clock.now += int(outcome[1] or 0) + 200  # quiet for twice the cap each time
    assert retry_afters == ["30", "60", "100", "100", "100", "100"]
    # Quiet for the whole quiet period: the count starts over.
    clock.now += 3600 + 1
    assert [(await attempt(client, "wrong"))[0] for _ in range(3)] == [401, 401, 429]


def test_a_quiet_period_shorter_than_the_longest_lockout_is_refused(
    make_settings: Callable[..., GatewaySettings],
) -> None:
    with pytest.raises(ValidationError, match="SYNCGATE_LOGIN_LOCKOUT_MAX"):
        make_settings(login_lockout_max=900, login_quiet_period=600)


async def test_an_address_guessing_across_accounts_is_locked_out(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    settings = make_settings(login_max_failures=5, login_max_failures_per_address=8)
    client: Client = await aiohttp_client(gateway_app(settings, publisher=fake_publisher))
    statuses = [(await attempt(client, "wrong", email=f"user{i}@example.com"))[0] for i in range(9)]
    assert statuses == [401] * 8 + [429]


def test_failure_tables_are_bounded_and_quiet_keys_are_forgotten() -> None:
    clock = FakeClock()
    counter = FailureCounter(max_failures=1, base=30, cap=60, quiet=60, clock=clock, max_keys=3)
    for i in range(10):
        counter.failed(f"key{i}")
    assert len(counter) == 3
    assert counter.retry_after("key0") == 0  # evicted, the oldest first
    assert counter.retry_after("key9") == 30
    clock.now += 61  # quiet for longer than the quiet period: the next failure starts from one
    counter.failed("key9")
    assert counter.retry_after("key9") == 30


async def test_a_success_does_not_clear_the_address() -> None:
    policy = LockoutPolicy(max_failures=3, base=30, cap=60, quiet=60)
    store = MemoryLoginFailures(accounts=policy, addresses=policy, clock=FakeClock())
    limits = LoginLimits(store, retry_after=5)
    for _ in range(3):
        await limits.failed("victim@example.com", "10.0.0.1")
    await limits.succeeded("Victim@Example.com ")
    await limits.check("victim@example.com", "10.0.0.2")  # the account is clear again
    with pytest.raises(TooManyAttempts):
        await limits.check("someone@example.com", "10.0.0.1")


async def test_an_unknown_email_costs_a_scrypt_check_like_a_known_one(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    users_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []
    real_verify = users.verify_password

    def counting_verify(password: str, encoded: str) -> bool:
        checked.append(encoded)
        return real_verify(password, encoded)

    monkeypatch.setattr(users, "verify_password", counting_verify)
    store = UserStore(users_file)
    assert store.authenticate("nobody@example.com", PASSWORD) is None
    assert checked == [users._DUMMY_HASH]
    assert checked[0].startswith(f"scrypt${users.LOG2_N}$")  # the same cost as a real hash

    client: Client = await aiohttp_client(gateway_app(make_settings(), publisher=fake_publisher))
    assert (await attempt(client, PASSWORD, email="nobody@example.com"))[0] == 401
    assert (await attempt(client, "wrong"))[0] == 401
    assert len(checked) == 3
    assert checked[1] == users._DUMMY_HASH
    assert checked[2] != users._DUMMY_HASH
