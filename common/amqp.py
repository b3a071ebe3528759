"""Opening named broker connections to one node or to any node of a cluster.

SYNCGATE_AMQP_URL holds one URL, or several separated by commas: the nodes of a RabbitMQ
cluster. Every process connects to the first node that answers and, when its node goes away,
to the next one, round robin (`FailoverConnection`). aio-pika's robust connection restores
itself only to the one URL it was given (aio-pika issue #141), so `FailoverConnection` is a
RobustConnection that moves its `url` to the next node each time a connection closes or an
attempt fails. Everything else is aio-pika's own recovery: the robust channels re-declare, on
the new node, the exchanges, queues and bindings declared through them, and restore their
prefetch and consumers; each process thereby re-declares what it owns (common/topology.py).

A URL may carry a password, so nothing here logs or raises a URL: only `host:port`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustChannel
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, ChannelClosed
from aio_pika.robust_connection import RobustConnection
from yarl import URL

from common.amqp_writes import CoalescingTransportFactory

log = logging.getLogger(__name__)

_SCHEMES = {"amqp": 5672, "amqps": 5671}

# The pause after every node of the list has failed once in a row, before the next round.
# Within a round the next node is tried at once, so a dead node listed first costs a start (or
# a failover) one refused connection, not a pause.
RECONNECT_INTERVAL = 1.0


def connection_name(role: str) -> str:
    """What the management UI shows for this process, e.g. `syncgate-gateway@host`."""
    return f"syncgate-{role}@{socket.gethostname()}"


def node_address(url: URL) -> str:
    """`host:port` of a node's URL: what logs and errors may show (never the credentials)."""
    host = url.raw_host or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"{host}:{url.port or _SCHEMES.get(url.scheme, 5672)}"


@dataclass(frozen=True, slots=True)
class BrokerNodes:
    """The broker's nodes, in the order they are tried."""

    urls: tuple[URL, ...]

    def __str__(self) -> str:
        return ", ".join(node_address(url) for url in self.urls)

    def __len__(self) -> int:
        return len(self.urls)


def broker_nodes(raw: str) -> BrokerNodes:
    """Comma-separated amqp:// or amqps:// URLs; ValueError names the first bad one by its
    position (and its host:port when it has one), never quoting it: it may hold a password."""
    entries = [entry.strip() for entry in raw.split(",")]
    if not any(entries):
        raise ValueError("at least one amqp:// or amqps:// URL is required")
    count = len(entries)
    urls = []
    for position, entry in enumerate(entries, start=1):
        where = f"URL {position} of {count}" if count > 1 else "the URL"
        if not entry:
            raise ValueError(f"{where} is empty (two commas in a row, or a trailing comma?)")
        try:
            url = URL(entry)
            port = url.port
        except (ValueError, TypeError):
            raise ValueError(f"{where} is not a valid URL") from None
        if url.scheme not in _SCHEMES:
            raise ValueError(f"{where} must start with amqp:// or amqps://")
        if not url.raw_host or any(c.isspace() for c in entry):
            raise ValueError(f"{where} has no valid host")
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"{where} ({url.raw_host}) has no valid port")
        urls.append(url)
    return BrokerNodes(tuple(urls))


