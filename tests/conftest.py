"""Shared fixtures: settings in a temp dir, a fake publisher, and unique broker names."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.fernet import Fernet

from consumers.settings import ConsumerSettings
from gateway.settings import GatewaySettings
from gateway.users import UserRecord, UsersFile, hash_password
from tests.support.fakes import FakePublisher

AMQP_URL = os.environ.get("SYNCGATE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PASSWORD = "correct horse battery staple"
EMAIL = "ada@example.com"

AiohttpClient = Callable[..., Any]


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def users_file(tmp_path: Path, password_hash: str) -> Path:
    path = tmp_path / "users.json"
    users = UsersFile(
        users=(
            UserRecord(id="u-ada", email=EMAIL, name="Ada Lovelace", password_hash=password_hash),
            UserRecord(
                id="u-bob", email="bob@example.com", name="Bob", password_hash=password_hash
            ),
        )
    )
    path.write_text(users.model_dump_json())
    return path


@pytest.fixture
def app_settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "app-settings.toml"
    path.write_text(
        'baseUrl = "https://example.atlassian.net/wiki"\n'
        'spaceKeys = ["ENG"]\n'
        "syncIntervalMinutes = 30\n"
        "includeAttachments = true\n"
    )
    return path


@pytest.fixture
def session_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def make_settings(
    users_file: Path, app_settings_file: Path, session_key: str
) -> Callable[..., GatewaySettings]:
    def make(**overrides: Any) -> GatewaySettings:
        values: dict[str, Any] = {
            "session_keys": session_key,
            "users_file": users_file,
            "app_settings_file": app_settings_file,
            "cookie_secure": False,
            "amqp_url": AMQP_URL,
        }
        values.update(overrides)
        return GatewaySettings(**values)

    return make


@pytest.fixture
def fake_publisher() -> FakePublisher:
    return FakePublisher()


async def login(client: TestClient[web.Request, web.Application], email: str = EMAIL) -> str:
    """Sign in; the session's CSRF token becomes a default header of the client, and is returned."""
    response = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status == 200, await response.text()
    token: str = (await response.json())["csrfToken"]
    client.session.headers["X-CSRF-Token"] = token
    return token


@pytest.fixture
async def names() -> AsyncIterator[BrokerNames]:
    """Unique broker names for one test; everything named with its prefix is deleted after it,
    whichever process declared it (a gateway's revocation stream, a consumer's retry queues)."""
    names = BrokerNames()
    yield names
    connection = await aio_pika.connect(AMQP_URL)
    try:
        await delete_topology(connection, names)
    finally:
        await connection.close()


class BrokerNames:
    """Unique exchange and queue names for one test, and their cleanup."""

    def __init__(self) -> None:
        self.prefix = prefix = f"test.{uuid.uuid4().hex[:10]}"
        self.exchange = f"{prefix}.events"
        self.unrouted = f"{prefix}.unrouted"
        self.dlx = f"{prefix}.dlx"
        self.queue = f"{prefix}.work"
        self.revocations = f"{prefix}.revocations"

    def gateway_overrides(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "unrouted_exchange": self.unrouted,
            "revocation_stream": self.revocations,
        }

    def consumer_settings(self, tmp_path: Path, **overrides: Any) -> ConsumerSettings:
        values: dict[str, Any] = {
            "amqp_url": AMQP_URL,
            "exchange": self.exchange,
            "unrouted_exchange": self.unrouted,
            "queue": self.queue,
            "dead_letter_exchange": self.dlx,
            "run_store": tmp_path / "runs.sqlite3",
            "retry_base_delay": 0.2,
        }
        values.update(overrides)
        return ConsumerSettings(**values)


@pytest.fixture
async def amqp(names: BrokerNames) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    """A test's own connection (the `names` fixture deletes the test's topology after it)."""
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        yield connection
    finally:
        await connection.close()


MANAGEMENT_URL = os.environ.get("SYNCGATE_TEST_MANAGEMENT_URL", "http://127.0.0.1:15672")


async def management_get(path: str) -> Any:
    auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.get(f"{MANAGEMENT_URL}/api/{path}") as response,
    ):
        response.raise_for_status()
        return await response.json()


async def delete_topology(connection: aio_pika.abc.AbstractConnection, names: BrokerNames) -> None:
    """Delete everything whose name starts with this test's prefix, found by the management API."""
    channel = await connection.channel()
    for queue in await management_get("queues/%2F?columns=name"):
        if queue["name"].startswith(names.prefix):
            await channel.queue_delete(queue["name"])
    for exchange in await management_get("exchanges/%2F?columns=name"):
        if exchange["name"].startswith(names.prefix):
            await channel.exchange_delete(exchange["name"])
    await channel.close()
