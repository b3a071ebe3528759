"""Failed logins in one gateway's memory: two bounded tables, per account and per address.

Each table holds at most `max_keys` keys, dropping the least recently failed, so a flood of
made-up emails cannot exhaust memory (it can push out an account's count, though not the
flooding address's). The tables belong to one process: N gateways allow N times the guesses,
and a restart forgets them; `login_failures_redis.py` is the shared backend.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from common.stores.login_failures import LockoutPolicy


@dataclass(slots=True)
class _Failures:
    count: int
    last_at: float
    locked_until: float


class FailureCounter:
    """Failures per key with an exponential lockout (`LockoutPolicy`), in one table."""

    def __init__(
        self,
        *,
        max_failures: int,
        base: int,
        cap: int,
        quiet: int,
        clock: Callable[[], float],
        max_keys: int = 100_000,
    ) -> None:
        self._policy = LockoutPolicy(max_failures=max_failures, base=base, cap=cap, quiet=quiet)
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
        if entry is None or now - entry.last_at > self._policy.quiet:
            entry = _Failures(count=0, last_at=now, locked_until=0.0)
        entry.count += 1
        entry.last_at = now
        lockout = self._policy.lockout(entry.count)
        if lockout:
            entry.locked_until = now + lockout
        self._failures[key] = entry
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)


class MemoryLoginFailures:
    def __init__(
        self,
        *,
        accounts: LockoutPolicy,
        addresses: LockoutPolicy,
        clock: Callable[[], float],
        max_keys: int = 100_000,
    ) -> None:
        self.accounts = _counter(accounts, clock, max_keys)
        self.addresses = _counter(addresses, clock, max_keys)

    def __repr__(self) -> str:
        accounts, addresses = len(self.accounts), len(self.addresses)
        return f"MemoryLoginFailures({accounts} accounts, {addresses} addresses)"

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def retry_after(self, account: str, address: str) -> int:
        return max(self.accounts.retry_after(account), self.addresses.retry_after(address))

    async def failed(self, account: str, address: str) -> None:
        self.accounts.failed(account)
        self.addresses.failed(address)

    async def succeeded(self, account: str) -> None:
        self.accounts.clear(account)


def _counter(policy: LockoutPolicy, clock: Callable[[], float], max_keys: int) -> FailureCounter:
    return FailureCounter(
        max_failures=policy.max_failures,
        base=policy.base,
        cap=policy.cap,
        quiet=policy.quiet,
        clock=clock,
        max_keys=max_keys,
    )
