"""POST /api/events: any registered event that clients may publish, one or a batch.

The body is one event request, `{name, v?, data, id?}`, or a JSON array of them. The gateway
makes the rest of the event as /api/sync does: a new event id, `ts`, `user` from the session,
and what the event type needs from the gateway (`GATEWAY_FIELDS`: `appSettings` for
`confluence/app.sync`). The event is then validated by its registered model exactly as the
consumer will validate it: from its JSON, in the model's own mode.

One event answers as /api/sync does: 202 once confirmed, or an error in the error shape.
A batch is validated item by item; the valid items are published in parallel, each with its
confirm, and the answer gives one result per item, in order. It is 202 when every item was
accepted, and 207 (Multi-Status) otherwise, with each result's own status: nothing is ever
published behind a blanket error, so the client always knows which items to send again.

A client `id` is an idempotency key for that one event, scoped to the user: a retry of it
within the window is not published again, and answers with the first event id (it uses the
store of Idempotency-Keys, in a scope of its own). The event id is still the gateway's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, cast

import orjson
from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    RootModel,
    TypeAdapter,
    ValidationError,
)

from gateway.body import check_json_limits, read_json, validation_details
from gateway.errors import (
    GatewayError,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    NotPublishable,
    PayloadTooLarge,
    UnknownEventType,
    ValidationFailed,
)
from gateway.idempotency import HEADER as IDEMPOTENCY_HEADER
from gateway.idempotency import MAX_KEY_LENGTH
from gateway.keys import APP_SETTINGS, IDEMPOTENCY, PUBLISHER, REQUEST_ID, SETTINGS
from gateway.responses import json_response
from gateway.routing import RouteTable
from gateway.sessions import require_user
from schemas.events import EventData, new_event_id
from schemas.registry import REGISTRY, Event, EventType, UnknownEvent

log = logging.getLogger(__name__)

routes = RouteTable()

ClientId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[\x20-\x7e]+$",
        description=(
            "Your id for this event: a retry with the same id, within the idempotency window, "
            "is not published again and answers with the first event id. Not the event id."
        ),
    ),
]


# What the schema lists; the view still checks each against the registry itself.
_NAMES: list[JsonValue] = [*sorted({t.name for t in REGISTRY})]
_VERSIONS: list[JsonValue] = [*sorted({t.v for t in REGISTRY})]


# Each item is JSON whose every number lies within the signed 64-bit range: the event
# contract's own EventData, as the body parser also requires of integers (gateway/body.py).
_BATCH: TypeAdapter[list[EventData]] = TypeAdapter(list[EventData], config=ConfigDict(strict=True))


class EventRequest(BaseModel):
    """One event to publish. The user is never read from here: only from the session."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    # Checked against the registry by the view, not here, so that an unknown one is answered
    # with the known ones (`unknown_event`); the schema lists them.
    name: str = Field(
        min_length=1,
        max_length=255,
        examples=["confluence/app.sync"],
        description="A registered event; those clients may not publish answer 403.",
        json_schema_extra={"enum": _NAMES},
    )
    v: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="Default: the latest version.",
        json_schema_extra={"enum": [*_VERSIONS, None]},
    )
    data: EventData = Field(
        default=None,
        description=(
            "The event's `data`, validated by its registered model. Every number in it lies "
            "within the signed 64-bit range."
        ),
    )
    id: ClientId | None = None


Batch = Annotated[
    list[EventData],
    Field(
        min_length=1,
        description=(
            "A batch: each item an EventRequest. Each is validated on its own: an item that "
            "is not one is answered in its own result (422), and the others still publish. "
            "Numbers past the signed 64-bit range refuse the whole batch, as in one event."
        ),
    ),
]


class EventsRequest(RootModel[EventRequest | Batch]):
    """One event request, or a batch of them (a JSON array)."""


# The fields of an event that the gateway fills in, by event name, beyond id, ts and user.
GATEWAY_FIELDS: Mapping[str, Callable[[web.Request], dict[str, Any]]] = {
    # What /api/sync sends: the app's current settings (gateway/app_settings.py).
    "confluence/app.sync": lambda request: {
        "appSettings": request.app[APP_SETTINGS].current().model_dump(mode="json")
    },
}

# Scopes of client ids in the idempotency store: (CLIENT_ID_OWNER + user id, id). User ids
# cannot hold ":", so no scope of an Idempotency-Key (user id, key) is ever one of these.
CLIENT_ID_OWNER = "client-id:"


def _item_error(exc: GatewayError) -> dict[str, Any]:
    return {
        "status": exc.status,
        "error": {"code": exc.code, "message": exc.message, "details": exc.details},
    }


@dataclass(frozen=True, slots=True)
class _Built:
    """One event request of the body, validated up to the event it stands for."""

    event: Event
    event_type: EventType
    client_id: str | None
    fingerprint: JsonValue
    """What a retry with the same client id must repeat: name, version and data."""


def _resolve(name: str, v: str | None) -> EventType:
    try:
        event_type = REGISTRY.latest(name) if v is None else REGISTRY.resolve(name, v)
    except UnknownEvent:
        versions = REGISTRY.versions(name)
        if versions:
            raise UnknownEventType(
                f"{name} has no version {v!r}; known versions: {', '.join(versions)}"
            ) from None
        raise UnknownEventType(
            f"no event is registered as {name!r}; known events: {', '.join(REGISTRY.known())}"
        ) from None
    if not event_type.client_publishable:
        raise NotPublishable(f"{event_type.name} is published by syncgate itself, not by clients")
    return event_type


