"""GET /asyncapi.json: AsyncAPI 3.0 generated from the registry, valid under @asyncapi/parser."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from common import cloudevents
from gateway.settings import GatewaySettings
from schemas.registry import REGISTRY
from tests.conftest import AiohttpClient
from tests.support.app import gateway_app

Client = TestClient[web.Request, web.Application]

ROOT = Path(__file__).resolve().parents[2]
CHECK_DIR = ROOT / "tests" / "asyncapi_check"


@pytest.fixture
async def document(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> dict[str, Any]:
    settings = make_settings(
        exchange="acme.events",
        unrouted_exchange="acme.unrouted",
        public_base_url="https://sync.example.com",
    )
    client: Client = await aiohttp_client(gateway_app(settings))
    response = await client.get("/asyncapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    return body


async def test_every_registered_event_has_its_channel_message_and_operation(
    document: dict[str, Any],
) -> None:
    assert document["asyncapi"] == "3.0.0"
    registered = list(REGISTRY)
    assert registered
    for event_type in registered:
        key = f"{event_type.routing_key}.v{event_type.v}"
        channel = document["channels"][event_type.routing_key]
        assert channel["address"] == event_type.routing_key
        assert channel["bindings"]["amqp"]["exchange"]["name"] == "acme.events"
        assert channel["bindings"]["amqp"]["exchange"]["type"] == "topic"
        assert channel["x-alternate-exchange"] == "acme.unrouted"
        assert key in channel["messages"]
        assert key in document["channels"]["unrouted"]["messages"]
        message = document["components"]["messages"][key]
        assert message["name"] == event_type.name
        assert message["payload"] == {"$ref": f"#/components/schemas/{event_type.model.__name__}"}
        headers = message["headers"]
        prefixed = {name for name in headers["required"] if name.startswith(cloudevents.PREFIX)}
        assert prefixed == {
            cloudevents.SPECVERSION_HEADER,
            cloudevents.ID_HEADER,
            cloudevents.SOURCE_HEADER,
            cloudevents.TYPE_HEADER,
            cloudevents.TIME_HEADER,
            cloudevents.DATASCHEMA_HEADER,
            cloudevents.SUBJECT_HEADER,
        }
        assert headers["properties"][cloudevents.DATASCHEMA_HEADER]["const"] == (
            f"https://sync.example.com/schemas/{event_type.schema_file_name}"
        )
        assert {"traceparent", "tracestate"} <= set(headers["properties"])
        operation = document["operations"][f"publish.{key}"]
        assert operation["action"] == "send"
        assert operation["bindings"]["amqp"]["deliveryMode"] == 2
    unrouted = document["channels"]["unrouted"]["bindings"]["amqp"]["exchange"]
    assert (unrouted["name"], unrouted["type"]) == ("acme.unrouted", "fanout")


def validate(document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """@asyncapi/parser's verdict on `document`, run by node (skips where node is absent)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the AsyncAPI document is not validated by its parser")
    installed = subprocess.run(  # noqa: S603 - our own script
        [str(ROOT / "scripts" / "ensure-asyncapi-check.sh")],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    return subprocess.run(  # noqa: S603 - node, on our own script
        [node, str(CHECK_DIR / "validate.mjs")],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=CHECK_DIR,
    )


async def test_the_asyncapi_parser_accepts_the_document(document: dict[str, Any]) -> None:
    result = validate(document)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert parsed["version"] == "3.0.0"
    assert set(parsed["channels"]) == {t.routing_key for t in REGISTRY} | {"unrouted"}
    assert len(parsed["messages"]) == len(list(REGISTRY))


async def test_the_parser_does_refuse_a_broken_document(document: dict[str, Any]) -> None:
    broken = copy.deepcopy(document)
    for operation in broken["operations"].values():
        operation["action"] = "publish"  # AsyncAPI 2's word; 3.0 has send and receive
    result = validate(broken)
    assert result.returncode == 1
    assert '"severity":"error"' in result.stderr
