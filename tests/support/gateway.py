"""Driving a gateway under test: readiness polling and one timed sync request."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.connections import ConnectionLimits, GuardedSite
from gateway.keys import IN_FLIGHT, METRICS, SETTINGS

Client = TestClient[web.Request, web.Application]


async def wait_readiness(client: Client, status: int, *, within: float) -> float:
    """Poll /readyz until it answers `status`; return how long that took."""
    started = time.monotonic()
    while (await client.get("/readyz")).status != status:
        if time.monotonic() - started > within:
            raise AssertionError(f"/readyz never answered {status} within {within:.0f}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@dataclass(frozen=True, slots=True)
class SyncResult:
    status: int
    elapsed: float
    event_id: str | None
    retry_after: str | None
    replayed: bool


async def timed_sync(client: Client, *, idempotency_key: str | None = None) -> SyncResult:
    headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
    started = time.monotonic()
    response = await client.post("/api/sync", json={"data": "fault"}, headers=headers)
    body = await response.json()
    elapsed = time.monotonic() - started
    return SyncResult(
        status=response.status,
        elapsed=elapsed,
        event_id=body.get("id") if response.status == 202 else None,
        retry_after=response.headers.get("Retry-After"),
        replayed=response.headers.get("Idempotent-Replayed") == "true",
    )


async def wait_ready_at(base_url: str, *, within: float) -> None:
    """Poll GET {base_url}/readyz until it answers 200: for a gateway in another process or
    thread. A refused connection counts as not ready yet (the process may still be starting)."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{base_url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            assert time.monotonic() < deadline, f"{base_url} never became ready"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[tuple[str, int]]:
    """`app` served as the gateway serves it (an AppRunner and the gateway's own site, with
    the connection limits of its settings: gateway/__main__.py), on a free loopback port:
    (host, port). aiohttp's test server differs in two ways that matter to some tests: it
    cancels a handler whose client went away, where the gateway's server lets the handler run
    on; and it has no header deadline or connection cap."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=75.0)
    await runner.setup()
    try:
        limits = ConnectionLimits.from_settings(app[SETTINGS])
        site = GuardedSite(
            runner, "127.0.0.1", 0, limits=limits, metrics=app[METRICS], in_flight=app[IN_FLIGHT]
        )
        await site.start()
        host, port = runner.addresses[0][:2]
        yield str(host), int(port)
    finally:
        await runner.cleanup()
