"""Redis for tests: a key prefix of its own on the machine's Redis, and a redis-server of one's
own for the tests that stop it.

The machine's Redis (127.0.0.1:6379, or SYNCGATE_TEST_REDIS_URL) is shared with everyone: a
test writes only under its own prefix and deletes every key under it afterwards, and never
stops or reconfigures it. A test that stops Redis starts `OwnRedis` instead: a redis-server
on a free port in a temp dir, that keeps nothing on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import redis.asyncio
from pydantic import SecretStr

from common.stores.backends import RedisOptions, open_idempotency_store
from common.stores.idempotency import IdempotencyStore
from common.stores.idempotency_redis import RedisIdempotencyStore
from common.stores.login_failures import LockoutPolicy
from common.stores.login_failures_redis import RedisLoginFailures
from gateway.settings import GatewaySettings

REDIS_URL = os.environ.get("SYNCGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
TIMEOUT = 0.5


def unique_prefix() -> str:
    return f"syncgate-test:{uuid.uuid4().hex[:12]}:"


async def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under `prefix`; how many there were."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


async def keys_under(url: str, prefix: str) -> list[bytes]:
    client = redis.asyncio.Redis.from_url(url)
    try:
        return sorted([key async for key in client.scan_iter(match=f"{prefix}*", count=1000)])
    finally:
        await client.aclose()


def options(url: str, prefix: str, *, timeout: float = TIMEOUT) -> RedisOptions:
    return RedisOptions(url=SecretStr(url), prefix=prefix, timeout=timeout, max_connections=16)


def redis_idempotency(
    url: str,
    prefix: str,
    *,
    window: float = 60,
    lease: float = 5,
    max_attempt_bytes: int = 1024 * 1024,
    clock: Callable[[], float] | None = None,
) -> RedisIdempotencyStore:
    link = options(url, prefix).link("syncgate-test-idempotency")
    if clock is None:
        return RedisIdempotencyStore(
            link, prefix=prefix, window=window, lease=lease, max_attempt_bytes=max_attempt_bytes
        )
    return RedisIdempotencyStore(
        link,
        prefix=prefix,
        window=window,
        lease=lease,
        max_attempt_bytes=max_attempt_bytes,
        clock=clock,
    )


def redis_login_failures(
    url: str,
    prefix: str,
    *,
    accounts: LockoutPolicy,
    addresses: LockoutPolicy,
    clock: Callable[[], float],
) -> RedisLoginFailures:
    return RedisLoginFailures(
        options(url, prefix).link("syncgate-test-login-limits"),
        prefix=prefix,
        accounts=accounts,
        addresses=addresses,
        clock=clock,
    )


def gateway_stores_on_redis(
    settings: GatewaySettings, url: str, prefix: str, clock: Callable[[], float]
) -> tuple[IdempotencyStore, RedisLoginFailures]:
    """`gateway_app`'s store arguments for a gateway on this Redis: the idempotency store as
    bootstrap builds it, the login failures on `clock`, like the rest of the app under test."""
    redis_options = options(url, prefix, timeout=settings.redis_timeout)
    idempotency = open_idempotency_store(
        redis_options,
        window=settings.idempotency_window,
        max_keys=settings.idempotency_max_keys,
        max_attempt_bytes=settings.idempotency_max_attempt_bytes,
        publish_deadline=settings.publish_deadline,
    )
    login_failures = RedisLoginFailures(
        redis_options.link("syncgate-test-login-limits"),
        prefix=prefix,
        accounts=settings.account_lockout,
        addresses=settings.address_lockout,
        clock=clock,
    )
    return idempotency, login_failures


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class OwnRedis:
    """A redis-server of this test's own, on a free port: it can be stopped and started again
    on the same port, which the machine's Redis never may."""

    def __init__(self, directory: Path, *, password: str | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.password = password
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            *(("--requirepass", self.password) if self.password else ()),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=0.2)
        try:
            for _ in range(100):
                with contextlib.suppress(redis.exceptions.ConnectionError):
                    if await client.ping():
                        return
                await asyncio.sleep(0.05)
            raise AssertionError(f"redis-server on port {self.port} never answered")
        finally:
            await client.aclose()

    async def stop(self) -> None:
        """kill -9: as a crash, so nothing is flushed or said goodbye."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        self._process = None


@contextlib.asynccontextmanager
async def own_redis(directory: Path, *, password: str | None = None) -> AsyncIterator[OwnRedis]:
    server = OwnRedis(directory, password=password)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
