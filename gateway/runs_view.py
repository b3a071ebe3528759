"""GET /api/runs/{event_id}: has the consumer handled this sync yet?

The answer comes from the consumer's SQLite run store (SYNCGATE_RUN_STORE, the same file on
both sides), opened read-only per request: the gateway never creates or writes it. A run
that is not there yet, or that belongs to someone else, is "pending": an id alone must not
tell one user whether another user's sync exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.errors import RunStoreUnavailable
from gateway.keys import SETTINGS
from gateway.responses import json_response
from gateway.sessions import require_user

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@dataclass(frozen=True, slots=True)
class HandledRun:
    user_id: str
    received_at: int
    handled_at: int


def read_run(store: Path, event_id: str) -> HandledRun | None:
    """The handled run with this id, or None while the consumer has not recorded it."""
    if not store.exists():
        return None
    # mode=ro: a missing file is an error rather than a new empty database.
    uri = f"{store.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=2.0)) as db:
        try:
            row = db.execute(
                "SELECT user_id, received_at, handled_at FROM runs WHERE event_id = ?",
                (event_id,),
            ).fetchone()
        except sqlite3.OperationalError as exc:
            # The consumer creates the table when it opens the store; until then, nothing ran.
            if "no such table" in str(exc):
                return None
            raise
    return None if row is None else HandledRun(*row)


@routes.get("/api/runs/{event_id}")
async def run_status(request: web.Request) -> web.Response:
    signed_in = await require_user(request)
    try:
        event_id = str(uuid.UUID(request.match_info["event_id"]))
    except ValueError:
        raise web.HTTPNotFound(reason="there is no run with that id") from None
    store = request.app[SETTINGS].run_store
    try:
        run = await asyncio.to_thread(read_run, store, event_id)
    except sqlite3.Error as exc:
        log.warning("could not read the run store %s: %r", store, exc)
        raise RunStoreUnavailable("the run store cannot be read right now; try again") from None
    if run is None or run.user_id != signed_in.user.id:
        return json_response({"id": event_id, "status": "pending"})
    return json_response(
        {
            "id": event_id,
            "status": "handled",
            "receivedAt": run.received_at,
            "handledAt": run.handled_at,
        }
    )
