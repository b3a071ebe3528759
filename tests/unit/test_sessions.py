"""Session cookies against an attacker: rotation, timeouts, fixation, forgery, logout.

Time is the app's injectable clock, so timeouts are tested without sleeping.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from gateway.csrf import csrf_token
from gateway.errors import BrokerUnavailable
from gateway.sessions import RotatingCookieStorage
from gateway.settings import GatewaySettings
from gateway.users import UserRecord, UsersFile
from tests.conftest import EMAIL, PASSWORD, AiohttpClient, login
from tests.support.app import gateway_client
from tests.support.fakes import FakePublisher, LocalRevocations

Client = TestClient[web.Request, web.Application]
COOKIE = "syncgate"
IDLE, ABSOLUTE = 600, 3600


class FakeClock:
    def __init__(self, now: float = 1_700_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def login_cookie(client: Client, email: str = EMAIL) -> str:
    """Sign in and return the cookie's value, leaving the client's jar empty."""
    response = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status == 200
    client.session.cookie_jar.clear()
    return response.cookies[COOKIE].value


async def session_user(client: Client, cookie: str | None = None) -> str | None:
    """The signed-in user's id for this cookie (or the jar's), None when signed out."""
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie is not None else None
    response = await client.get("/api/auth/session", headers=headers)
    assert response.status == 200
    user: dict[str, str] | None = (await response.json()).get("user")
    return None if user is None else user["id"]


def session_id(cookie: str, key: str) -> str:
    data = orjson.loads(MultiFernet([Fernet(key)]).decrypt(cookie.encode()))
    sid: str = data["session"]["sid"]
    return sid


# Key rotation


async def test_a_cookie_made_with_the_old_key_works_while_listed_second_then_fails(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    session_key: str,
) -> None:
    old_gateway = await gateway_client(
        aiohttp_client, make_settings(), publisher=fake_publisher, clock=FakeClock()
    )
    cookie = await login_cookie(old_gateway)

    new_key = Fernet.generate_key().decode()
    rotating = await gateway_client(
        aiohttp_client,
        make_settings(session_keys=f"{new_key},{session_key}"),
        publisher=fake_publisher,
        clock=FakeClock(),
    )
    assert await session_user(rotating, cookie) == "u-ada"
    # New cookies are encrypted with the new (first) key only.
    fresh = await login_cookie(rotating)
    with pytest.raises(InvalidToken):
        Fernet(session_key).decrypt(fresh.encode())
    assert session_id(fresh, new_key)

    rotated = await gateway_client(
        aiohttp_client,
        make_settings(session_keys=new_key),
        publisher=fake_publisher,
        clock=FakeClock(),
    )
    assert await session_user(rotated, cookie) is None
    assert await session_user(rotated, fresh) == "u-ada"


# Timeouts


async def test_an_idle_session_expires_and_use_renews_it(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    clock: FakeClock,
) -> None:
    settings = make_settings(session_idle_timeout=IDLE, session_absolute_timeout=ABSOLUTE)
    client = await gateway_client(aiohttp_client, settings, publisher=fake_publisher, clock=clock)
    await login(client)
    for _ in range(3):  # each use inside the idle timeout renews it
        clock.advance(IDLE - 1)
        assert await session_user(client) == "u-ada"
    clock.advance(IDLE + 1)
    response = await client.post("/api/sync", json={})
    assert response.status == 401
    assert "expired" in (await response.json())["error"]["message"]
    assert fake_publisher.published == []


async def test_the_absolute_timeout_ends_even_a_busy_session(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    clock: FakeClock,
) -> None:
    settings = make_settings(session_idle_timeout=IDLE, session_absolute_timeout=ABSOLUTE)
    client = await gateway_client(aiohttp_client, settings, publisher=fake_publisher, clock=clock)
    await login(client)
    used_for = 0
    while used_for + IDLE // 2 <= ABSOLUTE:
        clock.advance(IDLE // 2)
        used_for += IDLE // 2
        assert (await client.post("/api/sync", json={})).status == 202
    clock.advance(IDLE // 2)
    assert (await client.post("/api/sync", json={})).status == 401
    assert len(fake_publisher.published) == ABSOLUTE // (IDLE // 2)


# Remembered decryptions


def storage_and_cookie(clock: FakeClock) -> tuple[RotatingCookieStorage, str]:
    key = Fernet.generate_key().decode()
    storage = RotatingCookieStorage(
        [key], clock=clock, max_age=ABSOLUTE, secure=False, samesite="Lax"
    )
    payload = {"created": int(clock.now), "session": {"uid": "u", "sid": "s"}}
    cookie = Fernet(key).encrypt_at_time(orjson.dumps(payload), int(clock.now)).decode()
    return storage, cookie


async def load(storage: RotatingCookieStorage, cookie: str) -> bool:
    """Whether the cookie opens a session."""
    request = make_mocked_request("GET", "/", headers={"Cookie": f"{COOKIE}={cookie}"})
    return not (await storage.load_session(request)).new


class CountedDecrypts:
    """Counts MultiFernet decryptions."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        decrypt = MultiFernet.decrypt_at_time

        def counted(fernet: MultiFernet, token: bytes | str, ttl: int, current_time: int) -> bytes:
            self.calls += 1
            return decrypt(fernet, token, ttl, current_time)

        monkeypatch.setattr(MultiFernet, "decrypt_at_time", counted)


