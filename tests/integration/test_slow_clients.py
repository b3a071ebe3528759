"""Slow clients get deadlines (issue 20 §3): a request's line and headers, and its body, each
have one, and a process keeps at most SYNCGATE_MAX_CONNECTIONS connections open.

The slowloris test runs a real gateway process on the real broker and counts its open file
descriptors in /proc; the cap and body tests serve the real app on a real TCP port, as the
gateway serves it (tests/support/gateway.py `serving`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bench.load import Credentials, sign_in
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from tests.conftest import EMAIL, PASSWORD, BrokerNames
from tests.support.app import gateway_app
from tests.support.fakes import FakePublisher
from tests.support.gateway import serving
from tests.support.gateway_process import (
    gateway_env,
    gateway_process,
    raise_descriptor_limit,
    wait_for_descriptors,
)

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 2.0
SLOW_SOCKETS = 1_000
# How late a close may come, past its deadline, on this loaded 2-core machine: the test's own
# loop runs 1,000 sockets and the load beside them.
SLACK = 3.0


@dataclass(frozen=True, slots=True)
class SlowOutcome:
    open_for: float | None  # None: still open when the test gave up on it
    answer: bytes


async def slowloris(host: str, port: int, give_up: float) -> SlowOutcome:
    """A request line, then one header line a second, never the blank line that ends them;
    until the gateway closes the connection."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(host, port)
    opened = loop.time()
    writer.write(b"POST /api/sync HTTP/1.1\r\nHost: gateway\r\n")

    async def drip() -> None:
        for n in range(10_000):
            await asyncio.sleep(1.0)
            writer.write(b"X-Slow-%d: still typing\r\n" % n)
            await writer.drain()

    dripping = asyncio.create_task(drip())
    answer = b""
    open_for: float | None = None
    try:
        async with asyncio.timeout(give_up):
            while chunk := await reader.read(4096):
                answer += chunk
        open_for = loop.time() - opened
    except ConnectionError:
        open_for = loop.time() - opened
    except TimeoutError:
        pass
    finally:
        dripping.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await dripping
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return SlowOutcome(open_for, answer)


async def post_syncs(base_url: str, credentials: Credentials, stop: asyncio.Event) -> list[int]:
    """Signed-in syncs, one after another on one keep-alive connection, until `stop`."""
    headers = {"Cookie": credentials.cookie, "X-CSRF-Token": credentials.csrf_token}
    statuses: list[int] = []
    async with aiohttp.ClientSession(headers=headers) as http:
        while not stop.is_set():
            async with http.post(f"{base_url}/api/sync", json={"data": "normal"}) as response:
                await response.read()
                statuses.append(response.status)
            await asyncio.sleep(0.02)
    return statuses


async def read_to_the_end(reader: asyncio.StreamReader, *, within: float) -> bytes:
    """What the gateway sent until it closed the connection (a reset, after a close with the
    client's bytes unread, ends it too)."""
    answer = b""
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(4096):
                answer += chunk
    return answer


def levels(log_path: Path) -> list[str]:
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            found.append(json.loads(line)["level"])
    return found


