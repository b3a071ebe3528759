"""scripts/cluster.sh's three-node cluster on the real broker: one cluster of three, a quorum
queue with a replica on every node, failover when its leader is killed with kill -9, and the
standard broker beside it left alone. No mocks: every step goes through the real nodes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aiohttp
import pytest

from common.topology import QUORUM
from tests.conftest import AMQP_URL, management_get
from tests.support.broker import rabbitmqctl
from tests.support.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

STANDARD_COOKIE = Path("/var/lib/rabbitmq/.erlang.cookie")
CONFIRM_LIMIT = 15.0  # seconds one publish may wait for its confirm (an election takes ~1 s)


@pytest.fixture
async def queue_name(cluster: Cluster) -> AsyncIterator[str]:
    """A unique queue name; the queue is deleted after the test through any running node."""
    name = f"test.cluster.{uuid.uuid4().hex[:10]}"
    yield name
    for url in cluster.amqp_urls:
        try:
            connection = await aio_pika.connect(url, timeout=5)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPConnectionError):
            continue
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(name)
        return
    raise AssertionError(f"no cluster node answered to delete {name}")


async def declare_quorum_queue(url: str, name: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True, arguments=QUORUM)


async def publish_confirmed(url: str, queue: str, bodies: list[bytes]) -> list[bytes]:
    """Publish persistently through one node, one confirm at a time; the confirmed bodies."""
    confirmed = []
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        for body in bodies:
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await channel.default_exchange.publish(
                message, routing_key=queue, mandatory=True, timeout=CONFIRM_LIMIT
            )
            confirmed.append(body)
    return confirmed


async def consume(url: str, queue: str, count: int, *, within: float = 30.0) -> list[bytes]:
    """Take (and ack) messages through one node until `count` arrived or `within` passed."""
    received: list[bytes] = []
    deadline = time.monotonic() + within
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        source = await channel.declare_queue(queue, passive=True)
        while len(received) < count and time.monotonic() < deadline:
            message = await source.get(no_ack=False, fail=False, timeout=5)
            if message is None:
                continue
            received.append(message.body)
            await message.ack()
        # Anything beyond `count` would be a message that should not be there.
        extra = await source.get(no_ack=False, fail=False, timeout=5)
        if extra is not None:
            received.append(extra.body)
            await extra.ack()
    return received


def read_cookie(path: Path) -> str:
    return path.read_text().strip()


def bodies(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}-{i:04d}".encode() for i in range(count)]


async def test_the_three_nodes_run_as_one_cluster(cluster: Cluster) -> None:
    names = sorted(cluster.node_name(n) for n in cluster.nodes)
    for n in cluster.nodes:
        status = await cluster.cluster_status(n)
        assert sorted(status["running_nodes"]) == names, f"as node {n} sees it"
        assert sorted(status["disk_nodes"]) == names, f"as node {n} sees it"
    for n in cluster.nodes:
        nodes = await cluster.management_get("nodes", node=n)
        assert sorted(node["name"] for node in nodes) == names
        assert all(node["running"] for node in nodes), nodes
        overview = await cluster.management_get("overview", node=n)
        assert overview["node"] == cluster.node_name(n)


async def test_each_node_serves_prometheus_metrics(cluster: Cluster) -> None:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for n in cluster.nodes:
            for path in ("/metrics", "/metrics/detailed?family=queue_coarse_metrics"):
                async with http.get(cluster.prometheus_url(n) + path) as response:
                    assert response.status == 200, f"node {n} {path}"
                    text = await response.text()
            assert "rabbitmq_" in text


async def test_a_quorum_queue_declared_on_node_1_has_a_replica_on_every_node(
    cluster: Cluster, queue_name: str
) -> None:
    connection_name = f"{queue_name}.publisher"
    async with await aio_pika.connect(
        cluster.amqp_url(1), client_properties={"connection_name": connection_name}
    ) as connection:
        channel = await connection.channel()
        await channel.declare_queue(queue_name, durable=True, arguments=QUORUM)
        assert await cluster.connection_node(connection_name, within=10) == 1
    assert await cluster.members(queue_name) == [1, 2, 3]
    assert await cluster.online_members(queue_name) == [1, 2, 3]

    sent = await publish_confirmed(cluster.amqp_url(1), queue_name, bodies("node1", 50))
    received = await consume(cluster.amqp_url(3), queue_name, len(sent))
    assert received == sent  # one publisher, one queue: in order, each once


async def test_killing_the_queue_leader_loses_no_confirmed_message(
    cluster: Cluster, queue_name: str
) -> None:
    await declare_quorum_queue(cluster.amqp_url(1), queue_name)
    before = await publish_confirmed(cluster.amqp_url(1), queue_name, bodies("before", 100))
    leader = await cluster.queue_leader(queue_name)
    survivors = [n for n in cluster.nodes if n != leader]

    killed_at = time.monotonic()
    await cluster.kill(leader)
    try:
        # A new leader among the survivors (the API reports none while they elect one).
        deadline = time.monotonic() + 30
        new_leader = await cluster.queue_leader(queue_name)
        while new_leader == leader:
            assert time.monotonic() < deadline, f"node {leader} still reported as leader"
            new_leader = await cluster.queue_leader(queue_name)
        elected = time.monotonic() - killed_at
        assert new_leader in survivors

        url = cluster.amqp_url(survivors[0])
        after = await publish_confirmed(url, queue_name, bodies("after", 100))
        print(
            f"cluster failover: node {leader} killed, node {new_leader} leads after "
            f"{elected:.1f}s; 100 publishes through node {survivors[0]} confirmed"
        )
        assert await cluster.online_members(queue_name) == survivors

        received = await consume(url, queue_name, len(before) + len(after))
        lost = set(before + after) - set(received)
        assert not lost, f"{len(lost)} confirmed messages lost, e.g. {sorted(lost)[:5]}"
        assert sorted(received) == sorted(before + after)  # and none twice, none extra
    finally:
        restart_began = time.monotonic()
        await cluster.start_node(leader)
        print(f"cluster failover: node {leader} back in {time.monotonic() - restart_began:.1f}s")

    assert await cluster.members(queue_name) == [1, 2, 3]
    deadline = time.monotonic() + 30
    while await cluster.online_members(queue_name) != [1, 2, 3]:
        assert time.monotonic() < deadline, "the restarted node's replica did not come back"
        await asyncio.sleep(0.5)
    status = await cluster.cluster_status(leader)
    assert sorted(status["running_nodes"]) == sorted(cluster.node_name(n) for n in cluster.nodes)


async def test_the_standard_node_is_left_alone(cluster: Cluster) -> None:
    # Other sessions on this machine stop and start the standard node's app in their fault
    # tests: wait for it to run rather than catch it in between.
    await rabbitmqctl("-q", "await_startup")
    # The standard CLI, with the standard node's own cookie: still a cluster of one.
    status = json.loads(await rabbitmqctl("-q", "cluster_status", "--formatter", "json"))
    assert status["running_nodes"] == ["rabbit@localhost"]
    assert status["disk_nodes"] == ["rabbit@localhost"]
    nodes = await management_get("nodes")
    assert [node["name"] for node in nodes] == ["rabbit@localhost"]
    # And it still answers on 5672 while the cluster runs.
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        await channel.close()
    # The cluster's Erlang cookie is its own: neither its nodes nor a rabbitmqctl with the
    # cluster's cookie can authenticate to the standard node.
    cluster_cookie = read_cookie(cluster.state_dir / "home" / ".erlang.cookie")
    assert cluster_cookie
    assert cluster_cookie != read_cookie(STANDARD_COOKIE)
    for n in cluster.nodes:
        status = await cluster.cluster_status(n)
        assert "rabbit@localhost" not in status["running_nodes"] + status["disk_nodes"]
