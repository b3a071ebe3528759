"""The idempotency store inside one process: a bounded map, in expiry order.

It maps each scope to the first body's fingerprint and either the confirmed outcome or, after
a failure, the attempted event. An entry lives for `window` seconds from its latest outcome (a
failure or the confirm). Entries are kept in that order, so with one fixed window the oldest
entry is also the first to expire, and the oldest is the one dropped when the map holds
`max_keys`. A confirmed entry is a few hundred bytes. A failed attempt keeps its event as the
JSON it was published as (up to the body limit plus the envelope), and all attempts together
stay under `max_attempt_bytes`: past it, the oldest attempts are forgotten, and a retry with
such a key publishes a new event, as a request without a key would, so a long outage under
many keys costs bounded memory.

The map belongs to one process: its claims carry no token, and it keeps no "held" state,
because its one caller (`gateway/idempotency.py`) already lets only one request per scope
publish at a time and makes the others wait in memory. So `claim` never answers Busy.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from common.stores.idempotency import Claim, Confirmed, Failed, FingerprintMismatch, Scope


@dataclass(frozen=True, slots=True)
class _Confirmed:
    fingerprint: bytes
    outcome: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class _Attempted:
    """A publish that failed: the broker may hold the event anyway, so it is sent again as is."""

    fingerprint: bytes
    encoded: bytes
    """The event as published: compact, and what the retry publishes again."""
    expires_at: float


_Entry = _Confirmed | _Attempted


class MemoryIdempotencyStore:
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

    def __repr__(self) -> str:
        return f"MemoryIdempotencyStore({len(self._entries)} keys)"

    def __len__(self) -> int:
        """Keys remembered: confirmed ones and failed attempts alike."""
        return len(self._entries)

    @property
    def attempt_bytes(self) -> int:
        """What the failed attempts kept for their retries hold, in encoded bytes."""
        return self._attempt_bytes

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def claim(self, scope: Scope, fingerprint: bytes) -> Claim | Confirmed:
        entry = self._lookup(scope, fingerprint)
        if isinstance(entry, _Confirmed):
            return Confirmed(entry.outcome)
        attempt = entry.encoded if entry is not None else None
        return Claim(scope, fingerprint, attempt, token=None)

    async def peek(self, scope: Scope, fingerprint: bytes) -> Confirmed | Failed | None:
        entry = self._lookup(scope, fingerprint)
        if entry is None:
            return None
        return Confirmed(entry.outcome) if isinstance(entry, _Confirmed) else Failed()

    async def record(self, claim: Claim, attempt: bytes) -> bool:
        # Nothing outlives this process, so there is no one to hand the attempt to yet.
        return True

    async def confirm(self, claim: Claim, outcome: str) -> bool:
        # Only the outcome: the event itself is never needed again once the broker has it.
        self._remember(claim.scope, _Confirmed(claim.fingerprint, outcome, self._expires_at()))
        return True

    async def fail(self, claim: Claim, attempt: bytes) -> bool:
        self._remember(claim.scope, _Attempted(claim.fingerprint, attempt, self._expires_at()))
        return True

    def _expires_at(self) -> float:
        return self._clock() + self._window

    def _lookup(self, scope: Scope, fingerprint: bytes) -> _Entry | None:
        entry = self._entries.get(scope)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._forget(scope)
            return None
        if entry.fingerprint != fingerprint:
            raise FingerprintMismatch
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
