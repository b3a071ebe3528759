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

Where the keys are remembered is the store's business (`common/stores/idempotency.py`): in
this process's memory by default, bounded by a key count and a byte budget for the failed
attempts' events; in Redis, shared by every gateway, when `SYNCGATE_REDIS_URL` is set. Here,
`IdempotencyCache` runs the protocol over either:
- requests with one key inside this process wait for each other in memory, as above: only
  the first asks the store;
- a request whose key another gateway is publishing (the store answers busy) asks the store
  again every few milliseconds, up to the publish deadline: then it answers with that outcome
  (the id, replayed; or a 503 if that publish failed), or a 503 if it is still not settled.
  A gateway that died holding the key holds it only until its lease runs out; the request
  that takes it over then publishes the event the dead one recorded, never a new one;
- a store that does not answer (Redis down) makes the request a 503 `store_unavailable` before
  anything is published. If it stops answering after the broker confirmed, the answer is the
  202: the event was recorded before the publish, so a retry once the claim's lease has run
  out publishes that same event again (consumers dedupe it); one before that is a 503.

A request without a key only builds and publishes: no hash, no store, no Redis.

POST /api/events runs its client ids through the same cache and store, one event at a time,
in scopes of their own (gateway/events_view.py): the user's id behind a prefix that no user
id can have, so a client id never answers for an Idempotency-Key, nor the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import orjson
from aiohttp import web
from pydantic import JsonValue

from common.stores import errors as store_errors
from common.stores.idempotency import (
    Busy,
    Claim,
    Confirmed,
    Failed,
    FingerprintMismatch,
    IdempotencyStore,
    Scope,
)
from gateway.errors import (
    BrokerUnavailable,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    StoreUnavailable,
)
from schemas.registry import Event

log = logging.getLogger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=Event)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Printable ASCII (space to tilde); the header parser strips surrounding spaces already.
_VALID_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")

# How often a request whose key another gateway holds asks the store again: from the first
# pause, doubling up to the longest (a publish takes a few milliseconds; a stuck one, seconds).
FIRST_POLL = 0.005
LONGEST_POLL = 0.05


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


@dataclass(slots=True)
class _InFlight:
    fingerprint: bytes
    event_id: asyncio.Future[str] | None = None
    """Made by the first request that waits: most publishes have no one waiting."""


def _check_same_body(first: bytes, this: bytes) -> None:
    if first != this:
        raise IdempotencyKeyReused(
            f"this {HEADER} was first sent with another body; a new request needs a new key"
        )


def _reused() -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"this {HEADER} was first sent with another body; a new request needs a new key"
    )


