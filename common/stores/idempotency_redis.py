"""The idempotency store in Redis, shared by every gateway: one hash per scope, Lua for each step.

Each step is one Lua script, so it reads and writes a scope's entry atomically: no gateway ever
decides on a value that another changed in between. An entry (`<prefix>idem:<digest>`, the
digest of owner and key, so no email or key appears in a key name) holds the fingerprint `fp`,
the state `st` (`f` held, `a` attempted, `c` confirmed), the outcome `out`, the attempt `att`,
and the logical expiry `exp`; a held entry also its holder's token `tok` and `lease`.

- `claim` takes a scope that is new, expired, attempted, or held past its lease, writing a new
  token and lease; it answers busy while another holder's lease runs, and never takes a
  confirmed scope.
- `record` keeps the event before it is published, only while the token is still the holder's.
  A gateway that dies mid-publish leaves the scope held with that event recorded: once the
  lease runs out, the next claim gets the event back and publishes it again, the same id.
- `confirm` and `fail` settle only the holder's own claim. A holder that was taken over (its
  lease ran out while it was still working) changes nothing: the gateway that took over
  publishes the same recorded event. A holder that lost its claim before recording anything
  is told by `record` and does not publish, so one key never has two event ids.

Times are the gateways' clock (`clock`, wall time), passed to each script, so the gateways'
clocks must agree to well within the lease and the window (NTP does). A skewed clock can take
a lease over early; that costs a second copy of the same event, never a second id. Each entry
also gets a Redis TTL (the window, or the lease if longer) that removes what nobody reads.

The failed attempts share one byte budget across all gateways: a sorted set of the attempted
entries by failure time, and a counter of their bytes. `fail` adds to both and forgets the
expired attempts, then the oldest, until the attempts fit; a retry of a forgotten attempt
publishes a new event, as a request without a key would. An attempt counts only while nobody
is retrying it, and an attempt recorded before a publish counts not at all (the confirm drops
it; only a gateway that died mid-publish leaves one, until its window ends). There is no key
count: confirmed keys are bounded by the window and Redis's `maxmemory`. Redis must not evict
these keys (`maxmemory-policy noeviction`, its default): when full, it refuses writes, which
answer 503, whereas an evicted claim could let a second event id through. The scripts touch
the budget's keys beside the entry, so this store needs a single Redis (with replicas if you
like), not Redis Cluster.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Callable

from common.stores.idempotency import Busy, Claim, Confirmed, Failed, FingerprintMismatch, Scope
from common.stores.redis_link import RedisLink

# Shared by the scripts that change the budget: drop one attempt's member from the index.
# A member is "<bytes>|<token>|<entry key>": unique per failure, and it names its own size,
# so an entry that Redis expired on its own is still accounted for when its member goes.
_UNINDEX = """
local function unindex(member)
  if member and redis.call('ZREM', KEYS[2], member) == 1 then
    redis.call('DECRBY', KEYS[3], tonumber(string.match(member, '^(%d+)|')))
  end
end
"""

_CLAIM = (
    _UNINDEX
    + """
-- KEYS: entry, attempts index, attempt bytes. ARGV: fingerprint, token, now, lease, window (ms)
local now, lease, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local e = redis.call('HMGET', KEYS[1], 'fp', 'st', 'out', 'att', 'lease', 'exp', 'm')
if e[1] and tonumber(e[6]) <= now then
  unindex(e[7])
  redis.call('DEL', KEYS[1])
  e[1] = false
end
if not e[1] then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'st', 'f', 'tok', ARGV[2],
             'lease', now + lease, 'exp', now + window)
  redis.call('PEXPIRE', KEYS[1], window)
  return {'claim'}
end
if e[1] ~= ARGV[1] then return {'mismatch'} end
if e[2] == 'c' then return {'confirmed', e[3]} end
if e[2] == 'f' and tonumber(e[5]) > now then return {'busy'} end
-- Attempted, or held by a gateway whose lease ran out: take it over, with its attempt. The
-- entry may not expire while it is held.
unindex(e[7])
local exp = math.max(tonumber(e[6]), now + lease)
redis.call('HSET', KEYS[1], 'st', 'f', 'tok', ARGV[2], 'lease', now + lease, 'exp', exp)
redis.call('HDEL', KEYS[1], 'm')
redis.call('PEXPIRE', KEYS[1], exp - now)
if e[4] then return {'claim', e[4]} end
return {'claim'}
"""
)

_RECORD = """
-- KEYS: entry. ARGV: token, attempt
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'att', ARGV[2])
return 1
"""

_CONFIRM = """
-- KEYS: entry. ARGV: token, outcome, now, window (ms)
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[1] then return 0 end
local now, window = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'st', 'c', 'out', ARGV[2], 'exp', now + window)
redis.call('HDEL', KEYS[1], 'att', 'tok', 'lease')
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""

