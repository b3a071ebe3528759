"""Encrypted-cookie sessions with key rotation and server-side timeouts.

The cookie is aiohttp-session's Fernet token. The storage decrypts with every configured key
(MultiFernet) and encrypts with the first, so keys rotate without signing anyone out.
The payload is tiny: the user id, a random session id, the login time and the last use.
Timeouts are checked in `require_user` from those timestamps, not from the cookie's Max-Age,
which a client controls.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp_session import AbstractStorage, Session, SessionData, get_session, new_session
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from gateway.errors import BrokerUnavailable, NotAuthenticated
from gateway.identity import SignedIn
from gateway.keys import CLOCK, REVOCATIONS, SETTINGS, SIGNED_IN, USERS
from schemas.events import EventUser

log = logging.getLogger(__name__)

# Renew the idle timestamp at most this often, so a busy client is not sent a new cookie on
# every request.
RENEW_AFTER_SECONDS = 60

# As cryptography's Fernet: a token stamped this far in the future is refused.
_MAX_CLOCK_SKEW = 60
# Session ids are secrets.token_urlsafe(16): 22 characters.
_MAX_SESSION_ID = 64


def cookie_name(secure: bool) -> str:
    # __Host- binds the cookie to this exact host over https, with Path=/ and no Domain.
    return "__Host-syncgate" if secure else "syncgate"


class RotatingCookieStorage(AbstractStorage):
    """aiohttp-session storage whose cookie is a Fernet token that any of several keys opens.

    aiohttp-session's EncryptedCookieStorage takes a single Fernet, so this storage does its
    own encryption, with a MultiFernet over all the keys (the first encrypts). The cookie's
    attributes and its Set-Cookie come from AbstractStorage; the payload is aiohttp-session's
    own `{"created", "session"}` shape, as EncryptedCookieStorage writes it.

    Every request decrypts its cookie and checks the token's stamp against the clock, as
    Fernet's own TTL would; `require_user` then checks the payload's timeouts and the
    logged-out list.
    """

    def __init__(
        self,
        keys: Sequence[str],
        *,
        clock: Callable[[], float],
        max_age: int,
        secure: bool,
        samesite: str,
    ) -> None:
        super().__init__(
            cookie_name=cookie_name(secure),
            max_age=max_age,
            path="/",
            secure=secure,
            httponly=True,
            samesite=samesite,
        )
        self._keys = MultiFernet([Fernet(key) for key in keys])
        self._clock = clock
        self._ttl = max_age

    def _decrypt(self, cookie: str) -> bytes:
        """The cookie's plaintext; InvalidToken if no key opens it, or if its stamp is older
        than the absolute timeout or more than a minute ahead of the clock (Fernet's own TTL
        check, on this storage's clock).

        Each request decrypts its cookie anew. A cache of decrypted cookies was tried: in an
        interleaved A/B (`python -m bench.ab`, 10 pairs at c=64, 2026-12-03; README
        "Benchmarks") the gateway without it used less CPU per request in 7 of the 10 pairs
        (medians 684 against 813 µs), so it went. With it went the second reading of the
        token's stamp that the cache needed (`extract_timestamp`, a second base64 decoding:
        10.7 µs against 30.6 µs for the decryption itself, timeit on the bench machine).
        """
        return self._keys.decrypt_at_time(cookie.encode(), ttl=self._ttl, current_time=self._now())

    def _now(self) -> int:
        return int(self._clock())

    async def load_session(self, request: web.Request) -> Session:
        cookie = self.load_cookie(request)
        if cookie is not None:
            try:
                data = orjson.loads(self._decrypt(cookie))
                if (
                    isinstance(data, dict)
                    and isinstance(data.get("session"), dict)
                    # aiohttp-session stamps and ages `created` by the wall clock.
                    and timestamp(data.get("created"), now=int(time.time())) is not None
                ):
                    return Session(
                        None, data=cast(SessionData, data), new=False, max_age=self.max_age
                    )
            except (InvalidToken, ValueError, UnicodeError):
                pass
            # Never log the cookie itself: it is a bearer credential.
            log.info("rejected a session cookie that is invalid, forged or expired")
        return Session(None, data=None, new=True, max_age=self.max_age)

    async def save_session(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        if session.empty:
            self.save_cookie(response, "", max_age=session.max_age)
            return
        plaintext = orjson.dumps(self._get_session_data(session))
        token = self._keys.encrypt_at_time(plaintext, self._now())
        self.save_cookie(response, token.decode(), max_age=session.max_age)


def session_storage(app: web.Application) -> RotatingCookieStorage:
    settings = app[SETTINGS]
    return RotatingCookieStorage(
        settings.fernet_keys,
        clock=app[CLOCK],
        max_age=settings.session_absolute_timeout,
        secure=settings.cookie_secure,
        samesite=settings.cookie_samesite,
    )


async def start_session(request: web.Request, user: EventUser) -> SignedIn:
    """A fresh session at every login: a cookie from before it never authenticates."""
    session = await new_session(request)
    now = int(request.app[CLOCK]())
    session_id = secrets.token_urlsafe(16)
    session.update({"uid": user.id, "sid": session_id, "iat": now, "seen": now})
    return SignedIn(user=user, session_id=session_id, issued_at=now)


def timestamp(value: Any, *, now: int) -> int | None:
    """`value` as a time in whole seconds, or None unless it is a plain integer between the
    epoch and `now` (plus the clock skew allowed between gateways).

    A cookie only ever holds what a gateway wrote, so anything else means a key leaked or was
    misused: such a session counts as none (401), never as a 500, and a time far in the
    future could otherwise keep a session valid forever and break what is computed from it.
    """
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 0 <= value <= now + _MAX_CLOCK_SKEW
    ):
        return value
    return None


def renew_after(idle_timeout: int) -> int:
    """How long after its last renewal a session's idle timestamp is renewed again.

    At most once a minute, so a busy client is not sent a new cookie on every request; and
    within half the idle timeout, so a client active more often than the timeout is never
    timed out (an idle timeout under a minute would otherwise act as an absolute one).
    """
    return min(RENEW_AFTER_SECONDS, idle_timeout // 2)


async def require_user(request: web.Request) -> SignedIn:
    """The signed-in user, or NotAuthenticated. The only source of the event's `user`.

    Checked once per request: the CSRF middleware and the view both ask.
    """
    signed_in = request.get(SIGNED_IN)
    if signed_in is None:
        signed_in = request[SIGNED_IN] = await _check_session(request)
    return signed_in


async def _check_session(request: web.Request) -> SignedIn:
    session = await get_session(request)
    if session.new:
        raise NotAuthenticated("sign in first")
    settings = request.app[SETTINGS]
    now = int(request.app[CLOCK]())
    user_id, session_id = session.get("uid"), session.get("sid")
    issued_at = timestamp(session.get("iat"), now=now)
    seen_at = timestamp(session.get("seen"), now=now)
    if (
        not isinstance(user_id, str)
        or not isinstance(session_id, str)
        or not 0 < len(session_id) <= _MAX_SESSION_ID
        or issued_at is None
        or seen_at is None
        or seen_at < issued_at
    ):
        session.invalidate()
        log.info("rejected a session whose contents make no sense")
        raise NotAuthenticated("sign in first")
    if now - issued_at > settings.session_absolute_timeout:
        session.invalidate()
        log.info("rejected a session past its absolute timeout")
        raise NotAuthenticated("the session has expired; sign in again")
    if now - seen_at > settings.session_idle_timeout:
        session.invalidate()
        log.info("rejected a session past its idle timeout")
        raise NotAuthenticated("the session has expired; sign in again")
    revocations = request.app[REVOCATIONS]
    if not revocations.ready:
        # Fail closed: until this gateway has read every logout, any cookie might be one.
        raise BrokerUnavailable(
            "the gateway is still loading logged-out sessions", retry_after=settings.retry_after
        )
    if revocations.is_revoked(session_id):
        session.invalidate()
        log.info("rejected a session that was logged out")
        raise NotAuthenticated("the session has ended; sign in again")
    record = request.app[USERS].by_id(user_id)
    if record is None:
        session.invalidate()
        raise NotAuthenticated("the user no longer exists")
    if now - seen_at >= renew_after(settings.session_idle_timeout):
        session["seen"] = now
    return SignedIn(user=record.public, session_id=session_id, issued_at=issued_at)


async def end_session(request: web.Request, signed_in: SignedIn) -> None:
    """Clear the cookie and revoke its session on every gateway, until it would have expired.

    Clearing the cookie alone is not enough: a copy of it (stolen, or in another tab's
    memory) would stay valid until its absolute timeout.
    """
    until = signed_in.issued_at + request.app[SETTINGS].session_absolute_timeout
    await request.app[REVOCATIONS].revoke(signed_in.session_id, until=until)
    session = await get_session(request)
    session.invalidate()