async def test_a_cookie_used_again_still_expires_with_its_token(clock: FakeClock) -> None:
    storage, cookie = storage_and_cookie(clock)
    assert await load(storage, cookie)
    clock.advance(ABSOLUTE)
    assert await load(storage, cookie), "the last second of its lifetime"
    clock.advance(1)
    assert not await load(storage, cookie)


async def test_a_cookie_used_again_is_refused_if_the_clock_goes_back_before_it(
    clock: FakeClock,
) -> None:
    storage, cookie = storage_and_cookie(clock)
    assert await load(storage, cookie)
    clock.advance(-61)  # Fernet's allowance for clock skew is 60 s
    assert not await load(storage, cookie)


async def test_a_cookie_that_does_not_decrypt_is_tried_every_time(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    decrypts = CountedDecrypts(monkeypatch)
    storage, cookie = storage_and_cookie(clock)
    forged = damaged_cookies(cookie, 1)[0]
    for _ in range(3):
        assert not await load(storage, forged)
    assert decrypts.calls == 3


# Fixation


async def test_a_planted_cookie_never_becomes_the_victims_session(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    session_key: str,
) -> None:
    client = await gateway_client(
        aiohttp_client, make_settings(), publisher=fake_publisher, clock=FakeClock()
    )
    # A value the attacker made up, and the attacker's own valid session (bob's).
    attackers = await login_cookie(client, "bob@example.com")
    for planted in ("attacker-chosen-value", attackers):
        client.session.cookie_jar.update_cookies({COOKIE: planted})
        response = await client.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
        assert response.status == 200
        victims = response.cookies[COOKIE].value
        assert victims != planted
        if planted == attackers:
            assert session_id(victims, session_key) != session_id(attackers, session_key)
        client.session.cookie_jar.clear()
        assert await session_user(client, victims) == "u-ada"
        # The planted cookie is still only what it was: nothing, or bob.
        assert await session_user(client, planted) == ("u-bob" if planted == attackers else None)
        response = await client.post("/api/sync", headers={"Cookie": f"{COOKIE}={planted}"})
        assert response.status in (401, 403)
    assert [event.user.id for event, _ in fake_publisher.published] == []


async def test_a_pre_login_expired_cookie_stays_dead_after_login(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    clock: FakeClock,
) -> None:
    settings = make_settings(session_idle_timeout=IDLE, session_absolute_timeout=ABSOLUTE)
    client = await gateway_client(aiohttp_client, settings, publisher=fake_publisher, clock=clock)
    before = await login_cookie(client)
    clock.advance(IDLE + 1)
    client.session.cookie_jar.update_cookies({COOKIE: before})
    after = await login_cookie(client)
    assert after != before
    assert await session_user(client, before) is None
    assert await session_user(client, after) == "u-ada"


# Cookie attributes and size


@pytest.mark.parametrize("samesite", ["Lax", "Strict"])
async def test_secure_cookie_attributes(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    samesite: str,
) -> None:
    settings = make_settings(cookie_secure=True, cookie_samesite=samesite)
    client = await gateway_client(
        aiohttp_client, settings, publisher=fake_publisher, clock=FakeClock()
    )
    response = await client.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    [header] = response.headers.getall("Set-Cookie")
    morsel = SimpleCookie(header)["__Host-syncgate"]
    assert morsel["secure"] is True
    assert morsel["httponly"] is True
    assert morsel["path"] == "/"
    assert morsel["samesite"] == samesite
    assert morsel["max-age"] == "28800"
    assert morsel["domain"] == ""  # __Host- cookies must not name a domain


async def test_the_largest_possible_session_cookie_fits_in_4096_bytes(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    tmp_path: Path,
    password_hash: str,
) -> None:
    longest_id = "i" * 64  # UserId's max_length
    users_file = tmp_path / "long-users.json"
    long_user = UserRecord(id=longest_id, email=EMAIL, name="n" * 100, password_hash=password_hash)
    users_file.write_text(UsersFile(users=(long_user,)).model_dump_json())
    settings = make_settings(users_file=users_file, cookie_secure=True, cookie_samesite="Strict")
    # Timestamps with the most digits an int64 clock can give.
    client = await gateway_client(
        aiohttp_client, settings, publisher=fake_publisher, clock=FakeClock(now=9_999_999_999)
    )
    response = await client.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert response.status == 200
    [header] = response.headers.getall("Set-Cookie")
    assert longest_id not in header  # encrypted, not merely signed
    assert len(f"Set-Cookie: {header}".encode()) < 4096


# Forged and damaged cookies


def damaged_cookies(valid: str, count: int, seed: int = 4) -> list[str]:
    """Random strings, and the valid cookie with one bit flipped or cut short."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not a secret
    raw = base64.urlsafe_b64decode(valid)
    alphabet = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ';,"\\')
    cookies = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            cookies.append("".join(rng.choices(alphabet, k=rng.randint(1, 400))))
        elif kind == 1:
            cookies.append(base64.urlsafe_b64encode(rng.randbytes(len(raw))).decode())
        elif kind == 2:
            flipped = bytearray(raw)
            flipped[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            cookies.append(base64.urlsafe_b64encode(bytes(flipped)).decode())
        else:
            cookies.append(valid[: rng.randrange(len(valid))] or "x")
    return cookies


async def test_ten_thousand_forged_cookies_are_all_401_and_publish_nothing(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(
        aiohttp_client, make_settings(), publisher=fake_publisher, clock=FakeClock()
    )
    token = await login(client)
    valid = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
    client.session.cookie_jar.clear()
    statuses: dict[int, int] = {}
    for cookie in damaged_cookies(valid, 10_000):
        assert cookie != valid
        response = await client.post(
            "/api/sync",
            json={"data": 1},
            headers={"Cookie": f"{COOKIE}={cookie}", "X-CSRF-Token": token},
        )
        statuses[response.status] = statuses.get(response.status, 0) + 1
        response.release()
    assert statuses == {401: 10_000}
    assert fake_publisher.published == []
    # The real cookie still works, so the 401s came from the damage, not a broken client.
    response = await client.post(
        "/api/sync", headers={"Cookie": f"{COOKIE}={valid}", "X-CSRF-Token": token}
    )
    assert response.status == 202


async def test_bad_and_expired_cookies_are_logged_at_info_without_the_value(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(session_idle_timeout=IDLE, session_absolute_timeout=ABSOLUTE)
    client = await gateway_client(aiohttp_client, settings, publisher=fake_publisher, clock=clock)
    valid = await login_cookie(client)
    forged = valid[:-8] + "AAAAAAAA"
    caplog.set_level(logging.INFO)
    for cookie in (forged, "garbage"):
        response = await client.post("/api/sync", headers={"Cookie": f"{COOKIE}={cookie}"})
        assert response.status == 401
    clock.advance(IDLE + 1)
    response = await client.post("/api/sync", headers={"Cookie": f"{COOKIE}={valid}"})
    assert response.status == 401
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.sessions"]
    assert any("invalid, forged or expired" in m for m in messages)
    assert any("idle timeout" in m for m in messages)
    assert {r.levelno for r in caplog.records if r.name == "gateway.sessions"} == {logging.INFO}
    for secret in (valid, forged, "garbage"):
        assert secret not in caplog.text


# Logout


async def test_a_logged_out_cookie_is_refused_even_if_the_client_kept_a_copy(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(
        aiohttp_client, make_settings(), publisher=fake_publisher, clock=FakeClock()
    )
    token = await login(client)
    copy = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
    assert (await client.post("/api/auth/logout")).status == 200
    response = await client.post(
        "/api/sync", headers={"Cookie": f"{COOKIE}={copy}", "X-CSRF-Token": token}
    )
    assert response.status == 401
    assert fake_publisher.published == []


class UnreachableRevocations(LocalRevocations):
    """Known revocations hold, but new ones cannot be recorded: the broker is gone."""

    async def revoke(self, session_id: str, *, until: float) -> None:
        raise BrokerUnavailable("the logout could not be recorded", retry_after=4)


class LoadingRevocations(LocalRevocations):
    @property
    def ready(self) -> bool:
        return False


async def test_a_logout_that_cannot_be_recorded_is_503_and_keeps_the_cookie(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    clock: FakeClock,
) -> None:
    revocations = UnreachableRevocations(clock)
    client = await gateway_client(
        aiohttp_client,
        make_settings(),
        publisher=fake_publisher,
        clock=clock,
        revocations=revocations,
    )
    await login(client)
    response = await client.post("/api/auth/logout")
    assert response.status == 503
    assert response.headers["Retry-After"] == "4"
    # The client is not told it is signed out while its cookie would still work elsewhere.
    assert "Set-Cookie" not in response.headers
    assert await session_user(client) == "u-ada"


async def test_a_gateway_that_has_not_loaded_revocations_refuses_sessions(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    clock: FakeClock,
) -> None:
    client = await gateway_client(
        aiohttp_client,
        make_settings(),
        publisher=fake_publisher,
        clock=clock,
        revocations=LoadingRevocations(clock),
    )
    await login(client)
    response = await client.post("/api/sync", json={})
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "broker_unavailable"
    assert (await client.get("/readyz")).status == 503
    assert fake_publisher.published == []


def test_revoked_ids_are_forgotten_once_they_would_have_expired(clock: FakeClock) -> None:
    revocations = LocalRevocations(clock)
    revocations.revoked.add("gone-soon", clock.now + 10)
    revocations.revoked.add("gone-later", clock.now + 1000)
    revocations.revoked.add("already-dead", clock.now - 1)
    assert revocations.is_revoked("gone-soon")
    assert revocations.is_revoked("gone-later")
    assert not revocations.is_revoked("already-dead")
    clock.advance(120)
    revocations.revoked.add("new", clock.now + 10)  # prunes at most once a minute
    assert not revocations.is_revoked("gone-soon")
    assert len(revocations.revoked) == 2  # gone-later and new


# Identity


async def test_the_events_user_is_the_session_user_whatever_the_request_says(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client = await gateway_client(
        aiohttp_client, make_settings(), publisher=fake_publisher, clock=FakeClock()
    )
    await login(client)
    mallory = {"id": "u-bob", "email": "bob@example.com", "name": "Bob"}
    # Bodies that name a user are rejected outright: the contract is strict.
    for body in ({"user": mallory}, {"data": 1, "user": mallory}, {"userId": "u-bob"}):
        response = await client.post("/api/sync", json=body)
        assert response.status == 422
    # Headers and the query string are ignored; a user inside `data` is just data.
    spoofing_headers = {
        "X-User": "u-bob",
        "X-User-Id": "u-bob",
        "X-Remote-User": "bob@example.com",
        "X-Forwarded-User": "bob@example.com",
        "X-Forwarded-Email": "bob@example.com",
        "X-Auth-Request-Email": "bob@example.com",
        "Authorization": "Bearer u-bob",
    }
    accepted = [
        await client.post("/api/sync", json={"data": {"user": mallory}}),
        await client.post("/api/sync", json={}, headers=spoofing_headers),
        await client.post("/api/sync?user=u-bob&userId=u-bob&user.id=u-bob&email=bob%40x", json={}),
        await client.post("/api/route?user=u-bob", json={}, headers=spoofing_headers),
    ]
    assert [response.status for response in accepted] == [202] * 4
    assert [event.user.id for event, _ in fake_publisher.published] == ["u-ada"] * 4
    assert {event.user.email for event, _ in fake_publisher.published} == {EMAIL}


# Sessions that decrypt but make no sense (a leaked or misused key)

NOW = 1_700_000_000


def forged(session_key: str, *, created: object = None, **fields: object) -> str:
    """A cookie made with the real key, holding what no gateway would write."""
    session: dict[str, object] = {"uid": "u-ada", "sid": "s" * 22, "iat": NOW, "seen": NOW}
    session.update(fields)
    payload = {"created": int(time.time()) if created is None else created, "session": session}
    # The standard library's json: it writes integers of any size, as a forger could.
    return Fernet(session_key).encrypt_at_time(json.dumps(payload).encode(), NOW).decode()


NONSENSE: dict[str, dict[str, object]] = {
    "created is text": {"created": "1700000000"},
    "created is a float": {"created": 1.5},
    "created is true": {"created": True},
    "created is before the epoch": {"created": -1},
    "created is past 64 bits": {"created": 2**64},
    "iat is text": {"iat": "1700000000"},
    "iat is the largest 64-bit integer": {"iat": 2**64 - 1},
    "iat is an hour ahead": {"iat": NOW + 3600, "seen": NOW + 3600},
    "iat is before the epoch": {"iat": -5},
    "seen is before iat": {"seen": NOW - 10},
    "seen is far ahead": {"seen": 2**70},
    "the session id is a number": {"sid": 123},
    "the session id is empty": {"sid": ""},
    "the session id is a kilobyte": {"sid": "s" * 1024},
    "the user id is a number": {"uid": 5},
}


@pytest.mark.parametrize("fields", NONSENSE.values(), ids=NONSENSE.keys())
async def test_a_session_that_makes_no_sense_is_no_session(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    session_key: str,
    fields: dict[str, object],
) -> None:
    client = await gateway_client(
        aiohttp_client, make_settings(), publisher=fake_publisher, clock=FakeClock(NOW)
    )
    cookie = forged(session_key, **fields)
    sid = fields.get("sid", "s" * 22)
    headers = {
        "Cookie": f"{COOKIE}={cookie}",
        "X-CSRF-Token": csrf_token([session_key], sid if isinstance(sid, str) else ""),
    }
    assert await (await client.get("/api/auth/session", headers=headers)).json() == {}
    for path in ("/api/sync", "/api/auth/logout", "/api/auth/csrf"):
        method = client.get if path.endswith("csrf") else client.post
        response = await method(path, headers=headers)
        assert response.status == 401, (path, await response.text())
    assert fake_publisher.published == []


async def test_the_same_session_with_sane_fields_is_signed_in(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    session_key: str,
) -> None:
    """The forged cookies above fail for their one bad field, not for being forged."""
    client = await gateway_client(
        aiohttp_client, make_settings(), publisher=fake_publisher, clock=FakeClock(NOW)
    )
    headers = {"Cookie": f"{COOKIE}={forged(session_key)}"}
    assert await session_user(client, forged(session_key)) == "u-ada"
    headers["X-CSRF-Token"] = csrf_token([session_key], "s" * 22)
    assert (await client.post("/api/auth/logout", headers=headers)).status == 200


async def test_an_idle_timeout_under_a_minute_is_renewed_by_use(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
    clock: FakeClock,
) -> None:
    settings = make_settings(session_idle_timeout=20, session_absolute_timeout=ABSOLUTE)
    client = await gateway_client(aiohttp_client, settings, publisher=fake_publisher, clock=clock)
    await login(client)
    for _ in range(12):  # three minutes of use, a request every 15 s
        clock.advance(15)
        assert (await client.post("/api/sync", json={})).status == 202
    clock.advance(21)
    assert (await client.post("/api/sync", json={})).status == 401
