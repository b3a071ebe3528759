"""Connection-level limits that aiohttp has no setting for: a deadline on each request's line
and headers, and a cap on open connections.

aiohttp's server bounds an idle keep-alive connection (75 s) but not one that is sending a
request: a client that sends a header line every few seconds (slowloris) keeps its socket,
and one file descriptor, for as long as it likes. So each connection's protocol is wrapped:
`GuardedConnection` passes every event through to aiohttp's own `RequestHandler` unchanged,
and adds a timer that runs from the connection's opening (for its first request), or from the
first byte after the previous request (for the next ones), until the app starts handling the
request (`connection_middleware`, the outermost middleware, says so). A timer that fires
closes the connection after a 408. Beyond `max_connections` open ones, a new connection is
answered a canned 503 and closed at once: no RequestHandler, no parser, no task.

A request takes its place among the SYNCGATE_MAX_IN_FLIGHT in flight as soon as its first
bytes hold all of its headers (they usually do); when there is no place, it is answered the
same way (503, Retry-After, and the connection closed) before aiohttp parses it. Counting
there matters: in one turn of the event loop aiohttp parses every request that came in, and
only then do their handlers start, so a burst of 4,000 went past a count kept by handlers, and
each refusal then cost a whole trip through aiohttp (about 1 ms each, under load on the
2-core machine). A request whose headers come in pieces (a slow client must not hold a place)
is counted when its handling starts, by the shedding middleware (gateway/shedding.py),
through `admit`.

The wrapper uses only asyncio's protocol interface and aiohttp's public `BaseSite` and
`AppRunner.server` (the protocol factory), so it does not depend on aiohttp's internals.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
from dataclasses import dataclass
from typing import cast

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.deadlines import NOT_COUNTED, InFlight
from gateway.metrics import GatewayMetrics
from gateway.middlewares import error_body
from gateway.settings import GatewaySettings

log = logging.getLogger("syncgate.gateway.connections")

# File descriptors a process needs besides its client connections: the broker, Redis, the run
# store, log files, the listening sockets, the event loop's own.
_FD_RESERVE = 256


def _canned(status: str, code: str, message: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, in the JSON error shape."""
    body = orjson.dumps(error_body(code, message))
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


# The probes and /metrics are never shed (gateway/shedding.py).
_PROBES = tuple(f"GET {path} ".encode("ascii") for path in sorted(NOT_COUNTED))

