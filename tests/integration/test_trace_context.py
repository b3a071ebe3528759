"""One trace links the HTTP request, the publish and the consumer's handling of the event, on
the real broker: the client's traceparent (or a new trace) reaches the message's headers, and
the consumer continues it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from pydantic import SecretStr

from consumers.bootstrap import HANDLERS, build_deps
from consumers.runner import Runner
from gateway.bootstrap import build_app
from gateway.settings import GatewaySettings
from tests.conftest import AiohttpClient, BrokerNames, login
from tests.support.consumer import stored_run
from tests.support.gateway import wait_readiness
from tests.support.tracing import recorded_spans, spans_of

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
async def traced(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    tmp_path: Path,
) -> AsyncIterator[tuple[Client, SecretStr]]:
    """A signed-in gateway and a running consumer, both on the broker, spans recorded."""
    recorded_spans()
    settings = names.consumer_settings(tmp_path)
    deps = build_deps(settings)
    stop = asyncio.Event()
    runner = Runner(settings, HANDLERS, deps)
    consuming = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(runner.consuming.wait(), 10)
        client: Client = await aiohttp_client(build_app(make_settings(**names.gateway_overrides())))
        await wait_readiness(client, 200, within=10)
        await login(client)
        yield client, settings.run_store
    finally:
        stop.set()
        await asyncio.wait_for(consuming, 10)
        await deps.runs.close()


async def handled_trace(client: Client, store: SecretStr, headers: dict[str, str]) -> str:
    """POST a sync with `headers`; once the consumer recorded it, the trace id its span has."""
    response = await client.post("/api/sync", json={"data": 1}, headers=headers)
    assert response.status == 202
    event_id = (await response.json())["id"]
    deadline = time.monotonic() + 10
    while stored_run(store, event_id) is None:
        assert time.monotonic() < deadline, "the consumer never recorded the run"
        await asyncio.sleep(0.05)
    while not (found := [s for s in consumer_spans() if message_id(s) == event_id]):
        assert time.monotonic() < deadline, "the consumer's span never ended"
        await asyncio.sleep(0.05)
    context = found[0].context
    assert context is not None
    return format_trace_id(context.trace_id)


def consumer_spans() -> list[ReadableSpan]:
    return [s for s in recorded_spans().get_finished_spans() if s.kind is SpanKind.CONSUMER]


def message_id(span: ReadableSpan) -> object:
    return (span.attributes or {}).get("messaging.message.id")


def linked(spans: list[ReadableSpan]) -> tuple[ReadableSpan, ReadableSpan, ReadableSpan]:
    """The server, producer and consumer spans, each the parent of the next."""
    by_kind = {span.kind: span for span in spans}
    assert set(by_kind) == {SpanKind.SERVER, SpanKind.PRODUCER, SpanKind.CONSUMER}, spans
    server, producer, consumer = (
        by_kind[SpanKind.SERVER],
        by_kind[SpanKind.PRODUCER],
        by_kind[SpanKind.CONSUMER],
    )
    assert server.name == "POST /api/sync"
    assert (server.attributes or {})["http.response.status_code"] == 202
    assert server.context is not None
    assert producer.context is not None
    assert producer.parent is not None
    assert producer.parent.span_id == server.context.span_id
    # Across the broker: the consumer's parent is the publish, read from the traceparent header.
    assert consumer.parent is not None
    assert consumer.parent.is_remote
    assert consumer.parent.span_id == producer.context.span_id
    assert (consumer.attributes or {})["syncgate.settlement"] == "ack"
    return server, producer, consumer


async def test_the_clients_trace_links_request_publish_and_handler(
    traced: tuple[Client, SecretStr],
) -> None:
    client, store = traced
    trace_id = await handled_trace(
        client,
        store,
        {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "congo=t61rcWkgMzE"},
    )

    assert trace_id == CLIENT_TRACE
    server, _producer, consumer = linked(spans_of(trace_id))
    assert server.parent is not None
    assert server.parent.is_remote
    assert format_span_id(server.parent.span_id) == CLIENT_SPAN
    # tracestate travels too, to the consumer's side of the broker.
    assert consumer.context is not None
    assert consumer.context.trace_state.to_header() == "congo=t61rcWkgMzE"


async def test_without_a_traceparent_a_new_trace_still_links_all_three(
    traced: tuple[Client, SecretStr],
) -> None:
    client, store = traced
    first = await handled_trace(client, store, {})
    second = await handled_trace(client, store, {"traceparent": "garbage"})

    assert len({first, second, CLIENT_TRACE}) == 3
    for trace_id in (first, second):
        server, _, _ = linked(spans_of(trace_id))
        assert server.parent is None
