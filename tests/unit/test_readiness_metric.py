"""syncgate_gateway_ready: /metrics says what /readyz says, read at each scrape."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.settings import GatewaySettings
from tests.conftest import AiohttpClient
from tests.support.app import gateway_client
from tests.support.fakes import FakePublisher, LocalRevocations

Client = TestClient[web.Request, web.Application]


async def scraped_readiness(client: Client) -> float:
    response = await client.get("/metrics")
    assert response.status == 200
    [value] = [
        sample.value
        for family in text_string_to_metric_families(await response.text())
        for sample in family.samples
        if sample.name == "syncgate_gateway_ready"
    ]
    return value


@pytest.mark.parametrize(
    ("publisher_ready", "replayed"), list(itertools.product([True, False], repeat=2))
)
async def test_the_ready_gauge_follows_readyz_at_each_scrape(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    publisher_ready: bool,
    replayed: bool,
) -> None:
    publisher = FakePublisher()
    revocations = LocalRevocations(time.time)
    client = await gateway_client(
        aiohttp_client, make_settings(), publisher=publisher, revocations=revocations
    )
    assert await scraped_readiness(client) == 1.0
    # Changed after the app was built: the gauge is read when scraped, not set once.
    publisher.ready = publisher_ready
    revocations.caught_up = replayed
    readyz = (await client.get("/readyz")).status
    gauge = await scraped_readiness(client)
    assert (readyz, gauge) == ((200, 1.0) if publisher_ready and replayed else (503, 0.0))