class FailoverConnection(RobustConnection):
    """A robust connection that moves to the next node of its list whenever its connection
    closes without being asked to, or an attempt to connect fails.

    Within one round of the list the next node is tried at once; once every node has failed
    in a row, it waits RECONNECT_INTERVAL before the next round. It waits for a first node to
    answer however long that takes (aio-pika's fail_fast off): a process may start before its
    broker, and a dead node listed first must not stop it.
    """

    def __init__(self, nodes: BrokerNodes, role: str, **kwargs: Any) -> None:
        self.nodes = nodes
        self.name = connection_name(role)
        self._node = 0
        self._failures_in_a_row = 0
        super().__init__(
            nodes.urls[0],
            client_properties={"connection_name": self.name},
            reconnect_interval=RECONNECT_INTERVAL,
            fail_fast=False,
            **kwargs,
        )
        # Every connection it opens, to whichever node, sends a loop turn's frames in one
        # write (common/amqp_writes.py). aio-pika keeps only the parameters it knows from its
        # constructor's keywords, but passes its `kwargs` on to aiormq's Connection.
        self.kwargs["transport_factory"] = CoalescingTransportFactory()

    @property
    def node(self) -> str:
        """`host:port` of the node this connection is on, or tries next."""
        return node_address(self.url)

    def __str__(self) -> str:
        # aio-pika's own log lines name the connection by str(): never the URL.
        return f"{self.name} (broker nodes {self.nodes})"

    async def _on_connected(self) -> None:
        await super()._on_connected()
        self._failures_in_a_row = 0
        self.reconnect_interval = RECONNECT_INTERVAL
        log.info("connected to broker node %s as %s", self.node, self.name)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # Called when an open connection closes and when an attempt fails (aio-pika's
        # UnderlayConnection.connect calls it before it raises), in both cases before the
        # reconnect loop makes its next attempt, which connects to `self.url`.
        if not (self._close_called or self.is_closed):
            self._next_node(closing)
        await super()._on_connection_close(closing)

    def _next_node(self, closing: asyncio.Future[Any]) -> None:
        was_connected = self._failures_in_a_row == 0 and self.connection_attempt > 0
        failed = self.node
        self._failures_in_a_row += 1
        self._node = (self._node + 1) % len(self.nodes)
        self.url = self.nodes.urls[self._node]
        # The reconnect loop sleeps reconnect_interval after a failed attempt: not at all
        # until every node has failed once in a row.
        round_done = self._failures_in_a_row % len(self.nodes) == 0
        self.reconnect_interval = RECONNECT_INTERVAL if round_done else 0
        if self._failures_in_a_row <= len(self.nodes):
            log.warning(
                "broker node %s %s (%s); %s %s",
                failed,
                "closed the connection" if was_connected else "did not answer",
                _reason(closing),
                f"no node answered; in {RECONNECT_INTERVAL:.0f}s:" if round_done else "next:",
                self.node,
            )
        elif round_done:  # a long outage: one line a round, not one per node
            log.warning(
                "no broker node answered in %d rounds (%s last: %s); trying again every %.0fs",
                self._failures_in_a_row // len(self.nodes),
                failed,
                _reason(closing),
                RECONNECT_INTERVAL,
            )


def _reason(closing: asyncio.Future[Any]) -> str:
    if closing.cancelled():
        return "cancelled"
    exc = closing.exception()
    return f"{type(exc).__name__}: {exc}" if exc is not None else "closed"


async def connect_with_retry(
    amqp_url: str, role: str, *, connect_timeout: float = 5.0
) -> FailoverConnection:
    """A FailoverConnection over the nodes of `amqp_url` (SYNCGATE_AMQP_URL's format), once one
    node answers: a process may start before its broker. `connect_timeout` bounds each attempt.
    """
    connection = FailoverConnection(broker_nodes(amqp_url), role)
    try:
        await connection.connect(timeout=connect_timeout)
    except BaseException:
        # Cancelled while waiting (a shutdown during start-up): stop the reconnect loop too.
        await connection.close()
        raise
    return connection


class BrokerUnreachable(Exception):
    """No node of the list accepted a connection; the message names them by host:port."""


async def connect_once(
    amqp_url: str, role: str, *, connect_timeout: float = 10.0
) -> AbstractConnection:
    """A plain (not robust) connection to the first node of `amqp_url` that answers, trying
    each once: for a command an operator runs, which should fail rather than wait."""
    nodes = broker_nodes(amqp_url)
    failures = []
    for url in nodes.urls:
        try:
            return await aio_pika.connect(
                url,
                timeout=connect_timeout,
                client_properties={"connection_name": connection_name(role)},
            )
        except CONNECTION_EXCEPTIONS as exc:  # TimeoutError among them (an OSError)
            failures.append(f"{node_address(url)}: {exc or type(exc).__name__}")
    raise BrokerUnreachable("; ".join(failures))


async def renew_channel(channel: AbstractRobustChannel) -> None:
    """Replace a robust channel's underlying channel with a new one on the same connection
    (aio-pika re-declares on it what was declared through the channel, then calls its reopen
    callbacks); what is in flight on the old one fails.

    For a channel that a quorum queue keeps nacking: a channel that first published to a
    quorum queue while the queue had no leader (its leader's node had just died, and a
    failover connection is that fast) went on being nacked after a new leader was elected, on
    RabbitMQ 3.10, while a new channel was confirmed at once.
    """
    underlay = await channel.get_underlay_channel()
    # Closed with an error, not cancelled: a robust channel restores itself only then.
    await underlay.close(ChannelClosed(None, "renewed by syncgate"))


async def negotiated_frame_max(channel: AbstractChannel) -> int:
    """The `frame_max` the broker and aiormq agreed on for the channel's connection as it is
    now (a robust channel is on a new connection after a reconnect); 0 means no limit."""
    underlay = await channel.get_underlay_channel()
    return underlay.connection.connection_tune.frame_max
