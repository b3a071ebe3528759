"""One Redis client for one store, with every call bounded and every failure one exception.

Each Redis-backed store owns a `RedisLink`: a pool of at most `max_connections` connections
to `SYNCGATE_REDIS_URL`, opened on first use. Every call through `run` answers within
`timeout` seconds, the wait for a free connection and a reconnect included, or raises
`StoreUnavailable`: a half-open Redis that accepts bytes and never answers costs a request
`timeout`, not the client's patience. redis-py's own retries are off, so that bound holds.

The URL may carry a password: it is read once, here, and never appears in a log line, an error
or a repr. The link logs one WARNING when Redis stops answering and one INFO line when it
answers again, rather than one per failed call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

from pydantic import SecretStr
from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.driver_info import DriverInfo
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from common.stores.errors import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# A new connection costs what its handshake costs, and a burst of requests on a cold pool opens
# many at once: measured, twenty at once stalled the gateway's loop for 0.3 to 0.8 s under load,
# past the call timeout. So the handshake is one round trip (CLIENT SETNAME, for who is who in
# CLIENT LIST; AUTH too with a password): RESP2 needs no HELLO, and no CLIENT SETINFO is sent
# (Redis 7.0 refuses it anyway). The driver info is given rather than looked up: without it
# redis-py reads its version from the package metadata for every new connection, about 8 ms of
# the loop each.
_DRIVER = DriverInfo(name=None, lib_version=None)
_PROTOCOL = 2


class RedisLink:
    def __init__(self, url: SecretStr, *, name: str, timeout: float, max_connections: int) -> None:
        """`name` says which store this is, in logs and errors, and as Redis's client name."""
        secret = url.get_secret_value()
        self._secrets = [part for part in (secret, urlsplit(secret).password) if part]
        self._name = name
        self._timeout = timeout
        try:
            pool = BlockingConnectionPool.from_url(
                secret,
                max_connections=max_connections,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                client_name=name,
                driver_info=_DRIVER,
                protocol=_PROTOCOL,
            )
        except ValueError:
            # Its message may quote a part of the URL.
            raise ValueError(f"{name}: SYNCGATE_REDIS_URL is not a valid Redis URL") from None
        self.client = Redis.from_pool(pool)
        self._answering: bool | None = None

    def __repr__(self) -> str:
        return f"RedisLink({self._name!r})"

    def script(self, source: str) -> AsyncScript:
        """A Lua script, run by its SHA (and loaded again after a Redis restart)."""
        return self.client.register_script(source)

    async def run(self, call: Awaitable[T]) -> T:
        """`call`'s result, or StoreUnavailable within `timeout`."""
        try:
            async with asyncio.timeout(self._timeout):
                result = await call
        except TimeoutError:
            self._failed(f"no answer within {self._timeout:g} s")
        except ResponseError as exc:
            if type(exc) is ResponseError and "script" in str(exc):
                raise  # a bug in one of our scripts, not an outage: a 500, logged as such
            self._failed(f"{type(exc).__name__}: {self._scrub(str(exc))}")
        except (RedisError, OSError) as exc:
            self._failed(f"{type(exc).__name__}: {self._scrub(str(exc))}")
        if self._answering is not True:
            if self._answering is False:
                log.info("%s: Redis answers again", self._name)
            self._answering = True
        return result

    def _failed(self, reason: str) -> NoReturn:
        if self._answering is not False:
            log.warning("%s: Redis is unavailable (%s)", self._name, reason)
            self._answering = False
        # `from None`: redis-py's exception chain is not needed to understand this one.
        raise StoreUnavailable(f"{self._name}: Redis is unavailable ({reason})") from None

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:200]

    async def start(self) -> None:
        """Say at start-up whether Redis answers; a Redis that does not stops nothing."""
        # Logged by run(); each call tries again.
        with contextlib.suppress(StoreUnavailable):
            await self.run(self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()
