"""Every series the alert rules and the dashboard in deploy/ name exists: syncgate's on a real
gateway and consumer around real traffic, the broker's in the rabbitmq_prometheus plugin's
output on the three-node cluster (whose nodes have the plugin enabled; the standard broker
has it installed but not enabled, and is left as it is).

Each scrape fetches what its prometheus.yml job would (path and params), from every target
the job stands for, and its series get that job's name as `job`. A selector is satisfied
when a scraped series has its name and meets all its label matchers (tests/support/
monitoring.py). The files name the default settings' queues; the cluster test declares its
own, through a real consumer on the cluster, and points the queue matchers at them.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, unused_port
from prometheus_client.parser import text_string_to_metric_families

from consumers.settings import ConsumerSettings
from gateway.bootstrap import build_app
from gateway.settings import GatewaySettings
from tests.conftest import AiohttpClient, BrokerNames, login
from tests.support.cluster import Cluster
from tests.support.consumer import running_consumer
from tests.support.gateway import wait_readiness
from tests.support.monitoring import (
    Selector,
    Series,
    all_selectors,
    parse_exposition,
    queue_renames,
    renamed,
    scrape_jobs,
    unmatched,
)

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]


async def fetch(url: str, params: dict[str, list[str]] | None = None) -> str:
    query = [(key, item) for key, items in (params or {}).items() for item in items]
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(url, params=query) as response,
    ):
        assert response.status == 200, f"GET {url}: {response.status}"
        return await response.text()


def sample_values(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of one metric in a scrape, by their labels."""
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


# --- syncgate's own metrics ---------------------------------------------------------------


async def test_every_syncgate_series_the_rules_and_dashboard_name_is_exposed(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    tmp_path: Path,
) -> None:
    jobs = scrape_jobs()
    assert {"syncgate-gateway", "syncgate-consumer"} <= set(jobs)
    wanted = [s for s in all_selectors() if s.name.startswith("syncgate_")]
    assert len({s.name for s in wanted}) >= 7, wanted

    metrics_port = unused_port()
    consumer_settings = names.consumer_settings(
        tmp_path, metrics_port=metrics_port, metrics_dlq_interval=0.1
    )
    consumer_url = f"http://127.0.0.1:{metrics_port}{jobs['syncgate-consumer'].metrics_path}"
    async with running_consumer(consumer_settings):
        client: Client = await aiohttp_client(
            build_app(
                make_settings(**names.gateway_overrides(), run_store=consumer_settings.run_store)
            )
        )
        await wait_readiness(client, 200, within=10)
        await login(client)
        response = await client.post("/api/sync", json={"data": "monitoring"})
        assert response.status == 202
        # Until the consumer acked it and sampled its DLQ.
        deadline = time.monotonic() + 15
        while True:
            consumer_text = await fetch(consumer_url)
            acks = sample_values(consumer_text, "syncgate_consumer_messages_total")
            sampled = sample_values(consumer_text, "syncgate_dlq_messages")
            if acks.get(frozenset({("outcome", "ack")})) == 1 and sampled:
                break
            assert time.monotonic() < deadline, consumer_text
            await asyncio.sleep(0.1)
        gateway_response = await client.get(jobs["syncgate-gateway"].metrics_path)
        assert gateway_response.status == 200
        gateway_text = await gateway_response.text()

    scraped = parse_exposition(gateway_text, job="syncgate-gateway") | parse_exposition(
        consumer_text, job="syncgate-consumer"
    )
    assert unmatched(wanted, scraped) == []
    assert sample_values(gateway_text, "syncgate_gateway_ready") == {frozenset(): 1.0}
    # The same check on the same scrape finds a name that is not there.
    assert unmatched([Selector("syncgate_gateway_readiness", (), "control")], scraped)


# --- the broker's, from the rabbitmq_prometheus plugin on the cluster ----------------------


