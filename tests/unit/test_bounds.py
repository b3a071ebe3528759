"""Bounded text: header values cut at a UTF-8 boundary with a marker, and the registry's
error quoting a bounded name."""

from __future__ import annotations

import re

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.republish import (
    HEADER_VALUE_LIMIT,
    truncated,
)
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
    assert truncated("x" * (HEADER_VALUE_LIMIT + 1)) == "x" * 999 + "…[truncated 26 bytes]"


def test_an_unknown_events_error_quotes_a_bounded_name() -> None:
    with pytest.raises(UnknownEvent) as raised:
        REGISTRY.resolve("n" * 200_000, "1" * 5000)
    message = str(raised.value)
    assert len(message) < 500, len(message)
    assert "truncated 199900 characters" in message
    assert "truncated 4900 characters" in message
    with pytest.raises(UnknownEvent, match=r"^no event model for name='jira/app.sync' v='1'$"):
        REGISTRY.resolve("jira/app.sync", "1")
