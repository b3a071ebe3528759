"""The peer: the usual alternative built with FastAPI + FastStream, doing the same job.

    uvicorn bench.peer:app --workers 1        # the HTTP side
    python -m bench.peer consumer             # the consuming side

Same event model and body validation as the gateway, the same Fernet cookie decrypted with the
same key (the user is looked up in the same users file), a persistent publish to a durable
topic exchange, and a consumer that validates each event and records it in the same SQLite run
store. Settings come from BENCH_PEER_* variables, set by the bench.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from fastapi import Depends, FastAPI, HTTPException, Request
from faststream import FastStream
from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas import QueueType

from common.stores.runs_sqlite import SqliteRunStore
from gateway.app_settings import load_app_settings
from gateway.sessions import cookie_name
from gateway.users import UserStore
from gateway.views import SyncRequest
from schemas.events import AppSettings, ConfluenceAppSync, EventUser

ROUTING_KEY = "confluence.app.sync"
SESSION_TTL = 8 * 60 * 60


def _env(name: str) -> str:
    return os.environ[f"BENCH_PEER_{name}"]


def _exchange() -> RabbitExchange:
    return RabbitExchange(_env("EXCHANGE"), type=ExchangeType.TOPIC, durable=True)


broker = RabbitBroker(os.environ.get("BENCH_PEER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await broker.start()
    await broker.declare_exchange(_exchange())
    yield
    await broker.stop()


app = FastAPI(lifespan=lifespan)


class CookieSession:
    """Decrypts the gateway's session cookie and finds its user, as the gateway does."""

    def __init__(self, keys: list[str], users_file: Path) -> None:
        self.fernet = MultiFernet([Fernet(key) for key in keys])
        self.users = UserStore(users_file)

    def user(self, request: Request) -> EventUser:
        token = request.cookies.get(cookie_name(secure=False))
        if token is None:
            raise HTTPException(401, "sign in first")
        try:
            data = orjson.loads(self.fernet.decrypt(token.encode(), ttl=SESSION_TTL))
            user_id = data["session"]["uid"]
        except (InvalidToken, ValueError, KeyError, TypeError):
            raise HTTPException(401, "sign in first") from None
        record = self.users.by_id(str(user_id))
        if record is None:
            raise HTTPException(401, "the user no longer exists")
        return record.public


@functools.cache
def sessions() -> CookieSession:
    return CookieSession(_env("SESSION_KEYS").split(","), Path(_env("USERS_FILE")))


@functools.cache
def app_settings() -> AppSettings:
    # Read once: the peer does not watch the file for changes, which only flatters it.
    return load_app_settings(Path(_env("APP_SETTINGS_FILE")))


def session_user(request: Request) -> EventUser:
    return sessions().user(request)


@app.post("/api/sync", status_code=202)
async def sync(
    body: SyncRequest, user: Annotated[EventUser, Depends(session_user)]
) -> dict[str, str]:
    event = ConfluenceAppSync.new(user=user, app_settings=app_settings(), data=body.data)
    await broker.publish(
        event,
        exchange=_exchange(),
        routing_key=ROUTING_KEY,
        persist=True,
        message_id=str(event.id),
    )
    return {"success": "true", "id": str(event.id)}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def consumer_app() -> FastStream:
    """A FastStream subscriber on a durable quorum queue bound to the peer's exchange."""
    store = SqliteRunStore(Path(_env("RUN_STORE")))
    queue = RabbitQueue(
        _env("QUEUE"), queue_type=QueueType.QUORUM, durable=True, routing_key="confluence.#"
    )
    channel = Channel(prefetch_count=int(os.environ.get("BENCH_PEER_PREFETCH", "64")))

    @broker.subscriber(queue, _exchange(), channel=channel)
    async def record(event: ConfluenceAppSync) -> None:
        received_at = time.time_ns() // 1_000_000
        await asyncio.to_thread(store.record_sync, event, received_at=received_at)

    return FastStream(broker)


if __name__ == "__main__":
    asyncio.run(consumer_app().run())
