"""The CloudEvents attributes: their settings, their values, the schema files `dataschema`
points at, and the copies the consumer republishes, which keep them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import ValidationError

from common.cloudevents import PREFIX, EventSource, event_time
from common.republish import DEAD_LETTER_HEADERS, republished
from common.tracing import TRACEPARENT, TRACESTATE
from gateway.message_properties import message_properties
from gateway.settings import GatewaySettings
from schemas.export import SCHEMA_DIR
from schemas.registry import REGISTRY
from tests.conftest import AiohttpClient
from tests.support.app import gateway_app
from tests.support.deliveries import delivery_of
from tests.support.events import sync_event

Client = TestClient[web.Request, web.Application]

SCHEMA_FILE = "confluence.app.sync.v1.schema.json"


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_796_202_060_129, "2026-12-02T09:01:00.129Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_time_is_rfc_3339_in_utc_with_milliseconds(ts: int, expected: str) -> None:
    assert event_time(ts) == expected


def test_dataschema_is_a_urn_without_a_public_base_url(
    make_settings: Callable[..., GatewaySettings],
) -> None:
    source = make_settings().event_source
    assert source.source == "urn:syncgate:gateway"
    assert source.dataschema(SCHEMA_FILE) == f"urn:syncgate:schema:{SCHEMA_FILE}"
    # An empty variable (compose passes unset ones so) is no base URL either.
    assert make_settings(public_base_url=" ").event_source == source


@pytest.mark.parametrize(
    ("base", "schema_base"),
    [
        ("https://sync.example.com", "https://sync.example.com/schemas/"),
        ("https://sync.example.com/", "https://sync.example.com/schemas/"),
        ("http://10.0.0.5:8080/syncgate/", "http://10.0.0.5:8080/syncgate/schemas/"),
    ],
)
def test_dataschema_is_under_the_public_base_url(
    make_settings: Callable[..., GatewaySettings], base: str, schema_base: str
) -> None:
    source = make_settings(public_base_url=base, cloudevents_source="https://sync.example.com/")
    assert source.event_source == EventSource("https://sync.example.com/", schema_base)


@pytest.mark.parametrize(
    "base",
    [
        "sync.example.com",
        "ftp://sync.example.com/",
        "https://",
        "https://user:secret@sync.example.com/",
        "https://sync.example.com/?x=1",
        "https://sync.example.com/#top",
        "https://sync.example.com/a b",
    ],
)
def test_a_public_base_url_that_cannot_prefix_a_schema_url_is_refused(
    make_settings: Callable[..., GatewaySettings], base: str
) -> None:
    with pytest.raises(ValidationError, match="public_base_url") as raised:
        make_settings(public_base_url=base)
    assert "secret" not in str(raised.value)


@pytest.mark.parametrize("source", ["", "gateway", "/relative/path", "urn:a b", "x:" + "y" * 1100])
def test_a_source_that_is_no_absolute_uri_is_refused(
    make_settings: Callable[..., GatewaySettings], source: str
) -> None:
    with pytest.raises(ValidationError, match="cloudevents_source"):
        make_settings(cloudevents_source=source)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, make_settings: Callable[..., Any]) -> Client:
    made: Client = await aiohttp_client(gateway_app(make_settings()))
    return made


async def test_every_registered_schema_is_served_as_exported(client: Client) -> None:
    for event_type in REGISTRY:
        response = await client.get(f"/schemas/{event_type.schema_file_name}")
        assert response.status == 200
        assert response.content_type == "application/schema+json"
        assert "max-age" in response.headers["Cache-Control"]
        assert await response.read() == (SCHEMA_DIR / event_type.schema_file_name).read_bytes()
        # Its $id, resolved against the URL it is served at, is that URL.
        assert json.loads(await response.read())["$id"] == event_type.schema_file_name


@pytest.mark.parametrize(
    "path",
    [
        "/schemas/nope.schema.json",
        f"/schemas/{SCHEMA_FILE}.bak",
        "/schemas/..%2Fregistry.py",
        "/schemas/%2E%2E%2Fexport.py",
        "/schemas/..%2F..%2Fpyproject.toml",
        "/schemas/",
        "/schemas/%00",
    ],
)
async def test_anything_else_under_schemas_is_a_404_in_the_error_shape(
    client: Client, path: str
) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


def test_a_republished_copy_keeps_the_attributes_and_the_trace_context() -> None:
    event = sync_event()
    trace = {TRACEPARENT: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    headers = message_properties(event, correlation_id="req-1", trace=trace).headers
    assert headers is not None
    delivered = delivery_of(event, headers=dict(headers))

    retry = republished(delivered, {"x-syncgate-attempt": 2}, frame_max=131072)
    replayed = republished(delivered, {}, frame_max=131072, without=DEAD_LETTER_HEADERS)

    for copy in (retry, replayed):
        assert copy.headers is not None
        ours = {k: v for k, v in copy.headers.items() if k.startswith(PREFIX) or k in trace}
        assert ours == {k: v for k, v in headers.items() if k.startswith(PREFIX) or k in trace}
        assert len(ours) == 8
        assert copy.content_type == "application/json"  # datacontenttype


def test_a_replay_drops_none_of_them() -> None:
    assert not {h for h in DEAD_LETTER_HEADERS if h.startswith(PREFIX)}
    assert {TRACEPARENT, TRACESTATE}.isdisjoint(DEAD_LETTER_HEADERS)