HEADER_TIMEOUT_ANSWER = _canned(
    "408 Request Timeout",
    "request_timeout",
    "the request line and headers did not arrive in time",
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout: float
    max_connections: int
    retry_after: int

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ConnectionLimits:
        return cls(
            header_timeout=settings.header_timeout,
            max_connections=settings.max_connections,
            retry_after=settings.retry_after,
        )


class Phase(enum.Enum):
    HEADERS = "headers"
    """Waiting for a request's line and headers: the header timer runs."""
    HANDLING = "handling"
    """The app is handling a request (the body deadline is the app's: gateway/deadlines.py)."""
    IDLE = "idle"
    """Between requests: aiohttp's keep-alive timeout applies."""


class ConnectionGuard:
    """The protocol factory of one listening site: it counts the open connections and makes
    each one's `GuardedConnection` around aiohttp's handler."""

    def __init__(
        self,
        server: web.Server,
        limits: ConnectionLimits,
        metrics: GatewayMetrics,
        in_flight: InFlight,
    ) -> None:
        self.server = server
        self.limits = limits
        self.metrics = metrics
        self.in_flight = in_flight
        self.open = 0
        retry_after = f"Retry-After: {limits.retry_after}\r\n"
        self.refused_answer = _canned(
            "503 Service Unavailable",
            "overloaded",
            "the gateway has too many connections open; retry later",
            retry_after,
        )
        self.shed_answer = _canned(
            "503 Service Unavailable",
            "overloaded",
            "the gateway is at its limit of requests in flight; retry later",
            retry_after,
        )

    def __call__(self) -> GuardedConnection:
        return GuardedConnection(self)


class GuardedConnection(asyncio.Protocol):
    """aiohttp's RequestHandler for one connection, with a header deadline around it."""

    __slots__ = (
        "_fresh",
        "_guard",
        "_holding",
        "_inner",
        "_phase",
        "_straggled",
        "_timer",
        "_transport",
        "timed_out",
    )

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._phase = Phase.HEADERS
        # Bytes that came while a request was handled: a straggling body, or the start of a
        # pipelined request, whose header time then starts when the request ends.
        self._straggled = False
        # No byte of the next request has come yet: the moment to shed it, unparsed.
        self._fresh = True
        # This connection's request holds one of the places in flight.
        self._holding = False
        self.timed_out = False

    # asyncio's protocol interface, passed through to aiohttp's handler.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport; uvloop's is not an asyncio.Transport subclass, so no isinstance.
        transport = cast(asyncio.Transport, transport)
        guard = self._guard
        if guard.open >= guard.limits.max_connections:
            guard.metrics.connections_refused.inc()
            transport.write(guard.refused_answer)
            transport.close()
            return
        guard.open += 1
        guard.metrics.open_connections.inc()
        self._transport = transport
        # aiohttp's handler (and its task) is made at the first byte: a connection that is
        # shed before it, or never sends one, costs none.
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # a refused or shed connection, already closing
        if self._fresh:
            self._fresh = False
            in_flight = self._guard.in_flight
            # Only a hint for the count, not framing: aiohttp still parses the request.
            if b"\r\n\r\n" in data and not data.startswith(_PROBES):
                if not in_flight.try_enter():
                    self._shed()
                    return
                self._holding = True
        if self._inner is None:
            self._inner = self._guard.server()
            self._inner.connection_made(transport)
        if self._phase is Phase.IDLE:
            self._phase = Phase.HEADERS
            self._start_header_timer()
        elif self._phase is Phase.HANDLING:
            self._straggled = True
        # aiohttp may start handling the request inside this call (eager tasks, Python 3.12+),
        # so the phase is set before.
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._inner is None else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.release()
        if self._transport is None:
            return  # refused: never counted
        self._transport = None
        self._guard.open -= 1
        self._guard.metrics.open_connections.dec()
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # What the app tells the connection (connection_middleware).

    def request_started(self) -> bool:
        """The request's headers are in; False if its connection timed out already."""
        self._cancel_timer()
        self._phase = Phase.HANDLING
        self._straggled = False
        return not self.timed_out

    def request_finished(self) -> None:
        self.release()
        if self._phase is not Phase.HANDLING:
            return
        if self._straggled:
            self._phase = Phase.HEADERS
            self._start_header_timer()
        else:
            self._phase = Phase.IDLE
            self._fresh = True

    def admit(self) -> bool:
        """Whether the request being handled may go on: it has its place in flight already,
        or takes one now; False when there is none (503)."""
        if not self._holding:
            self._holding = self._guard.in_flight.try_enter()
        return self._holding

    def release(self) -> None:
        if self._holding:
            self._holding = False
            self._guard.in_flight.leave()

    def _shed(self) -> None:
        self._guard.metrics.shed_by_reason["in_flight"].inc()
        self._close_after(self._guard.shed_answer)

    def _close_after(self, answer: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(answer)
        # A client that does not read would keep the answer, and the socket, in our buffer.
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    # The header deadline.

    def _start_header_timer(self) -> None:
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.limits.header_timeout, self._headers_late)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_late(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing() or self._phase is not Phase.HEADERS:
            return
        self.timed_out = True
        self._guard.metrics.timeouts_by_phase["headers"].inc()
        log.info(
            "closed a connection from %s: no complete request headers within %s s",
            _peer(transport),
            self._guard.limits.header_timeout,
        )
        self._close_after(HEADER_TIMEOUT_ANSWER)


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "unknown"


def guarded_connection(request: web.BaseRequest) -> GuardedConnection | None:
    transport = request.transport
    protocol = None if transport is None else transport.get_protocol()
    return protocol if isinstance(protocol, GuardedConnection) else None


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: tells the connection its request's headers are in, and when it is done.

    A request whose connection timed out in the instant before it started is not handled:
    its client was told 408 already, and the connection is closed.
    """
    connection = guarded_connection(request)
    if connection is None:  # served by another server (aiohttp's test server)
        return await handler(request)
    if not connection.request_started():
        return web.Response(status=408)
    try:
        return await handler(request)
    finally:
        connection.request_finished()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a `ConnectionGuard`: aiohttp's TCPSite, with
    the guard as the protocol factory."""

    __slots__ = ("_guard_limits", "_host", "_in_flight", "_metrics", "_port", "_reuse_port")

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        limits: ConnectionLimits,
        metrics: GatewayMetrics,
        in_flight: InFlight,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner)
        self._in_flight = in_flight
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._guard_limits = limits
        self._metrics = metrics

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None, "the runner is set up first"
        guard = ConnectionGuard(server, self._guard_limits, self._metrics, self._in_flight)
        loop = asyncio.get_running_loop()
        # The accept queue as long as the cap, as HAProxy's backlog defaults to its maxconn
        # (the kernel cuts it to net.core.somaxconn); aiohttp's is 128. A connection that
        # finds the queue full waits for its SYN's retry, 1 s, then 3 s, then 7 s: shed
        # clients reconnect, and with a short queue a burst of them waited seconds for it.
        self._server = await loop.create_server(
            guard,
            self._host,
            self._port,
            backlog=self._guard_limits.max_connections,
            reuse_port=self._reuse_port or None,
        )


def fit_descriptor_limit(max_connections: int) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit (up to the hard one) so `max_connections`
    fit with room to spare; the number of connections that fit, which is less than asked (with
    a WARNING) only when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + _FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = raised
    if soft != resource.RLIM_INFINITY and soft < wanted:
        fitting = max(1, soft - _FD_RESERVE)
        log.warning(
            "RLIMIT_NOFILE allows %d open files: at most %d connections, not"
            " SYNCGATE_MAX_CONNECTIONS=%d; raise the hard limit (ulimit -Hn, LimitNOFILE=)",
            soft,
            fitting,
            max_connections,
        )
        return fitting
    return max_connections