async def delete_on_cluster(cluster: Cluster, prefix: str) -> None:
    """Delete every queue and exchange whose name starts with `prefix`, through any node."""
    for n in cluster.nodes:
        try:
            connection = await aio_pika.connect(cluster.amqp_url(n), timeout=5)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPConnectionError):
            continue
        async with connection:
            channel = await connection.channel()
            for queue in await cluster.management_get("queues/%2F?columns=name"):
                if queue["name"].startswith(prefix):
                    await channel.queue_delete(queue["name"])
            for exchange in await cluster.management_get("exchanges/%2F?columns=name"):
                if exchange["name"].startswith(prefix):
                    await channel.exchange_delete(exchange["name"])
        return
    raise AssertionError(f"no cluster node answered to delete {prefix}.*")


@pytest.fixture
async def cluster_names(cluster: Cluster) -> AsyncIterator[BrokerNames]:
    names = BrokerNames()
    yield names
    await delete_on_cluster(cluster, names.prefix)


async def scrape_broker(cluster: Cluster) -> tuple[set[Series], dict[str, dict[int, str]]]:
    """What prometheus.yml's rabbitmq jobs would fetch from each of the three nodes: the
    union of their series, and each job's text per node."""
    series: set[Series] = set()
    texts: dict[str, dict[int, str]] = {}
    for job in scrape_jobs().values():
        if not job.name.startswith("rabbitmq"):
            continue
        texts[job.name] = {}
        for n in cluster.nodes:
            url = urllib.parse.urljoin(cluster.prometheus_url(n), job.metrics_path)
            text = await fetch(url, job.params)
            texts[job.name][n] = text
            series |= parse_exposition(text, job=job.name)
    return series, texts


def node_values(texts: dict[int, str], name: str, queue: str) -> dict[int, float]:
    """The metric's value for the queue, per node that reports it."""
    found = {}
    for n, text in texts.items():
        for labels, sample in sample_values(text, name).items():
            if dict(labels).get("queue") == queue:
                found[n] = sample
    return found


@pytest.mark.cluster
async def test_every_broker_series_the_rules_and_dashboard_name_is_exposed(
    cluster: Cluster, cluster_names: BrokerNames, tmp_path: Path
) -> None:
    jobs = scrape_jobs()
    assert "rabbitmq-detailed" in jobs
    # A real consumer on node 1 declares its topology through the cluster and subscribes.
    settings: ConsumerSettings = cluster_names.consumer_settings(
        tmp_path, amqp_url=cluster.amqp_url(1), metrics_port=0
    )
    topology = settings.topology
    renames = queue_renames(topology)
    wanted = [renamed(s, renames) for s in all_selectors() if s.name.startswith("rabbitmq_")]
    assert len({s.name for s in wanted}) >= 4, wanted
    assert {m.value for s in wanted for m in s.matchers if m.label == "queue"} <= set(
        renames.values()
    )

    async with running_consumer(settings):
        # One event no binding matches: the alternate exchange keeps it.
        connection = await aio_pika.connect(cluster.amqp_url(2))
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(topology.events.exchange)
            await exchange.publish(
                aio_pika.Message(b"{}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="nobody.listens.here",
            )
        # The plugin reports what the nodes last collected (every 5 s by default).
        deadline = time.monotonic() + 45
        while True:
            scraped, texts = await scrape_broker(cluster)
            detailed = texts["rabbitmq-detailed"]
            consumers = node_values(detailed, "rabbitmq_detailed_queue_consumers", topology.queue)
            unrouted = node_values(
                detailed, "rabbitmq_detailed_queue_messages", topology.events.unrouted
            )
            if list(consumers.values()) == [1.0] and list(unrouted.values()) == [1.0]:
                break
            assert time.monotonic() < deadline, (consumers, unrouted)
            await asyncio.sleep(1)

    assert unmatched(wanted, scraped) == []
    # The figures mean what the rules take them for: one consumer on the work queue, one
    # unrouted event, an empty backlog, each reported by one node (the queue's leader).
    ready = node_values(detailed, "rabbitmq_detailed_queue_messages_ready", topology.queue)
    assert list(ready.values()) == [0.0]
    print(f"work queue reported by node {list(consumers)}, unrouted by node {list(unrouted)}")
