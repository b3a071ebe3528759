"""Idempotency-Key: a retried POST /api/sync stands for one event, however often it is sent.

A client that lost the answer to a POST (a timeout, a dropped connection, a 503) cannot know
whether the event was accepted. If it sends the same `Idempotency-Key` again, the gateway
answers for the event of the first request instead of making a new one:
- after a confirm, a retry gets the confirmed event id back with `Idempotent-Replayed: true`,
  and nothing is published;
- after a failed publish (a 503: the deadline, a nack, the broker down), a retry publishes the
  very event that was attempted (same id, ts, appSettings and data) rather than a new one. A
  503 does not prove the broker dropped the first copy (a confirm can be lost after the broker
  stored it), and consumers dedupe on the event id: two copies under one id are one click, two
  ids would be two. The retry did the publish that got confirmed, so its 202 is not marked
  replayed; once confirmed, the key answers like any confirmed key;
- a request whose body differs from the first request's with that key is refused with 422
  `idempotency_key_reused`: replaying the first event would hide that this data was never
  sent. Bodies are compared by a hash of their validated `data` with sorted keys, so key order
  and whitespace do not count;
- a request that arrives while another with its key is publishing waits for that outcome
  instead of publishing in parallel. If that request was cancelled, it takes over and
  publishes the same event: a cancelled publish counts as a failed one.

The memory is one bounded, in-process map from (user id, key) to the first body's hash and
either the confirmed event id or, after a failure, the attempted event. An entry lives for
`window` seconds from its latest publish outcome (a failure or the confirm). Entries are kept
in that order, so with one fixed window the oldest entry is also the first to expire, and the
oldest is the one dropped when the map holds `max_keys`. A confirmed entry is a few hundred
bytes. A failed attempt keeps its event as the JSON it was published as (up to the body limit
plus the envelope), and all attempts together stay under `max_attempt_bytes`: past it, the
oldest attempts are forgotten, and a retry with such a key publishes a new event, as a request
without a key would, so a long outage under many keys costs bounded memory. The map belongs
to one gateway process: several gateways need sticky routing by user or a shared store. A
request without a key only builds and publishes: no hash, no entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web
from pydantic import JsonValue

from gateway.errors import IdempotencyKeyReused, InvalidIdempotencyKey
from schemas.events import ConfluenceAppSync

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Printable ASCII (space to tilde); the header parser strips surrounding spaces already.
_VALID_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")

Scope = tuple[str, str]
"""(user id, idempotency key): one user's key never answers for another user."""


