"""common/amqp.py's FailoverConnection on the standard broker, reached through TCP proxies that
stand in for cluster nodes: a dead node listed first does not stop a start, and a connection
whose node goes away moves to the next one, with its channel's exchange, queue, binding and
consumer restored there. The cluster version, under load, is test_node_faults.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import pytest
from yarl import URL

from common.amqp import BrokerUnreachable, connect_once, connect_with_retry, node_address
from common.topology import declare_consumer_topology
from tests.conftest import AMQP_URL, BrokerNames
from tests.support.consumer import syncgate
from tests.support.tcp_proxy import proxy_in_front_of

pytestmark = pytest.mark.integration

DEAD = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens on port 1: refused at once


async def test_a_dead_node_listed_first_does_not_keep_a_process_from_starting() -> None:
    async with proxy_in_front_of(AMQP_URL) as (_, url):
        connection = await asyncio.wait_for(connect_with_retry(f"{DEAD},{url}", "test"), 30)
        try:
            assert connection.node == node_address(URL(url))
            channel = await connection.channel()
            await channel.close()
        finally:
            await connection.close()


async def test_a_command_connects_to_the_first_node_that_answers() -> None:
    connection = await connect_once(f"{DEAD},{AMQP_URL}", "test")
    await connection.close()
    with pytest.raises(BrokerUnreachable, match=r"^127\.0\.0\.1:1: "):
        await connect_once(DEAD, "test")


async def test_when_its_node_goes_the_connection_moves_to_the_next_with_what_it_declared(
    names: BrokerNames,
) -> None:
    async with proxy_in_front_of(AMQP_URL) as (first, a), proxy_in_front_of(AMQP_URL) as (_, b):
        connection = await asyncio.wait_for(connect_with_retry(f"{a},{b}", "test"), 30)
        try:
            assert connection.node == node_address(URL(a))
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(names.exchange, "topic", auto_delete=True)
            queue = await channel.declare_queue(names.queue, exclusive=True)
            await queue.bind(exchange, "#")
            received: asyncio.Queue[bytes] = asyncio.Queue()

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                await message.ack()
                await received.put(message.body)

            await queue.consume(on_message)
            await exchange.publish(aio_pika.Message(b"before"), "k")
            assert await asyncio.wait_for(received.get(), 10) == b"before"

            reopened = asyncio.Event()
            channel.reopen_callbacks.add(lambda *_: reopened.set())
            # Node A goes: its proxy drops every connection and refuses new ones.
            await first.close()
            await asyncio.wait_for(reopened.wait(), 30)
            assert connection.node == node_address(URL(b))
            # The exclusive queue died with the old connection: that it works again means the
            # robust channel re-declared it, re-bound it and consumes from it on node B.
            await exchange.publish(aio_pika.Message(b"after"), "k")
            assert await asyncio.wait_for(received.get(), 10) == b"after"
        finally:
            await connection.close()


async def test_the_dlq_commands_use_the_first_node_that_answers(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    settings = names.consumer_settings(tmp_path, amqp_url=f"{DEAD},{AMQP_URL}")
    channel = await amqp.channel()
    await declare_consumer_topology(channel, settings.topology)
    code, output = await syncgate(settings, "dlq", "list")
    assert (code, output.strip()) == (0, f"{settings.topology.dead_letter_queue}: 0 dead-lettered")
