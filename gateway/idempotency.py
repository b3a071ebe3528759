"""Idempotency-Key: a retried POST /api/sync gets the first request's event id back.

A client that lost the answer to a POST (a timeout, a dropped connection) cannot know whether
the event was accepted. If it sends the same `Idempotency-Key` again, the gateway answers with
the event id it already confirmed instead of publishing a second event.

The memory is one bounded, in-process map from (user id, key) to event id:
- only confirmed publishes are remembered, so a retry after a 503 publishes again;
- a request that arrives while the first one with its key is still publishing waits for that
  outcome instead of publishing in parallel;
- an entry lives for `window` seconds from the first confirm. Entries are kept in confirm order,
  so with one fixed window the oldest entry is also the first to expire, and the oldest is the
  one dropped when the map is full.
The map belongs to one gateway process: several gateways need sticky routing by user or a
shared store. Consumers dedupe on the event id whatever happens here.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.errors import InvalidIdempotencyKey

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


@dataclass(frozen=True, slots=True)
class Outcome:
    event_id: str
    replayed: bool
    """True when the event id comes from an earlier request with the same key."""


@dataclass(frozen=True, slots=True)
class _Confirmed:
    event_id: str
    expires_at: float


class IdempotencyCache:
    def __init__(
        self,
        *,
        window: float,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window
        self._max_keys = max_keys
        self._clock = clock
        self._confirmed: OrderedDict[Scope, _Confirmed] = OrderedDict()
        self._in_flight: dict[Scope, asyncio.Future[str]] = {}

    def __len__(self) -> int:
        return len(self._confirmed)

    async def run_once(
        self, user_id: str, key: str | None, publish: Callable[[], Awaitable[str]]
    ) -> Outcome:
        """Publish at most once per (user, key) and window; `publish` returns the event id.

        Without a key, it just publishes. Its exception (a 503) reaches this caller and every
        caller waiting on the same key, and the key is not remembered, so a retry publishes.
        """
        if key is None:
            return Outcome(await publish(), replayed=False)
        scope = (user_id, key)
        while True:
            confirmed = self._lookup(scope)
            if confirmed is not None:
                return Outcome(confirmed.event_id, replayed=True)
            pending = self._in_flight.get(scope)
            if pending is None:
                break
            # asyncio.wait raises only if this request itself is cancelled, never with the
            # first request's error, which is read from the future below.
            await asyncio.wait([pending])
            if pending.cancelled():
                continue  # the first request was cancelled before an outcome: take over
            error = pending.exception()
            if error is not None:
                raise error
            return Outcome(pending.result(), replayed=True)

        pending = asyncio.get_running_loop().create_future()
        self._in_flight[scope] = pending
        try:
            event_id = await publish()
        except BaseException as exc:
            if isinstance(exc, Exception):
                pending.set_exception(exc)
                pending.exception()  # retrieved: no "never retrieved" noise without waiters
            else:
                pending.cancel()
            raise
        finally:
            del self._in_flight[scope]
        self._remember(scope, event_id)
        pending.set_result(event_id)
        return Outcome(event_id, replayed=False)

    def _lookup(self, scope: Scope) -> _Confirmed | None:
        confirmed = self._confirmed.get(scope)
        if confirmed is not None and confirmed.expires_at <= self._clock():
            del self._confirmed[scope]
            return None
        return confirmed

    def _remember(self, scope: Scope, event_id: str) -> None:
        now = self._clock()
        self._drop_expired(now)
        self._confirmed[scope] = _Confirmed(event_id, expires_at=now + self._window)
        while len(self._confirmed) > self._max_keys:
            self._confirmed.popitem(last=False)

    def _drop_expired(self, now: float) -> None:
        while self._confirmed:
            oldest = next(iter(self._confirmed.values()))
            if oldest.expires_at > now:
                return
            self._confirmed.popitem(last=False)
