"""The `postgres_url` fixture (a database of the test's own on the machine's PostgreSQL), and
the `cluster` fixture: scripts/cluster.sh's three-node RabbitMQ cluster, started fresh once
per test session (only if a test asks for it) and stopped with --purge at the end.

Time limits: pytest-timeout times a test's set-up, call and tear-down together (unless
timeout_func_only is set), and a session fixture is set up inside the first test that uses
it and torn down inside the session's last test. So that first test gets START_BUDGET more
seconds and the session's last test STOP_BUDGET more, instead of raising the limit for every
test: a fresh start takes about 30-40 s here, on top of whatever the test itself does.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.cluster import START_LIMIT, STOP_LIMIT, Cluster
from tests.support.postgres import fresh_database
from tests.support.redis import REDIS_URL, delete_prefix, unique_prefix

START_BUDGET = START_LIMIT
STOP_BUDGET = STOP_LIMIT


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The running cluster. Set-up and tear-down run the script through their own event loop
    (asyncio.run): no test loop runs at those points, and the Cluster object is not tied to
    any loop, so tests on their own loops use it freely.

    A start that fails stops whatever it started, but keeps the state dir (the error
    message carries the log tails; the full logs stay there until the next start --fresh).
    """
    cluster = Cluster()
    try:
        asyncio.run(cluster.start(fresh=True))
    except BaseException:
        asyncio.run(cluster.stop())
        raise
    try:
        yield cluster
    finally:
        asyncio.run(cluster.stop(purge=True))


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """The URL of a new database on the machine's PostgreSQL, dropped after the test."""
    async with fresh_database() as url:
        yield url


def _timeout_of(item: pytest.Item) -> float | None:
    """The pytest-timeout limit that applies to the item, as pytest-timeout looks it up."""
    marker = item.get_closest_marker("timeout")
    value: object
    if marker is not None:
        value = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
    else:
        value = (
            item.config.getoption("timeout", None)
            or os.environ.get("PYTEST_TIMEOUT")
            or item.config.getini("timeout")
        )
    if value is None or value == "":
        return None
    seconds = float(str(value))
    return seconds if seconds > 0 else None


def _extend_timeout(item: pytest.Item, extra: float) -> None:
    limit = _timeout_of(item)
    if limit is None:
        return  # no limit to extend
    marker = item.get_closest_marker("timeout")
    # The marker's other settings (method, func_only) stay as they were.
    args = () if marker is None else marker.args[1:]
    options = {} if marker is None else {k: v for k, v in marker.kwargs.items() if k != "timeout"}
    # Prepended, so that it is the closest timeout marker, the one pytest-timeout reads.
    item.add_marker(pytest.mark.timeout(limit + extra, *args, **options), append=False)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """After deselection (-k, -m) and any reordering: the first test that uses `cluster`
    sets it up, the session's last test tears it down."""
    first = next((item for item in items if "cluster" in getattr(item, "fixturenames", ())), None)
    if first is None or not first.config.pluginmanager.hasplugin("timeout"):
        return
    _extend_timeout(first, START_BUDGET)
    _extend_timeout(items[-1], STOP_BUDGET)


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own on the machine's Redis; every key under it is deleted
    after the test, whichever gateway or store wrote it."""
    prefix = unique_prefix()
    yield prefix
    await delete_prefix(REDIS_URL, prefix)
