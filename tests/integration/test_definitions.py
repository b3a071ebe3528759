"""definitions.json says what the code declares on a real broker, arguments included.

The real declare functions run with unique names; the management API reports what the broker
now holds; that must equal definitions.json with its default names mapped to this test's.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import aiohttp
import pytest

from common.definitions import LOCAL_PASSWORD
from common.topology import ConsumerTopology, declare_consumer_topology, declare_events_exchange
from tests.conftest import AMQP_URL, MANAGEMENT_URL, BrokerNames, management_get

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def load_definitions() -> dict[str, Any]:
    loaded = json.loads((ROOT / "definitions.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def to_test_names(value: Any, names: BrokerNames) -> Any:
    """The file with every default exchange and queue name replaced by this test's."""
    defaults = ConsumerTopology()
    exact = {
        defaults.events.exchange: names.exchange,
        defaults.events.unrouted: names.unrouted,
        defaults.dead_letter_exchange: names.dlx,
        defaults.queue: names.queue,
    }
    if isinstance(value, dict):
        return {key: to_test_names(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [to_test_names(item, names) for item in value]
    if isinstance(value, str):
        if value in exact:
            return exact[value]
        if value.startswith(defaults.queue + "."):  # the DLQ and the retry queues
            return names.queue + value.removeprefix(defaults.queue)
        assert not value.startswith("syncgate."), f"{value} has no test name: map it"
    return value


def path(kind: str, name: str) -> str:
    return f"{kind}/%2F/{quote(name, safe='')}"


def projected(reported: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    """The broker's report, cut down to the fields the definitions file has."""
    return {key: reported[key] for key in like}


async def test_definitions_json_is_what_the_code_declares(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    # The file is exported with the default settings; only the names differ here.
    settings = names.consumer_settings(tmp_path, retry_base_delay=1.0)
    assert settings.max_attempts == ConsumerTopology().max_attempts
    channel = await amqp.channel()
    await declare_events_exchange(channel, settings.topology.events)
    await declare_consumer_topology(channel, settings.topology)

    expected = to_test_names(load_definitions(), names)
    for exchange in expected["exchanges"]:
        reported = await management_get(path("exchanges", exchange["name"]))
        assert projected(reported, exchange) == exchange
    for queue in expected["queues"]:
        reported = await management_get(path("queues", queue["name"]))
        assert projected(reported, queue) == queue

    ours = [
        binding
        for binding in await management_get("bindings/%2F")
        if binding["source"].startswith(names.prefix)
    ]
    key = ("source", "destination", "routing_key")
    reported_bindings = sorted(
        (projected(b, expected["bindings"][0]) for b in ours), key=lambda b: [b[k] for k in key]
    )
    expected_bindings = sorted(expected["bindings"], key=lambda b: [b[k] for k in key])
    assert reported_bindings == expected_bindings

    # Nothing the code declares is missing from the file.
    queues = {q["name"] for q in await management_get("queues/%2F?columns=name")}
    exchanges = {e["name"] for e in await management_get("exchanges/%2F?columns=name")}
    assert {q for q in queues if q.startswith(names.prefix)} == {
        q["name"] for q in expected["queues"]
    }
    assert {e for e in exchanges if e.startswith(names.prefix)} == {
        e["name"] for e in expected["exchanges"]
    }


async def management_request(method: str, api_path: str, body: Any = None) -> None:
    auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.request(method, f"{MANAGEMENT_URL}/api/{api_path}", json=body) as response,
    ):
        response.raise_for_status()


async def test_the_files_user_signs_in_with_the_documented_password(names: BrokerNames) -> None:
    """The password hash in the file is one RabbitMQ accepts for the README's password."""
    (user,) = load_definitions()["users"]
    login = f"{names.prefix}.user"  # the file's user, under a name no one else uses
    await management_request(
        "PUT",
        f"users/{quote(login, safe='')}",
        {
            "password_hash": user["password_hash"],
            "hashing_algorithm": user["hashing_algorithm"],
            "tags": "",
        },
    )
    try:
        await management_request(
            "PUT",
            f"permissions/%2F/{quote(login, safe='')}",
            {"configure": "", "write": "", "read": ""},
        )
        host = AMQP_URL.rsplit("@", 1)[1]
        connection = await aio_pika.connect(f"amqp://{login}:{LOCAL_PASSWORD}@{host}")
        await connection.close()
        with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError):
            await aio_pika.connect(f"amqp://{login}:not-{LOCAL_PASSWORD}@{host}")
    finally:
        await management_request("DELETE", f"users/{quote(login, safe='')}")
