"""The login-failure store: failed logins per account and per client address, with a lockout.

The rule, the same in every backend (`LockoutPolicy`): after `max_failures` failures a key is
locked out for `base` seconds, and each further failure doubles that, up to `cap`. A key
keeps its count, and so keeps escalating, until its account logs in (`succeeded`; an
address's count is never cleared by a success: one right password must not unlock guessing
at other accounts from the same address) or until `quiet` seconds pass with no failure.
`quiet` is at least `cap`: a count that started over after the longest lockout would give a
patient guesser a fresh budget every cycle.

Two backends (`common/stores/backends.py` picks one): `login_failures_memory.py`, one
gateway's tables, and `login_failures_redis.py`, shared by every gateway, so failures spread
over N gateways lock the account after `max_failures`, not N times that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    max_failures: int
    base: int
    """Seconds of the first lockout."""
    cap: int
    """Seconds of the longest lockout."""
    quiet: int
    """Seconds without a failure after which a key's count starts over."""

    def __post_init__(self) -> None:
        if self.quiet < self.cap:
            raise ValueError("the quiet period must be at least the longest lockout")

    def lockout(self, count: int) -> int:
        """Seconds locked after the `count`th failure in a row; 0 while under the limit."""
        excess = count - self.max_failures
        if excess < 0:
            return 0
        return min(self.cap, self.base * (1 << min(excess, 32)))


class LoginFailureStore(Protocol):
    """Every method may raise `common.stores.errors.StoreUnavailable`."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def retry_after(self, account: str, address: str) -> int:
        """Seconds until a login for `account` from `address` may be tried; 0: now."""
        ...

    async def failed(self, account: str, address: str) -> None:
        """Count a failed login against both, atomically, and lock what is over its limit."""
        ...

    async def succeeded(self, account: str) -> None:
        """Clear the account's count; the address keeps its own."""
        ...