class IdempotencyCache:
    """`run_once` over an idempotency store; see the module docstring."""

    def __init__(self, store: IdempotencyStore, *, wait_limit: float, retry_after: int) -> None:
        """`wait_limit`: how long a request waits for another gateway's publish of its key
        (the publish deadline); `retry_after`: the Retry-After of the 503s said here."""
        self.store = store
        self._wait_limit = wait_limit
        self._retry_after = retry_after
        self._in_flight: dict[Scope, _InFlight] = {}

    async def run_once(
        self,
        user_id: str,
        key: str | None,
        *,
        data: JsonValue,
        build: Callable[[], E],
        publish: Callable[[E], Awaitable[None]],
        decode: Callable[[bytes], E],
    ) -> Outcome:
        """Publish at most one event per (user, key) and window, and return its id.

        `data` is what the request asks for (compared across requests with one key), `build`
        makes a new event of it, `decode` reads back an attempted one (its JSON), and
        `publish` returns once the broker confirmed an event and
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
            if pending.event_id is None:
                pending.event_id = asyncio.get_running_loop().create_future()
            first = pending.event_id
            # asyncio.wait raises only if this request itself is cancelled, never with the
            # first request's error, which is read from the future below.
            await asyncio.wait([first])
            if first.cancelled():
                continue  # the first request was cancelled before an outcome: take over
            error = first.exception()
            if error is not None:
                raise error
            return Outcome(first.result(), replayed=True)

        # No await from here until this request is registered as in flight: no other request
        # in this process can slip in, and none asks the store while this one does.
        pending = _InFlight(fingerprint)
        self._in_flight[scope] = pending
        try:
            outcome = await self._publish_once(scope, fingerprint, build, publish, decode)
        except BaseException as exc:
            if pending.event_id is not None:
                if isinstance(exc, Exception):
                    pending.event_id.set_exception(exc)
                    pending.event_id.exception()  # retrieved: no "never retrieved" noise
                else:
                    pending.event_id.cancel()
            raise
        finally:
            del self._in_flight[scope]
        if pending.event_id is not None:
            pending.event_id.set_result(outcome.event_id)
        return outcome

    async def _publish_once(
        self,
        scope: Scope,
        fingerprint: bytes,
        build: Callable[[], E],
        publish: Callable[[E], Awaitable[None]],
        decode: Callable[[bytes], E],
    ) -> Outcome:
        """Publish the key's attempt again, or a new event; tell the store whatever happens."""
        try:
            claim = await self.store.claim(scope, fingerprint)
        except FingerprintMismatch:
            raise _reused() from None
        except store_errors.StoreUnavailable:
            raise self._unavailable() from None
        if isinstance(claim, Busy):
            claim = await self._wait_for_other(scope, fingerprint)
        if isinstance(claim, Confirmed):
            return Outcome(claim.outcome, replayed=True)
        encoded = claim.attempt
        if encoded is not None:
            event = decode(encoded)
        else:
            event = build()
            if claim.token is not None:
                # A store shared with other gateways keeps the event before it is published:
                # if this gateway dies mid-publish, the one that takes the key over sends it.
                encoded = event.model_dump_json().encode()
                if not await self._ask(self.store.record(claim, encoded)):
                    raise BrokerUnavailable(
                        f"another gateway took this {HEADER} over; retry",
                        retry_after=self._retry_after,
                    )
        try:
            await publish(event)
        except BaseException:
            # Not confirmed is not "not stored" (a lost confirm, a cancelled wait): the next
            # request with this key sends this same event, never a new id.
            if encoded is None:
                encoded = event.model_dump_json().encode()
            # A store that does not answer logged it; the claim's lease then runs out, and the
            # event recorded before the publish is what the next request sends.
            with contextlib.suppress(store_errors.StoreUnavailable):
                await self.store.fail(claim, encoded)
            raise
        event_id = str(event.id)
        try:
            await self.store.confirm(claim, event_id)
        except store_errors.StoreUnavailable:
            # The broker has the event: the answer is its 202. The key stays held with this
            # event recorded, so once its lease runs out a retry publishes it again, same id.
            log.warning("could not record the confirm of an %s; a retry republishes it", HEADER)
        return Outcome(event_id, replayed=False)

    async def _wait_for_other(self, scope: Scope, fingerprint: bytes) -> Claim | Confirmed:
        """Another gateway is publishing this key: wait for its outcome, as a request waits
        for one in this process, up to the publish deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_limit
        pause = FIRST_POLL
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(pause, left))
            pause = min(2 * pause, LONGEST_POLL)
            state = await self._ask(self.store.peek(scope, fingerprint))
            if isinstance(state, Confirmed):
                return state
            if isinstance(state, Failed):
                raise BrokerUnavailable(
                    f"the request this one waited for, with the same {HEADER}, was not "
                    "confirmed; retry",
                    retry_after=self._retry_after,
                )
            if state is None:
                # Its holder's lease ran out (it died?), or the key expired: take it over.
                claimed = await self._ask(self.store.claim(scope, fingerprint))
                if not isinstance(claimed, Busy):
                    return claimed
        raise BrokerUnavailable(
            f"another request with this {HEADER} is still being published; retry",
            retry_after=self._retry_after,
        )

    async def _ask(self, call: Awaitable[T]) -> T:
        """The store's answer; its errors as the gateway's."""
        try:
            return await call
        except FingerprintMismatch:
            raise _reused() from None
        except store_errors.StoreUnavailable:
            raise self._unavailable() from None

    def _unavailable(self) -> StoreUnavailable:
        # The reason is in the store's own log line, not in the client's answer.
        return StoreUnavailable(
            f"the store of {HEADER}s is unavailable; retry", retry_after=self._retry_after
        )
