"""The operators' DLQ routes on the real broker (gateway/dead_letters.py's BrokerQueues): a
list hands every message back, a replay lands the event in the work queue again and leaves
the DLQ only after the confirm, a discard removes exactly one, and the unrouted queue's
"replay all" goes round once at most when there is still no binding."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from common.republish import ATTEMPT_HEADER, ERROR_HEADER, REASON_HEADER, ROUTING_KEY_HEADER
from common.topology import declare_consumer_topology
from gateway.dead_letters import BrokerQueues
from gateway.settings import GatewaySettings
from gateway.users import UserRecord, UsersFile
from tests.conftest import AMQP_URL, AiohttpClient, BrokerNames, login
from tests.support.app import gateway_app

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
OPERATOR = "ops@example.com"


async def ready_count(queue: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


@pytest.fixture
async def client(
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    make_settings: Callable[..., GatewaySettings],
    tmp_path: Path,
    password_hash: str,
    aiohttp_client: AiohttpClient,
) -> Client:
    channel = await amqp.channel(publisher_confirms=True)
    topology = names.consumer_settings(tmp_path).topology
    await declare_consumer_topology(channel, topology)
    dlx = await channel.get_exchange(names.dlx)
    for n in range(3):
        await dlx.publish(
            aio_pika.Message(
                b'{"n": %d}' % n,
                message_id=f"evt-{n}",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={
                    REASON_HEADER: "handler-failed",
                    ERROR_HEADER: f"boom {n}",
                    ATTEMPT_HEADER: 5,
                    ROUTING_KEY_HEADER: "confluence.app.sync",
                },
            ),
            routing_key=names.queue,
        )
    events = await channel.get_exchange(names.exchange)
    await events.publish(aio_pika.Message(b"{}", message_id="lost-1"), routing_key="nobody.home")
    await channel.close()

    users = tmp_path / "users-ops.json"
    record = UserRecord(
        id="u-ops", email=OPERATOR, name="Ops", password_hash=password_hash, role="operator"
    )
    users.write_text(UsersFile(users=(record,)).model_dump_json())
    settings = make_settings(**names.gateway_overrides(), queue=names.queue, users_file=users)
    test_client: Client = await aiohttp_client(
        gateway_app(settings, operator_queues=BrokerQueues(settings))
    )
    await login(test_client, OPERATOR)
    return test_client


async def ask(client: Client, method: str, path: str, body: Any = None) -> Any:
    response = await client.request(method, path, json=body)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_list_replay_and_discard_on_the_real_dlq(client: Client, names: BrokerNames) -> None:
    dlq = f"{names.queue}.dlq"
    for _ in range(3):  # every look hands everything back
        page = await ask(client, "GET", "/api/operator/queues/dlq")
        assert [i["eventId"] for i in page["items"]] == ["evt-0", "evt-1", "evt-2"]
    assert page["queue"] == dlq
    assert page["items"][1]["error"] == "boom 1"
    assert page["items"][1]["routingKey"] == "confluence.app.sync"
    shown = await ask(client, "GET", "/api/operator/queues/dlq/events/evt-2")
    assert shown["body"] == '{"n": 2}'

    replayed = await ask(client, "POST", "/api/operator/queues/dlq/replay", {"eventIds": ["evt-1"]})
    assert replayed["replayed"] == 1
    assert await ready_count(names.queue) == 1  # back in the work queue
    discarded = await ask(
        client, "POST", "/api/operator/queues/dlq/discard", {"eventId": "evt-0", "confirm": "evt-0"}
    )
    assert discarded["outcome"] == "done"
    page = await ask(client, "GET", "/api/operator/queues/dlq")
    assert [i["eventId"] for i in page["items"]] == ["evt-2"]
    assert await ready_count(dlq) == 1
    trail = await ask(client, "GET", "/api/operator/audit")
    assert [(e["action"], e["eventId"]) for e in trail["entries"]] == [
        ("discard", "evt-0"),
        ("replay", "evt-1"),
    ]


async def test_the_unrouted_queue_replays_once_without_a_loop(
    client: Client, names: BrokerNames
) -> None:
    page = await ask(client, "GET", "/api/operator/queues/unrouted")
    assert [(i["eventId"], i["routingKey"]) for i in page["items"]] == [("lost-1", "nobody.home")]
    # Still no binding: the replay is confirmed, lands in the unrouted queue again, and "all"
    # stops at the count it started with.
    result = await ask(client, "POST", "/api/operator/queues/unrouted/replay", {"all": True})
    assert (result["replayed"], result["failed"]) == (1, 0)
    assert await ready_count(names.unrouted) == 1
