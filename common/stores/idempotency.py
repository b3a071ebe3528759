"""The idempotency store: what one scope (an owner's key) stands for, and who is publishing it.

A scope is (owner, key): a user and the `Idempotency-Key` they sent, or a user and an event id
their client chose. Each scope remembers the fingerprint of the first request's body, and one
of three states, which a caller moves through with the methods below:
- held: a caller claimed the scope and is publishing. It publishes the scope's attempt if it
  has one, else a new event; then it settles the claim.
- attempted: the latest publish failed. The broker may hold that event anyway, so the scope
  keeps it as published, and the next claim gets it back to publish again, never a new one.
- confirmed: the outcome (the event id); every later request with the scope gets it back.

An entry lives for the window from its latest outcome (the failure or the confirm).
`gateway/idempotency.py` is the one caller: it compares fingerprints, waits, and publishes.

Two backends (`common/stores/backends.py` picks one):
- `idempotency_memory.py`: one gateway process, bounded by a key count and a byte budget for
  the failed attempts. Requests inside one process are serialized per scope by their caller,
  so its claims are never contested and it keeps no "held" state of its own.
- `idempotency_redis.py`: shared by every gateway. A claim is a lease with a fencing token:
  a gateway that dies mid-publish holds the scope only until its lease runs out, and the
  attempt is recorded before the publish, so the gateway that takes over publishes that same
  event; a holder whose lease was taken over can no longer record or settle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

Scope = tuple[str, str]
"""(owner, key): one owner's key never answers for another owner."""


# Not frozen: treat them as values. A frozen dataclass costs about four times as much to make
# (object.__setattr__ per field), and a keyed request makes one or two of these.


@dataclass(slots=True)
class Claim:
    """The caller holds the scope: it publishes, then calls `confirm` or `fail` exactly once."""

    scope: Scope
    fingerprint: bytes
    attempt: bytes | None
    """The event a failed (or abandoned) publish attempted, as published: publish it again.
    None: nothing was attempted yet; the caller makes a new event."""
    token: str | None
    """The holder's fencing token in a store shared between processes. Before publishing a
    new event, such a holder must `record` it. None in a store inside one process, where no
    one else can take the scope over, so nothing needs recording before the publish."""


@dataclass(slots=True)
class Confirmed:
    """The scope's event was confirmed: `outcome` is its id."""

    outcome: str


@dataclass(frozen=True, slots=True)
class Busy:
    """Another process holds the scope and is publishing; its lease has not run out."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The latest publish for the scope failed, and no one holds it now."""


class FingerprintMismatch(Exception):
    """The scope was first used with another body: its outcome cannot answer for this one."""


class IdempotencyStore(Protocol):
    """Every method may raise `common.stores.errors.StoreUnavailable`."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def claim(self, scope: Scope, fingerprint: bytes) -> Claim | Confirmed | Busy:
        """Take the scope, atomically, unless it is confirmed or held by someone else.

        FingerprintMismatch if the scope is remembered with another fingerprint. A scope that
        is new or expired is claimed with no attempt; an attempted one, or one whose holder's
        lease ran out, with its attempt. Busy only from a store shared between processes.
        """
        ...

    async def peek(self, scope: Scope, fingerprint: bytes) -> Confirmed | Failed | Busy | None:
        """The scope's state, changing nothing: for a caller waiting on another's publish.

        None when no one holds it and nothing is attempted or confirmed: `claim` may take it.
        FingerprintMismatch as for `claim`.
        """
        ...

    async def record(self, claim: Claim, attempt: bytes) -> bool:
        """Keep `attempt` as the scope's attempt before publishing it, for a claim with a token.

        False if the claim was taken over (its lease ran out): the caller must not publish.
        """
        ...

    async def confirm(self, claim: Claim, outcome: str) -> bool:
        """The claim's publish was confirmed. False if the claim had been taken over."""
        ...

    async def fail(self, claim: Claim, attempt: bytes) -> bool:
        """The claim's publish of `attempt` failed, or was abandoned: keep it for the retry.
        False if the claim had been taken over."""
        ...
