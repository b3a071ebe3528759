"""The gateway makes room for SYNCGATE_MAX_CONNECTIONS in its RLIMIT_NOFILE, within the hard
limit, and says so when the hard limit is too low (gateway/connections.py)."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator

import pytest

from gateway.connections import fit_descriptor_limit


@pytest.fixture
def limits() -> Iterator[tuple[int, int]]:
    """The process's limits, put back after the test."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield before
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_the_soft_limit_is_raised_to_fit_the_cap(limits: tuple[int, int]) -> None:
    _, hard = limits
    if hard != resource.RLIM_INFINITY and hard < 1024 + 256:
        pytest.skip(f"the hard limit ({hard}) leaves no room to raise the soft one")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    assert fit_descriptor_limit(1024) == 1024
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (1024 + 256, hard)


def test_a_cap_past_the_hard_limit_is_cut_to_what_fits_with_a_warning(
    limits: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, hard = limits
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit to go past")
    with caplog.at_level(logging.WARNING, logger="syncgate.gateway.connections"):
        fitting = fit_descriptor_limit(hard + 10_000)
    assert fitting == hard - 256
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    assert "SYNCGATE_MAX_CONNECTIONS" in caplog.text
