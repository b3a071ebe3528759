"""The operators' routes behind the DLQ page: read, replay and discard dead-lettered events,
in the consumer's DLQ and in the unrouted queue, and the audit trail of what was done.

Every route checks the role server-side, on each request, from the users file as it is now
(a demoted operator loses the routes at once): a plain user gets 403 in the error shape. The
state-changing ones go through the CSRF middleware like every other POST.

Reading: basic.get has no offset, so page N reads every message before it. A look reads at
most SYNCGATE_DLQ_READ_DEPTH messages from the head and hands all of them back; the page says
how many lie deeper (`beyondReadDepth`), which only a replay or discard of those before can
bring within reach. Replaying keeps `dlq replay`'s guarantees (common.dead_letters): the copy
is confirmed before the message is acked, and "all" means the count at the start, never a
loop. Each replayed or discarded event is one audit entry (gateway/audit.py).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from common.dead_letters import DeadLetter, DeadLetterError
from gateway.audit import Action, AuditEntry
from gateway.body import read_json_object, validate_body
from gateway.dead_letters import QUEUE_NAMES, DeadLetterSource, QueueName, QueuesUnavailable
from gateway.errors import BrokerUnavailable, Forbidden, NotFound, ValidationFailed
from gateway.identity import SignedIn
from gateway.keys import AUDIT, CLOCK, OPERATOR_QUEUES, SETTINGS, USERS
from gateway.responses import json_response
from gateway.routing import RouteTable
from gateway.sessions import require_user

log = logging.getLogger(__name__)

routes = RouteTable()

PAGE_SIZE = 50
MAX_SELECTION = 100
# The body is shown as text when it is UTF-8, else in base64; cut to this many bytes.
BODY_LIMIT = 64 * 1024


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReplayRequest(_Request):
    """`eventIds` (one or a selection) or `all: true`, not both. With `all`, `limit` replays
    at most that many from the head: the page replays a long queue in such steps, counting
    them against the total it read at the start, and shows the progress."""

    eventIds: tuple[str, ...] = Field(default=(), max_length=MAX_SELECTION)
    all: bool = False
    limit: int | None = Field(default=None, ge=1, le=10_000)


class DiscardRequest(_Request):
    eventId: str = Field(min_length=1, max_length=256)
    confirm: str = Field(description="The event id again, typed by the operator.")


async def require_operator(request: web.Request) -> SignedIn:
    """The signed-in user if they are an operator now; 401 if not signed in, else 403."""
    signed_in = await require_user(request)
    record = request.app[USERS].by_id(signed_in.user.id)
    if record is None or not record.is_operator:
        raise Forbidden("this needs the operator role (syncgate users add --role operator)")
    return signed_in


def _which(request: web.Request) -> QueueName:
    name = request.match_info["queue"]
    for known in QUEUE_NAMES:
        if name == known:
            return known
    raise NotFound(f"there is no queue {name!r} here; use one of {', '.join(QUEUE_NAMES)}")


def _unavailable(request: web.Request, exc: Exception) -> BrokerUnavailable:
    log.warning("operator queues: %s", exc)
    return BrokerUnavailable(
        "the broker cannot be reached right now; try again",
        retry_after=request.app[SETTINGS].retry_after,
    )


def letter_json(letter: DeadLetter, position: int) -> dict[str, Any]:
    when = letter.dead_lettered_at
    return {
        "position": position,
        "eventId": letter.event_id,
        "deadLetteredAt": int(when.timestamp() * 1000) if when is not None else None,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "routingKey": letter.routing_key,
        "error": letter.error,
    }


def body_json(body: bytes) -> dict[str, Any]:
    shown = body[:BODY_LIMIT]
    try:
        text, encoding = shown.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(shown).decode(), "base64"
    return {
        "body": text,
        "encoding": encoding,
        "bytes": len(body),
        "truncated": len(body) > len(shown),
    }


@routes.get("/api/operator/queues/{queue}")
async def list_queue(request: web.Request) -> web.Response:
    await require_operator(request)
    which = _which(request)
    depth = request.app[SETTINGS].dlq_read_depth
    try:
        page = int(request.query.get("page", "1"))
    except ValueError:
        page = 0
    if page < 1:
        raise ValidationFailed("page is a whole number from 1")
    start = (page - 1) * PAGE_SIZE
    try:
        async with request.app[OPERATOR_QUEUES].open(which) as queue:
            count = await queue.count()
            read = await queue.read(limit=min(start + PAGE_SIZE, depth)) if start < depth else []
    except QueuesUnavailable as exc:
        raise _unavailable(request, exc) from None
    except DeadLetterError as exc:
        raise NotFound(str(exc)) from None
    items = [letter_json(letter, start + n + 1) for n, (letter, _) in enumerate(read[start:])]
    return json_response(
        {
            "queue": queue.name,
            "count": count,
            "page": page,
            "pageSize": PAGE_SIZE,
            "readDepth": depth,
            "beyondReadDepth": max(0, count - depth),
            "items": items,
        }
    )


@routes.get("/api/operator/queues/{queue}/events/{event_id}")
async def show_body(request: web.Request) -> web.Response:
    await require_operator(request)
    which = _which(request)
    event_id = request.match_info["event_id"]
    depth = request.app[SETTINGS].dlq_read_depth
    try:
        async with request.app[OPERATOR_QUEUES].open(which) as queue:
            read = await queue.read(limit=depth)
    except QueuesUnavailable as exc:
        raise _unavailable(request, exc) from None
    except DeadLetterError as exc:
        raise NotFound(str(exc)) from None
    for position, (letter, body) in enumerate(read, start=1):
        if letter.event_id == event_id:
            return json_response({**letter_json(letter, position), **body_json(body)})
    raise NotFound(f"no event {event_id!r} in the first {depth} messages of {queue.name}")


def _audit(
    request: web.Request,
    signed_in: SignedIn,
    action: Action,
    queue: str,
    event_id: str,
    error: str | None,
) -> dict[str, Any]:
    entry = AuditEntry(
        at=request.app[CLOCK](),
        user_id=signed_in.user.id,
        email=signed_in.user.email,
        action=action,
        queue=queue,
        event_id=event_id,
        outcome="failed" if error else "done",
        detail=error or "",
    )
    request.app[AUDIT].record(entry)
    return {"eventId": event_id, "outcome": entry.outcome, "error": error}


async def _replay_all(queue: DeadLetterSource, limit: int) -> AsyncIterator[tuple[str, str | None]]:
    """(event id, error or None) per event, stopping at the first that cannot be replayed
    (it stays at the head: going on would skip it, and then replay the others in a loop)."""
    try:
        async for letter in queue.replay_all(limit=limit):
            yield letter.event_id, None
    except DeadLetterError as exc:
        yield "-", str(exc)


@routes.post("/api/operator/queues/{queue}/replay")
async def replay(request: web.Request) -> web.Response:
    signed_in = await require_operator(request)
    which = _which(request)
    settings = request.app[SETTINGS]
    wanted = validate_body(
        ReplayRequest, await read_json_object(request, max_depth=settings.max_json_depth)
    )
    if wanted.all == bool(wanted.eventIds):
        raise ValidationFailed("give eventIds (one or more) or all: true, not both")
    if wanted.limit is not None and not wanted.all:
        raise ValidationFailed("limit goes with all: true")
    results: list[dict[str, Any]] = []
    try:
        async with request.app[OPERATOR_QUEUES].open(which) as queue:
            if wanted.all:
                # The count at the start: a replayed event that fails again lands behind.
                count = await queue.count()
                limit = count if wanted.limit is None else min(count, wanted.limit)
                async for event_id, error in _replay_all(queue, limit):
                    results.append(
                        _audit(request, signed_in, "replay", queue.name, event_id, error)
                    )
            else:
                for event_id in dict.fromkeys(wanted.eventIds):
                    try:
                        await queue.replay_one(event_id)
                        error = None
                    except DeadLetterError as exc:
                        error = str(exc)
                    results.append(
                        _audit(request, signed_in, "replay", queue.name, event_id, error)
                    )
    except QueuesUnavailable as exc:
        raise _unavailable(request, exc) from None
    except (aio_pika.exceptions.AMQPError, ConnectionError) as exc:
        # A republish not confirmed: the event stays in the queue (no ack without a confirm).
        raise _unavailable(request, exc) from None
    return json_response(
        {
            "replayed": sum(r["outcome"] == "done" for r in results),
            "failed": sum(r["outcome"] == "failed" for r in results),
            "results": results,
        }
    )


@routes.post("/api/operator/queues/{queue}/discard")
async def discard(request: web.Request) -> web.Response:
    signed_in = await require_operator(request)
    which = _which(request)
    settings = request.app[SETTINGS]
    wanted = validate_body(
        DiscardRequest, await read_json_object(request, max_depth=settings.max_json_depth)
    )
    if wanted.confirm != wanted.eventId:
        raise ValidationFailed("type the event id into confirm to discard it; nothing was removed")
    try:
        async with request.app[OPERATOR_QUEUES].open(which) as queue:
            try:
                await queue.discard_one(wanted.eventId)
                error = None
            except DeadLetterError as exc:
                error = str(exc)
            result = _audit(request, signed_in, "discard", queue.name, wanted.eventId, error)
    except QueuesUnavailable as exc:
        raise _unavailable(request, exc) from None
    if error is not None:
        raise NotFound(error)
    return json_response(result)


@routes.get("/api/operator/audit")
async def audit(request: web.Request) -> web.Response:
    await require_operator(request)
    return json_response({"entries": [e.as_json() for e in request.app[AUDIT].newest_first()]})
