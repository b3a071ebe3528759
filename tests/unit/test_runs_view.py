"""GET /api/runs/{id} against a real SQLite run store, and GET / with its static files."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from common.stores.runs_sqlite import SqliteRunStore
from gateway.app_settings import load_app_settings
from gateway.settings import GatewaySettings
from schemas.events import ConfluenceAppSync, EventUser
from tests.conftest import AiohttpClient, login
from tests.support.app import gateway_app
from tests.support.fakes import FakePublisher

Client = TestClient[web.Request, web.Application]

ADA = EventUser(id="u-ada", email="ada@example.com", name="Ada Lovelace")


def record_run(store: Path, app_settings_file: Path, user: EventUser = ADA) -> str:
    """Record a run as the consumer's handler does; return its event id."""
    event = ConfluenceAppSync.new(user=user, app_settings=load_app_settings(app_settings_file))
    runs = SqliteRunStore(store)
    try:
        runs.record_sync(event, received_at=1_700_000_000_000)
    finally:
        runs.close()
    return str(event.id)


async def client_for(
    aiohttp_client: AiohttpClient, settings: GatewaySettings, *, email: str = "ada@example.com"
) -> Client:
    client: Client = await aiohttp_client(gateway_app(settings, publisher=FakePublisher()))
    await login(client, email)
    return client


async def test_a_handled_run_of_ones_own_shows_as_handled(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    tmp_path: Path,
    app_settings_file: Path,
) -> None:
    store = tmp_path / "runs.sqlite3"
    event_id = record_run(store, app_settings_file)
    client = await client_for(aiohttp_client, make_settings(run_store=store))

    response = await client.get(f"/api/runs/{event_id}")
    assert response.status == 200
    body = await response.json()
    assert body["id"] == event_id
    assert body["status"] == "handled"
    assert body["receivedAt"] == 1_700_000_000_000
    assert body["handledAt"] >= body["receivedAt"]


async def test_someone_elses_run_is_indistinguishable_from_an_unseen_one(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    tmp_path: Path,
    app_settings_file: Path,
) -> None:
    store = tmp_path / "runs.sqlite3"
    adas = record_run(store, app_settings_file)
    client = await client_for(
        aiohttp_client, make_settings(run_store=store), email="bob@example.com"
    )

    mine_unseen = str(uuid.uuid4())
    for event_id in (adas, mine_unseen):
        response = await client.get(f"/api/runs/{event_id}")
        assert response.status == 200
        assert await response.json() == {"id": event_id, "status": "pending"}


async def test_before_the_consumer_made_its_store_every_run_is_pending(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings], tmp_path: Path
) -> None:
    store = tmp_path / "not-yet" / "runs.sqlite3"
    client = await client_for(aiohttp_client, make_settings(run_store=store))
    event_id = str(uuid.uuid4())

    response = await client.get(f"/api/runs/{event_id}")
    assert await response.json() == {"id": event_id, "status": "pending"}
    assert not store.exists(), "the gateway must never create the consumer's store"


async def test_a_store_file_without_its_tables_yet_is_pending_not_503(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings], tmp_path: Path
) -> None:
    # The consumer has opened the file but not yet created its tables (or another tool made
    # an empty database there): nothing has run, which is not an outage.
    store = tmp_path / "runs.sqlite3"
    sqlite3.connect(store).close()
    assert store.exists()
    client = await client_for(aiohttp_client, make_settings(run_store=store))
    event_id = str(uuid.uuid4())

    response = await client.get(f"/api/runs/{event_id}")
    assert response.status == 200
    assert await response.json() == {"id": event_id, "status": "pending"}


async def test_an_unreadable_store_is_503_and_a_bad_id_404(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings], tmp_path: Path
) -> None:
    store = tmp_path / "runs.sqlite3"
    store.write_bytes(b"this is not a SQLite database, just bytes" * 100)
    client = await client_for(aiohttp_client, make_settings(run_store=store))

    response = await client.get(f"/api/runs/{uuid.uuid4()}")
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "run_store_unavailable"

    response = await client.get("/api/runs/not-a-uuid")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_runs_need_a_session(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    client: Client = await aiohttp_client(gateway_app(make_settings(), publisher=FakePublisher()))
    response = await client.get(f"/api/runs/{uuid.uuid4()}")
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "not_authenticated"


async def test_the_page_and_its_files_are_served_with_a_strict_policy(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., GatewaySettings]
) -> None:
    client: Client = await aiohttp_client(gateway_app(make_settings(), publisher=FakePublisher()))

    page = await client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = await page.text()
    assert 'id="login-form"' in html
    assert 'id="sync-button"' in html
    for asset, kind in (("/static/page.js", "javascript"), ("/static/page.css", "text/css")):
        assert f'"{asset}"' in html
        response = await client.get(asset)
        assert response.status == 200
        assert kind in response.content_type
