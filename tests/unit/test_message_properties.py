"""The event message's AMQP properties, as the broker and consumers read them back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp.header import ContentHeader

from gateway.message_properties import message_properties
from tests.support.events import sync_event

# Up to 255 bytes once encoded: request ids a client offers are ASCII; ours are hex.
correlation_ids = st.text(min_size=1, max_size=63)
# pamqp reads a timestamp past 2106 (2**32 s) as milliseconds: a guess on its side of the wire.
readable_timestamps = st.integers(min_value=0, max_value=0xFFFFFFFF * 1000 + 999)
# What common/tracing.py's inject gives: nothing, a traceparent, or both headers.
traces = st.sampled_from(
    [
        {},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        },
    ]
)


@given(ts=readable_timestamps, event_id=st.uuids(), correlation_id=correlation_ids, trace=traces)
def test_the_broker_reads_back_what_was_set(
    ts: int, event_id: uuid.UUID, correlation_id: str, trace: dict[str, str]
) -> None:
    event = sync_event(ts=ts, id=event_id)
    sent = message_properties(event, correlation_id=correlation_id, trace=trace)
    frame = ContentHeader(properties=sent, body_size=10).marshal()

    received = ContentHeader()
    received.unmarshal(frame)

    read = received.properties
    assert (read.message_id, read.correlation_id) == (str(event_id), correlation_id)
    assert (read.message_type, read.delivery_mode) == (event.name, 2)
    seconds, millis = divmod(ts, 1000)
    assert read.headers == {
        "v": "1",
        "cloudEvents:specversion": "1.0",
        "cloudEvents:id": str(event_id),
        "cloudEvents:source": "urn:syncgate:gateway",
        "cloudEvents:type": "confluence/app.sync",
        "cloudEvents:time": datetime.fromtimestamp(seconds, UTC)
        .replace(microsecond=millis * 1000)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "cloudEvents:dataschema": "urn:syncgate:schema:confluence.app.sync.v1.schema.json",
        "cloudEvents:subject": "u-ada",
        **trace,
    }
    assert (read.content_type, read.content_encoding) == ("application/json", "utf-8")
    assert read.app_id == "syncgate-gateway"
    assert read.timestamp is not None
    assert int(read.timestamp.timestamp()) == ts // 1000


def test_a_correlation_id_too_long_for_amqp_is_refused_when_made() -> None:
    event = sync_event(ts=1_700_000_000_123, id=uuid.uuid4())

    with pytest.raises(ValueError, match="255 bytes"):
        message_properties(event, correlation_id="é" * 128)


def test_an_empty_correlation_id_is_refused() -> None:
    # pamqp would leave an empty property out, which these bytes never do.
    event = sync_event(ts=1_700_000_000_123, id=uuid.uuid4())

    with pytest.raises(ValueError, match="empty"):
        message_properties(event, correlation_id="")