async def test_a_thousand_slowloris_sockets_are_closed_at_their_deadline_while_others_are_served(
    make_settings: Callable[..., GatewaySettings], names: BrokerNames, tmp_path: Path
) -> None:
    raise_descriptor_limit(4 * SLOW_SOCKETS)
    env = gateway_env(make_settings(), names, header_timeout=str(HEADER_TIMEOUT), log_format="json")
    log_path = tmp_path / "gateway.log"
    async with gateway_process(env, log_path) as gateway:
        credentials = await sign_in(gateway.base_url, EMAIL, PASSWORD)
        await asyncio.sleep(0.5)  # the sign-in's connection closes on the gateway's side
        baseline = gateway.open_descriptors()

        stop = asyncio.Event()
        normal = [
            asyncio.create_task(post_syncs(gateway.base_url, credentials, stop)) for _ in range(4)
        ]
        outcomes = await asyncio.gather(
            *(
                slowloris("127.0.0.1", gateway.port, give_up=HEADER_TIMEOUT + 15)
                for _ in range(SLOW_SOCKETS)
            )
        )
        stop.set()
        statuses = [status for batch in await asyncio.gather(*normal) for status in batch]
        after = await wait_for_descriptors(gateway, baseline, within=10)

    still_open = [o for o in outcomes if o.open_for is None]
    late = [o.open_for for o in outcomes if o.open_for is not None]
    answered_408 = sum(o.answer.startswith(b"HTTP/1.1 408 ") for o in outcomes)
    print(
        f"\nslowloris: {SLOW_SOCKETS} sockets, header timeout {HEADER_TIMEOUT} s: closed after"
        f" {min(late, default=0):.2f}-{max(late, default=0):.2f} s, {answered_408} answered 408,"
        f" {len(still_open)} still open; normal syncs {len(statuses)}, 202s"
        f" {statuses.count(202)}; gateway fds: baseline {baseline}, after {after}"
    )
    assert not still_open, f"{len(still_open)} slow sockets were never closed"
    assert max(late) <= HEADER_TIMEOUT + SLACK, f"a slow socket stayed open {max(late):.2f} s"
    # Each was closed by its deadline, not for another reason: after the 408, or (when the
    # client's next header line crossed the close) reset before it read it.
    assert all(o.answer.startswith(b"HTTP/1.1 408 ") or not o.answer for o in outcomes)
    assert answered_408 > 0
    assert statuses, "no normal request was answered"
    assert set(statuses) == {202}, f"normal requests answered {set(statuses)}"
    assert after <= baseline, f"the gateway holds {after} descriptors, {baseline} before"
    found = levels(log_path)
    assert "ERROR" not in found
    assert "CRITICAL" not in found


async def test_connections_beyond_the_cap_are_answered_503_closed_and_counted(
    make_settings: Callable[..., GatewaySettings],
) -> None:
    cap, extra = 20, 5
    metrics = GatewayMetrics()
    app = gateway_app(make_settings(max_connections=cap), metrics=metrics)
    async with serving(app) as (host, port):
        held = [await asyncio.open_connection(host, port) for _ in range(cap)]
        await asyncio.sleep(0.2)  # every one is accepted
        refused = []
        for _ in range(extra):
            reader, writer = await asyncio.open_connection(host, port)
            refused.append(await read_to_the_end(reader, within=5))
            writer.close()
        assert metrics.connections_refused._value.get() == extra
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.2)
        # Room again: a connection is served.
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/healthz") as response,
        ):
            assert response.status == 200
            metrics_text = await (await http.get(f"http://{host}:{port}/metrics")).text()
    for answer in refused:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nRetry-After: " in head
        assert json.loads(body)["error"]["code"] == "overloaded"
    assert f"syncgate_connections_refused_total {float(extra)}" in metrics_text


async def test_a_body_slower_than_its_deadline_is_answered_408_and_nothing_is_published(
    make_settings: Callable[..., GatewaySettings],
) -> None:
    body_timeout = 1.0
    publisher, metrics = FakePublisher(), GatewayMetrics()
    settings = make_settings(body_timeout=body_timeout)
    app = gateway_app(settings, publisher=publisher, metrics=metrics)
    async with serving(app) as (host, port):
        credentials = await sign_in(f"http://{host}:{port}", EMAIL, PASSWORD)
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(host, port)
        body = b'{"data": "' + b"x" * 200 + b'"}'
        writer.write(
            b"POST /api/sync HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nCookie: %s\r\nX-CSRF-Token: %s\r\n\r\n"
            % (len(body), credentials.cookie.encode(), credentials.csrf_token.encode())
        )
        writer.write(body[:20])  # and the rest, one byte a second: too slow
        sent = loop.time()

        async def drip() -> None:
            for byte in body[20:]:
                await asyncio.sleep(0.7)
                writer.write(bytes([byte]))
                await writer.drain()

        dripping = asyncio.create_task(drip())
        try:
            answer = await read_to_the_end(reader, within=body_timeout + 5)
            closed_after = loop.time() - sent
        finally:
            dripping.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await dripping
            writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = head.split(b" ")[1].decode()
    print(f"\nslow body: answered {status}, closed after {closed_after:.2f} s")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(payload)["error"]["code"] == "request_timeout"
    assert closed_after < body_timeout + SLACK
    assert publisher.published == []
    assert metrics.timeouts_by_phase["body"]._value.get() == 1