def idempotency_key(request: web.Request) -> str | None:
    """The request's key, None when it sent none; a malformed or repeated key is a 400."""
    values = request.headers.getall(HEADER, [])
    if not values:
        return None
    if len(values) > 1:
        raise InvalidIdempotencyKey(f"send one {HEADER} header, not {len(values)}")
    key = values[0]
    if not _VALID_KEY.fullmatch(key):
        raise InvalidIdempotencyKey(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key


def body_fingerprint(data: JsonValue) -> bytes:
    """A hash of a request's validated `data`: equal JSON values give equal fingerprints."""
    # Sorted keys: {"a": 1, "b": 2} and {"b": 2, "a": 1} are the same request. orjson cannot
    # fail on a validated body: the parser already refused integers past 64 bits and nesting
    # past its recursion limit (about 200 levels, under orjson's 254). A digest, not the bytes,
    # is kept: an entry stays small whatever the body's size.
    encoded = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(encoded, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class Outcome:
    event_id: str
    replayed: bool
    """True when an earlier request with the same key published the event, not this one."""


@dataclass(frozen=True, slots=True)
class _Confirmed:
    fingerprint: bytes
    event_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class _Attempted:
    """A publish that failed: the broker may hold the event anyway, so it is sent again as is."""

    fingerprint: bytes
    encoded: bytes
    """The event as published: compact, and what the retry publishes again."""
    expires_at: float

    @property
    def event(self) -> ConfluenceAppSync:
        return ConfluenceAppSync.model_validate_json(self.encoded)


_Entry = _Confirmed | _Attempted


@dataclass(frozen=True, slots=True)
class _InFlight:
    fingerprint: bytes
    event_id: asyncio.Future[str]


def _check_same_body(first: bytes, this: bytes) -> None:
    if first != this:
        raise IdempotencyKeyReused(
            f"this {HEADER} was first sent with another body; a new request needs a new key"
        )


class IdempotencyCache:
    def __init__(
        self,
        *,
        window: float,
        max_keys: int,
        max_attempt_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window
        self._max_keys = max_keys
        self._max_attempt_bytes = max_attempt_bytes
        self._attempt_bytes = 0
        self._clock = clock
        self._entries: OrderedDict[Scope, _Entry] = OrderedDict()
        self._in_flight: dict[Scope, _InFlight] = {}

    def __len__(self) -> int:
        """Keys remembered: confirmed ones and failed attempts alike."""
        return len(self._entries)

    @property
    def attempt_bytes(self) -> int:
        """What the failed attempts kept for their retries hold, in encoded bytes."""
        return self._attempt_bytes

    async def run_once(
        self,
        user_id: str,
        key: str | None,
        *,
        data: JsonValue,
        build: Callable[[], ConfluenceAppSync],
        publish: Callable[[ConfluenceAppSync], Awaitable[None]],
    ) -> Outcome:
        """Publish at most one event per (user, key) and window, and return its id.

        `data` is what the request asks for (compared across requests with one key), `build`
        makes a new event of it, and `publish` returns once the broker confirmed an event and
        raises otherwise. Without a key, it builds and publishes. A failure (a 503) reaches
        this caller and every caller waiting on the same key; the attempted event is kept, and
        the next request with the key publishes it again.
        """
        if key is None:
            event = build()
            await publish(event)
            return Outcome(str(event.id), replayed=False)
        scope = (user_id, key)
        fingerprint = body_fingerprint(data)
        while (pending := self._in_flight.get(scope)) is not None:
            _check_same_body(pending.fingerprint, fingerprint)
            # asyncio.wait raises only if this request itself is cancelled, never with the
            # first request's error, which is read from the future below.
            await asyncio.wait([pending.event_id])
            if pending.event_id.cancelled():
                continue  # the first request was cancelled before an outcome: take over
            error = pending.event_id.exception()
            if error is not None:
                raise error
            return Outcome(pending.event_id.result(), replayed=True)

        # No await from here until the publish is registered as in flight: no one can slip in.
        entry = self._lookup(scope)
        if entry is not None:
            _check_same_body(entry.fingerprint, fingerprint)
            if isinstance(entry, _Confirmed):
                return Outcome(entry.event_id, replayed=True)
        attempt = entry.event if entry is not None else None
        return await self._publish(scope, fingerprint, attempt, build, publish)

    async def _publish(
        self,
        scope: Scope,
        fingerprint: bytes,
        attempt: ConfluenceAppSync | None,
        build: Callable[[], ConfluenceAppSync],
        publish: Callable[[ConfluenceAppSync], Awaitable[None]],
    ) -> Outcome:
        """Publish `attempt` again, or a new event; remember the event whatever happens."""
        pending = _InFlight(fingerprint, asyncio.get_running_loop().create_future())
        self._in_flight[scope] = pending
        event = attempt
        try:
            if event is None:
                event = build()
            await publish(event)
        except BaseException as exc:
            if event is not None:
                # Not confirmed is not "not stored" (a lost confirm, a cancelled wait): the
                # next request with this key sends this same event, never a new id.
                encoded = event.model_dump_json().encode()
                self._remember(scope, _Attempted(fingerprint, encoded, self._expires_at()))
            if isinstance(exc, Exception):
                pending.event_id.set_exception(exc)
                pending.event_id.exception()  # retrieved: no "never retrieved" noise
            else:
                pending.event_id.cancel()
            raise
        finally:
            del self._in_flight[scope]
        event_id = str(event.id)
        # Only the id: the event itself is never needed again once the broker has it.
        self._remember(scope, _Confirmed(fingerprint, event_id, self._expires_at()))
        pending.event_id.set_result(event_id)
        return Outcome(event_id, replayed=False)

    def _expires_at(self) -> float:
        return self._clock() + self._window

    def _lookup(self, scope: Scope) -> _Entry | None:
        entry = self._entries.get(scope)
        if entry is not None and entry.expires_at <= self._clock():
            self._forget(scope)
            return None
        return entry

    def _remember(self, scope: Scope, entry: _Entry) -> None:
        # Removed first, so a replaced entry (an attempt now confirmed, or failed again) moves
        # to the end and the map stays in expiry order.
        self._forget(scope)
        self._drop_expired(self._clock())
        self._entries[scope] = entry
        if isinstance(entry, _Attempted):
            self._attempt_bytes += len(entry.encoded)
            self._drop_oldest_attempts()
        while len(self._entries) > self._max_keys:
            self._forget(next(iter(self._entries)))

    def _forget(self, scope: Scope) -> None:
        entry = self._entries.pop(scope, None)
        if isinstance(entry, _Attempted):
            self._attempt_bytes -= len(entry.encoded)

    def _drop_oldest_attempts(self) -> None:
        # Only on the failure path (an outage), so a scan from the oldest entry is affordable.
        if self._attempt_bytes <= self._max_attempt_bytes:
            return
        for scope in [s for s, e in self._entries.items() if isinstance(e, _Attempted)]:
            self._forget(scope)
            if self._attempt_bytes <= self._max_attempt_bytes:
                return

    def _drop_expired(self, now: float) -> None:
        while self._entries:
            scope, oldest = next(iter(self._entries.items()))
            if oldest.expires_at > now:
                return
            self._forget(scope)
