"""A TCP proxy on 127.0.0.1 that can stop forwarding without closing anything.

That is a half-open link as a client sees it: the socket stays connected, writes succeed
(into buffers), and nothing ever comes back. `pause()` holds the bytes in both directions;
`resume()` lets them through again, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from yarl import URL

_CHUNK = 64 * 1024


class PausableTcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self.connections = 0

    async def start(self) -> int:
        """Listen on an ephemeral port of 127.0.0.1 and return it."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.close()
            return
        for reader, writer in (
            (client_reader, upstream_writer),
            (upstream_reader, client_writer),
        ):
            pump = asyncio.create_task(self._pump(reader, writer))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(_CHUNK):
                await self._flowing.wait()
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def proxy_in_front_of(amqp_url: str) -> AsyncIterator[tuple[PausableTcpProxy, str]]:
    """A proxy to this broker, and the same AMQP URL through it; closed on the way out."""
    broker = URL(amqp_url)
    proxy = PausableTcpProxy(broker.host or "127.0.0.1", broker.port or 5672)
    port = await proxy.start()
    try:
        yield proxy, str(broker.with_host("127.0.0.1").with_port(port))
    finally:
        await proxy.close()