def _build(request: web.Request, user: dict[str, Any], raw: object) -> _Built | GatewayError:
    """The item's event, validated by its model; or the reason it is refused."""
    try:
        try:
            body = EventRequest.model_validate(raw)
        except ValidationError as exc:
            raise ValidationFailed(
                "the event request does not match the contract", details=validation_details(exc)
            ) from None
        event_type = _resolve(body.name, body.v)
        fields = {
            "id": str(new_event_id()),
            "name": event_type.name,
            "v": event_type.v,
            "ts": time.time_ns() // 1_000_000,
            "user": user,
            "data": body.data,
        }
        filler = GATEWAY_FIELDS.get(event_type.name)
        if filler is not None:
            fields.update(filler(request))
        try:
            # From JSON, as the consumer reads it: the same mode, the same strictness.
            event = event_type.model.model_validate_json(orjson.dumps(fields))
        except ValidationError as exc:
            raise ValidationFailed(
                f"data does not match {event_type.name} v{event_type.v}",
                details=validation_details(exc),
            ) from None
    except GatewayError as exc:
        return exc
    return _Built(
        event=cast(Event, event),
        event_type=event_type,
        client_id=body.id,
        fingerprint={"name": event_type.name, "v": event_type.v, "data": body.data},
    )


async def _publish(request: web.Request, user_id: str, item: _Built) -> tuple[str, bool]:
    """Publish one built item, at most once per client id: (event id, replayed). Raises
    GatewayError as /api/sync does (503s, a client id reused with another event)."""
    built, model = item.event, item.event_type.model

    async def publish(event: Event) -> None:
        await request.app[PUBLISHER].publish(event, correlation_id=request[REQUEST_ID])

    try:
        outcome = await request.app[IDEMPOTENCY].run_once(
            CLIENT_ID_OWNER + user_id,
            item.client_id,
            data=item.fingerprint,
            build=lambda: built,
            publish=publish,
            decode=lambda encoded: cast(Event, model.model_validate_json(encoded)),
        )
    except IdempotencyKeyReused:
        raise IdempotencyKeyReused(
            "this id was first sent with another event; a new event needs a new id"
        ) from None
    return outcome.event_id, outcome.replayed


async def _publish_batch(
    request: web.Request, user_id: str, items: Sequence[_Built | GatewayError]
) -> list[dict[str, Any]]:
    async def one(item: _Built | GatewayError) -> dict[str, Any]:
        if isinstance(item, GatewayError):
            return _item_error(item)
        try:
            event_id, replayed = await _publish(request, user_id, item)
        except GatewayError as exc:
            if exc.status >= 500:
                log.warning("one event of a batch: %s: %s", exc.code, exc.message)
            return _item_error(exc)
        except Exception:
            # A bug, in one item: the others' results still reach the client.
            log.exception("publishing one event of a batch failed")
            return _item_error(GatewayError("this event failed; the error is logged"))
        result: dict[str, Any] = {"status": 202, "id": event_id}
        if replayed:
            result["replayed"] = True
        return result

    return list(await asyncio.gather(*(one(item) for item in items)))


@routes.post("/api/events")
async def publish_events(request: web.Request) -> web.Response:
    signed_in = await require_user(request)
    if IDEMPOTENCY_HEADER in request.headers:
        raise InvalidIdempotencyKey(
            f"POST /api/events takes no {IDEMPOTENCY_HEADER}: give each event an `id` instead"
        )
    settings = request.app[SETTINGS]
    # This route's own body limit, above the app's (gateway/app.py).
    large = request.clone(client_max_size=settings.events_max_body_bytes)
    # A batch's array is one level more than its items, which nest as deep as one event.
    body = await read_json(large, max_depth=settings.max_json_depth + 1, empty=None)
    user = signed_in.user.model_dump(mode="json")
    if isinstance(body, list):
        if not body:
            raise ValidationFailed("the batch is empty: send at least one event")
        if len(body) > settings.events_max_batch:
            raise PayloadTooLarge(f"a batch holds at most {settings.events_max_batch} events")
        try:
            _BATCH.validate_python(body)
        except ValidationError as exc:
            raise ValidationFailed(
                "a number in the batch is past the signed 64-bit range",
                details=validation_details(exc),
            ) from None
        items = [_build(request, user, raw) for raw in body]
        results = await _publish_batch(request, signed_in.user.id, items)
        for index, result in enumerate(results):
            result["index"] = index
        accepted = all(result["status"] == 202 for result in results)
        headers = None
        if any(result["status"] == 503 for result in results):
            headers = {"Retry-After": str(settings.retry_after)}
        return json_response({"results": results}, status=202 if accepted else 207, headers=headers)
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be an event object, or an array of them")
    # The array's level above is not spent: one event nests as deep as /api/sync's body.
    check_json_limits(body, max_depth=settings.max_json_depth)
    item = _build(request, user, body)
    if isinstance(item, GatewayError):
        raise item
    event_id, replayed = await _publish(request, signed_in.user.id, item)
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return json_response({"id": event_id}, status=202, headers=headers)
