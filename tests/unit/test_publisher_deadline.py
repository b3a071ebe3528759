"""How AmqpPublisher spends its deadline, with fakes in place of aio-pika's objects.

A channel that closes between the readiness check and the write is a race no real broker
can be made to lose on cue, so it is staged here. The broker-backed paths (outage, memory
alarm, half-open link, restarts) are in tests/integration/test_gateway_faults.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiormq
import pytest

from common.topology import EventsTopology
from gateway.errors import BrokerUnavailable
from gateway.metrics import GatewayMetrics
from gateway.publisher import AmqpPublisher
from tests.support.events import sync_event

DEADLINE = 5.0


@dataclass
class FakeUnderlayChannel:
    """aiormq's channel: records each publish's timeout; the first `closed_writes` fail as a
    channel that closed before the write does."""

    closed_writes: int = 0
    timeouts: list[float | None] = field(default_factory=list)

    # aiormq's signature, timeout included.
    async def basic_publish(self, body: bytes, *, timeout: float | None, **_: Any) -> None:  # noqa: ASYNC109
        self.timeouts.append(timeout)
        if len(self.timeouts) <= self.closed_writes:
            raise aiormq.exceptions.ChannelInvalidStateError("closed while waiting for the lock")


@dataclass
class FakeRobustChannel:
    underlay: FakeUnderlayChannel
    is_closed: bool = False

    async def get_underlay_channel(self) -> FakeUnderlayChannel:
        return self.underlay


@dataclass
class FakeConnection:
    connected: asyncio.Event = field(default_factory=asyncio.Event)


def publisher_over(channel: FakeRobustChannel, *, link_up: bool, deadline: float) -> AmqpPublisher:
    publisher = AmqpPublisher(
        "amqp://unused",
        EventsTopology(),
        deadline=deadline,
        retry_after=1,
        metrics=GatewayMetrics(),
    )
    connection = FakeConnection()
    connection.connected.set()
    # The state _open_once leaves behind once the broker link is up.
    publisher._connection = connection  # type: ignore[assignment]
    publisher._channel = channel  # type: ignore[assignment]
    if link_up:
        publisher._link_up.set()
    return publisher


async def test_with_the_link_up_one_publish_carries_the_deadline_as_aiormqs_timeout() -> None:
    underlay = FakeUnderlayChannel()
    publisher = publisher_over(FakeRobustChannel(underlay), link_up=True, deadline=DEADLINE)
    assert publisher.ready

    await publisher.publish(sync_event(), correlation_id="c-1")

    assert underlay.timeouts == [DEADLINE]


async def test_a_channel_closed_before_the_write_waits_for_the_link_and_publishes_once() -> None:
    underlay = FakeUnderlayChannel(closed_writes=1)
    publisher = publisher_over(FakeRobustChannel(underlay), link_up=True, deadline=DEADLINE)

    await publisher.publish(sync_event(), correlation_id="c-1")

    # The first try wrote nothing; the second, under the outer deadline, is the one publish.
    assert underlay.timeouts == [DEADLINE, None]


async def test_with_the_link_down_the_deadline_ends_in_503_and_nothing_is_written() -> None:
    underlay = FakeUnderlayChannel()
    publisher = publisher_over(FakeRobustChannel(underlay), link_up=False, deadline=0.05)
    assert not publisher.ready

    with pytest.raises(BrokerUnavailable) as raised:
        await publisher.publish(sync_event(), correlation_id="c-1")

    assert raised.value.status == 503
    assert underlay.timeouts == []
