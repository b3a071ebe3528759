"""GET /api/runs/{event_id}: has the consumer handled this sync yet?

The answer comes from the run store (SYNCGATE_RUN_STORE, the one the consumer writes),
through its reader: the gateway never creates or writes it. A run that is not there yet, or
that belongs to someone else, is "pending": an id alone must not tell one user whether
another user's sync exists.
"""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from common.stores.runs import RunStoreUnavailable
from gateway.errors import RunStoreUnavailable as RunStoreUnavailableError
from gateway.keys import RUNS, SETTINGS
from gateway.responses import json_response
from gateway.routing import RouteTable
from gateway.sessions import require_user

log = logging.getLogger(__name__)

routes = RouteTable()


@routes.get("/api/runs/{event_id}")
async def run_status(request: web.Request) -> web.Response:
    signed_in = await require_user(request)
    try:
        event_id = str(uuid.UUID(request.match_info["event_id"]))
    except ValueError:
        raise web.HTTPNotFound(reason="there is no run with that id") from None
    try:
        run = await request.app[RUNS].get(event_id)
    except RunStoreUnavailable as exc:
        log.warning("%s", exc)
        raise RunStoreUnavailableError(
            "the run store cannot be read right now; try again",
            retry_after=request.app[SETTINGS].retry_after,
        ) from None
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
