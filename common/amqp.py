"""Opening named, robust broker connections."""

from __future__ import annotations

import asyncio
import logging
import socket

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

log = logging.getLogger(__name__)


def connection_name(role: str) -> str:
    """What the management UI shows for this process, e.g. `syncgate-gateway@host`."""
    return f"syncgate-{role}@{socket.gethostname()}"


async def connect(url: str, role: str, *, connect_timeout: float = 5.0) -> AbstractRobustConnection:
    """Connect once; after that aio-pika's robust connection restores itself."""
    return await aio_pika.connect_robust(
        url,
        timeout=connect_timeout,
        client_properties={"connection_name": connection_name(role)},
    )


async def connect_with_retry(
    url: str, role: str, *, interval: float = 1.0, connect_timeout: float = 5.0
) -> AbstractRobustConnection:
    """Keep trying until the broker answers: a process may start before its broker."""
    while True:
        try:
            return await connect(url, role, connect_timeout=connect_timeout)
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            log.warning("broker not reachable yet (%s); retrying in %.1fs", exc, interval)
            await asyncio.sleep(interval)


async def negotiated_frame_max(channel: AbstractChannel) -> int:
    """The `frame_max` the broker and aiormq agreed on for the channel's connection as it is
    now (a robust channel is on a new connection after a reconnect); 0 means no limit."""
    underlay = await channel.get_underlay_channel()
    return underlay.connection.connection_tune.frame_max
