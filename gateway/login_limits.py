"""Failed-login limits per account and per client address, in memory.

After `max_failures` failures a key is locked out for `base` seconds, and each further failure
doubles that, up to `cap`; while it is locked, logins answer 429 with Retry-After before any
password is checked. A success clears the account's count (not the address's: one right
password must not unlock guessing at other accounts from the same address). A key's count is
forgotten once it has been quiet for a full `cap`.

Each table holds at most `max_keys` keys, dropping the least recently failed, so a flood of
made-up emails cannot exhaust memory. The limits are per process: N gateways allow N times as
many guesses, which the per-address limit and scrypt's cost still keep small.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import TooManyAttempts


@dataclass(slots=True)
class _Failures:
    count: int
    last_at: float
    locked_until: float


class FailureCounter:
    """Failures per key with an exponential lockout; see the module docstring."""

    def __init__(
        self,
        *,
        max_failures: int,
        base: int,
        cap: int,
        clock: Callable[[], float],
        max_keys: int = 100_000,
    ) -> None:
        self._max_failures = max_failures
        self._base = base
        self._cap = cap
        self._clock = clock
        self._max_keys = max_keys
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again; 0 when it may try now."""
        entry = self._failures.get(key)
        if entry is None:
            return 0
        return max(0, math.ceil(entry.locked_until - self._clock()))

    def failed(self, key: str) -> None:
        now = self._clock()
        entry = self._failures.pop(key, None)
        if entry is None or now - entry.last_at > self._cap:
            entry = _Failures(count=0, last_at=now, locked_until=0.0)
        entry.count += 1
        entry.last_at = now
        excess = entry.count - self._max_failures
        if excess >= 0:
            entry.locked_until = now + min(self._cap, self._base * 2 ** min(excess, 32))
        self._failures[key] = entry
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)


class LoginLimits:
    """The two counters a login consults: one keyed by email, one by client address."""

    def __init__(
        self,
        *,
        per_account: int,
        per_address: int,
        base: int,
        cap: int,
        clock: Callable[[], float],
        max_keys: int = 100_000,
    ) -> None:
        self.accounts = FailureCounter(
            max_failures=per_account, base=base, cap=cap, clock=clock, max_keys=max_keys
        )
        self.addresses = FailureCounter(
            max_failures=per_address, base=base, cap=cap, clock=clock, max_keys=max_keys
        )

    @staticmethod
    def _account(email: str) -> str:
        return email.strip().lower()

    def check(self, email: str, address: str) -> None:
        """Raise TooManyAttempts while the account or the address is locked out."""
        wait = max(
            self.accounts.retry_after(self._account(email)), self.addresses.retry_after(address)
        )
        if wait > 0:
            raise TooManyAttempts("too many failed logins; try again later", retry_after=wait)

    def failed(self, email: str, address: str) -> None:
        self.accounts.failed(self._account(email))
        self.addresses.failed(address)

    def succeeded(self, email: str) -> None:
        self.accounts.clear(self._account(email))
