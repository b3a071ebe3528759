"""Failed logins in Redis, shared by every gateway: one hash per account and per address.

Each key (`<prefix>login:account:<digest>`, `<prefix>login:address:<digest>`: digests, so no
email or address appears in a key name) holds the count `n`, the time of the latest failure
`last`, and the end of its lockout `until`, in milliseconds of the gateways' clock (`clock`,
wall time, passed to each script, as in the memory tables). `failed` counts against the
account and the address in one Lua script, so two gateways counting at once never lose a
failure and the lockout is decided on the count both saw. A key's Redis TTL is the quiet
period (or its lockout, if longer): the count outlives no quiet period, and nothing else
removes it but a success.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

from common.stores.login_failures import LockoutPolicy
from common.stores.redis_link import RedisLink

_FAILED = """
-- KEYS: account, address. ARGV: now (ms), then per key: max failures, base, cap, quiet (ms)
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local at = 2 + (i - 1) * 4
  local max, base = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local cap, quiet = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local e = redis.call('HMGET', key, 'n', 'last', 'until')
  local n, last, locked = tonumber(e[1]) or 0, tonumber(e[2]), tonumber(e[3]) or 0
  if last == nil or now - last > quiet then
    n, locked = 0, 0
  end
  n = n + 1
  local excess = n - max
  if excess >= 0 then
    locked = now + math.min(cap, base * 2 ^ math.min(excess, 32))
  end
  redis.call('HSET', key, 'n', n, 'last', now, 'until', locked)
  redis.call('PEXPIRE', key, math.max(quiet, locked - now) + 1)
end
return 1
"""

_RETRY_AFTER = """
-- KEYS: account, address. ARGV: now (ms). The longer of the two waits, in ms.
local now, wait = tonumber(ARGV[1]), 0
for _, key in ipairs(KEYS) do
  local locked = tonumber(redis.call('HGET', key, 'until') or 0)
  if locked - now > wait then wait = locked - now end
end
return wait
"""


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)


class RedisLoginFailures:
    def __init__(
        self,
        link: RedisLink,
        *,
        prefix: str,
        accounts: LockoutPolicy,
        addresses: LockoutPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._link = link
        self._accounts = f"{prefix}login:account:"
        self._addresses = f"{prefix}login:address:"
        self._policies = [
            value
            for policy in (accounts, addresses)
            for value in (
                policy.max_failures,
                _ms(policy.base),
                _ms(policy.cap),
                _ms(policy.quiet),
            )
        ]
        self._clock = clock
        self._failed = link.script(_FAILED)
        self._retry_after = link.script(_RETRY_AFTER)

    def __repr__(self) -> str:
        return f"RedisLoginFailures({self._accounts!r}, {self._addresses!r})"

    async def start(self) -> None:
        await self._link.start()

    async def close(self) -> None:
        await self._link.close()

    def _keys(self, account: str, address: str) -> list[str]:
        return [self._accounts + _digest(account), self._addresses + _digest(address)]

    def _now(self) -> int:
        return math.floor(self._clock() * 1000)

    async def retry_after(self, account: str, address: str) -> int:
        wait = await self._link.run(
            self._retry_after(keys=self._keys(account, address), args=[self._now()])
        )
        return math.ceil(int(wait) / 1000)

    async def failed(self, account: str, address: str) -> None:
        await self._link.run(
            self._failed(keys=self._keys(account, address), args=[self._now(), *self._policies])
        )

    async def succeeded(self, account: str) -> None:
        await self._link.run(self._link.client.delete(self._accounts + _digest(account)))


def _digest(value: str) -> str:
    return hashlib.blake2b(value.encode(), digest_size=16).hexdigest()