_FAIL = """
-- KEYS: entry, attempts index, attempt bytes. ARGV: token, attempt, now, window (ms), budget
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[1] then return 0 end
local now, window, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local member = #ARGV[2] .. '|' .. ARGV[1] .. '|' .. KEYS[1]
redis.call('HSET', KEYS[1], 'st', 'a', 'att', ARGV[2], 'exp', now + window, 'm', member)
redis.call('HDEL', KEYS[1], 'tok', 'lease')
redis.call('PEXPIRE', KEYS[1], window)
redis.call('ZADD', KEYS[2], now, member)
local total = redis.call('INCRBY', KEYS[3], #ARGV[2])
local function drop(m)
  redis.call('ZREM', KEYS[2], m)
  total = redis.call('DECRBY', KEYS[3], tonumber(string.match(m, '^(%d+)|')))
  local entry = string.match(m, '^%d+|[^|]*|(.*)$')
  if redis.call('HGET', entry, 'm') == m then redis.call('DEL', entry) end
end
-- The expired attempts first, then the oldest, until the attempts fit the budget.
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - window)) do drop(m) end
while total > budget do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then
    redis.call('SET', KEYS[3], 0)
    break
  end
  drop(oldest)
end
return 1
"""


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)


class RedisIdempotencyStore:
    def __init__(
        self,
        link: RedisLink,
        *,
        prefix: str,
        window: float,
        lease: float,
        max_attempt_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`lease`: how long a claim holds off other gateways, at least the holder's publish
        deadline plus its Redis calls; past it, the scope can be taken over."""
        self._link = link
        self._prefix = f"{prefix}idem:"
        self._index = f"{prefix}idem-attempts"
        self._bytes = f"{prefix}idem-attempt-bytes"
        self._window = _ms(window)
        self._lease = _ms(lease)
        self._max_attempt_bytes = max_attempt_bytes
        self._clock = clock
        self._claim = link.script(_CLAIM)
        self._record = link.script(_RECORD)
        self._confirm = link.script(_CONFIRM)
        self._fail = link.script(_FAIL)

    def __repr__(self) -> str:
        return f"RedisIdempotencyStore({self._prefix!r})"

    async def start(self) -> None:
        await self._link.start()

    async def close(self) -> None:
        await self._link.close()

    def _key(self, scope: Scope) -> str:
        owner, key = scope
        # Length-prefixed, so no owner and key pair can spell another's.
        digest = hashlib.blake2b(f"{len(owner)}:{owner}:{key}".encode(), digest_size=16)
        return self._prefix + digest.hexdigest()

    def _now(self) -> int:
        return _ms(self._clock())

    async def claim(self, scope: Scope, fingerprint: bytes) -> Claim | Confirmed | Busy:
        token = uuid.uuid4().hex
        answer = await self._link.run(
            self._claim(
                keys=[self._key(scope), self._index, self._bytes],
                args=[fingerprint, token, self._now(), self._lease, self._window],
            )
        )
        match answer:
            case [b"claim"]:
                return Claim(scope, fingerprint, None, token)
            case [b"claim", bytes(attempt)]:
                return Claim(scope, fingerprint, attempt, token)
            case [b"confirmed", bytes(outcome)]:
                return Confirmed(outcome.decode())
            case [b"busy"]:
                return Busy()
            case [b"mismatch"]:
                raise FingerprintMismatch
        raise AssertionError(f"unexpected answer from the claim script: {answer!r}")

    async def peek(self, scope: Scope, fingerprint: bytes) -> Confirmed | Failed | Busy | None:
        # Bytes: the client does not decode answers (decode_responses is off).
        fields: list[bytes | str | None] = await self._link.run(
            self._link.client.hmget(self._key(scope), ["fp", "st", "out", "lease", "exp"])
        )
        fp, state, outcome, lease, expires = fields
        now = self._now()
        if fp is None or expires is None or int(expires) <= now:
            return None
        if fp != fingerprint:
            raise FingerprintMismatch
        if state == b"c" and isinstance(outcome, bytes):
            return Confirmed(outcome.decode())
        if state == b"a":
            return Failed()
        return Busy() if lease is not None and int(lease) > now else None

    async def record(self, claim: Claim, attempt: bytes) -> bool:
        done = await self._link.run(
            self._record(keys=[self._key(claim.scope)], args=[_token(claim), attempt])
        )
        return bool(done)

    async def confirm(self, claim: Claim, outcome: str) -> bool:
        done = await self._link.run(
            self._confirm(
                keys=[self._key(claim.scope)],
                args=[_token(claim), outcome, self._now(), self._window],
            )
        )
        return bool(done)

    async def fail(self, claim: Claim, attempt: bytes) -> bool:
        done = await self._link.run(
            self._fail(
                keys=[self._key(claim.scope), self._index, self._bytes],
                args=[_token(claim), attempt, self._now(), self._window, self._max_attempt_bytes],
            )
        )
        return bool(done)


def _token(claim: Claim) -> str:
    if claim.token is None:
        raise ValueError("a claim from another store")
    return claim.token
