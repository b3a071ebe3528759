"""Bounded text: header values cut at a UTF-8 boundary with a marker, the registry's error
quoting a bounded name, and `syncgate dlq list` showing a bounded, readable reason."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.republish import (
    ERROR_HEADER,
    HEADER_VALUE_LIMIT,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    truncated,
)
from consumers.dlq import describe
from schemas.registry import REGISTRY, UnknownEvent

MARKER = re.compile(r"…\[truncated (\d+) bytes\]\Z")


@given(text=st.text(), limit=st.integers(min_value=64, max_value=4096))
@hypothesis.settings(max_examples=500, deadline=None)
def test_text_is_cut_at_the_limit_at_a_character_boundary_with_the_marker(
    text: str, limit: int
) -> None:
    clean = text.encode("utf-8", "replace").decode()  # a lone surrogate is sent as "?"
    size = len(clean.encode())
    cut = truncated(text, limit)

    assert len(cut.encode()) <= limit
    if size <= limit:
        assert cut == clean
        return
    marker = MARKER.search(cut)
    assert marker is not None, cut[-40:]
    kept = cut[: marker.start()]
    assert clean.startswith(kept), "a prefix, cut between characters"
    assert len(kept.encode()) + int(marker.group(1)) == size, "the marker says what was cut"
    # As much as fits: one more character (at most 4 bytes) would not have.
    assert len(kept.encode()) > limit - len(marker.group(0).encode()) - 4


def test_a_cut_never_splits_a_character() -> None:
    for width in ("a", "é", "€", "😀"):  # 1 to 4 bytes of UTF-8
        for limit in range(64, 80):
            cut = truncated(width * 1000, limit)
            assert set(cut[: cut.index("…[")]) == {width}
            assert len(cut.encode()) <= limit


def test_short_text_is_left_alone() -> None:
    assert truncated("boom") == "boom"
    assert truncated("x" * HEADER_VALUE_LIMIT) == "x" * HEADER_VALUE_LIMIT
    assert truncated("x" * (HEADER_VALUE_LIMIT + 1)) == "x" * 1001 + "…[truncated 24 bytes]"


def test_an_unknown_events_error_quotes_a_bounded_name() -> None:
    with pytest.raises(UnknownEvent) as raised:
        REGISTRY.resolve("n" * 200_000, "1" * 5000)
    message = str(raised.value)
    assert len(message) < 500, len(message)
    assert "truncated 199900 characters" in message
    assert "truncated 4900 characters" in message
    with pytest.raises(UnknownEvent, match=r"^no event model for name='jira/app.sync' v='1'$"):
        REGISTRY.resolve("jira/app.sync", "1")


@dataclass
class Letter:
    """What `describe` reads from a message fetched from the DLQ."""

    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = "e-1"
    timestamp: datetime | None = None


def death(reason: str, queue: str = "work", count: int = 1) -> dict[str, Any]:
    """One x-death entry as RabbitMQ writes it."""
    return {
        "count": count,
        "reason": reason,
        "queue": queue,
        "time": datetime(2026, 1, 2, tzinfo=UTC),
        "exchange": "events",
        "routing-keys": ["confluence.app.sync"],
    }


def test_a_message_the_consumer_left_to_the_broker_says_why() -> None:
    letter = describe(Letter(headers={"x-death": [death("rejected")]}), "work")

    assert letter.reason == "rejected"
    assert "would not fit in a frame" in letter.error
    assert letter.attempts == 1
    assert letter.routing_key == "confluence.app.sync"
    assert letter.dead_lettered_at == datetime(2026, 1, 2, tzinfo=UTC)


def test_the_delivery_limit_is_explained_with_the_last_error() -> None:
    headers = {"x-death": [death("delivery_limit", count=1)], ERROR_HEADER: "boom"}

    letter = describe(Letter(headers=headers), "work")

    assert letter.reason == "delivery_limit"
    assert "x-delivery-limit" in letter.error
    assert letter.error.endswith("; last error: boom")


def test_our_own_reason_wins_over_x_death() -> None:
    headers = {
        REASON_HEADER: "invalid_body",
        ERROR_HEADER: "1 validation error\nid\n  Input should be a valid UUID",
        "x-death": [death("expired", queue="work.retry.1000ms")],
    }

    letter = describe(Letter(headers=headers), "work")

    assert letter.reason == "invalid_body"
    assert letter.error == "1 validation error id   Input should be a valid UUID", "one line"


def test_what_a_publisher_put_in_the_headers_is_shown_bounded() -> None:
    """A message the broker dead-lettered keeps every header it was published with."""
    headers = {
        REASON_HEADER: "r" * 100_000,
        ERROR_HEADER: "line\n" * 100_000,
        ROUTING_KEY_HEADER: "k" * 256,
        "x-syncgate-dead-lettered-at": 2**62,
    }

    letter = describe(Letter(headers=headers, timestamp=None), "work")

    assert len(letter.reason.encode()) <= 256
    assert len(letter.error.encode()) <= HEADER_VALUE_LIMIT
    assert "\n" not in letter.error
    assert letter.routing_key is None, "longer than any AMQP routing key: not the original"
    assert letter.dead_lettered_at is None
