"""What the gateway answers, as pydantic models: the OpenAPI document is generated from these.

The views build their JSON directly; the models are the contract those bodies are checked
against (the OpenAPI tests and the schemathesis run validate real responses with them).
`extra="forbid"` makes the schemas closed, so an undocumented field is a test failure.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, JsonValue, RootModel
from pydantic.json_schema import SkipJsonSchema

from schemas.events import EventUser


def _no_null_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def absent_when_none(description: str | None = None) -> Any:
    """A field left out of the JSON when it has no value, and never sent as null.

    With `SkipJsonSchema[None]` in its type, the schema shows only the real type; the
    `default: null` pydantic would still write is dropped, as it is not of that type.
    """
    return Field(default=None, description=description, json_schema_extra=_no_null_default)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorDetail(_Response):
    code: str = Field(description="Stable and machine-readable, e.g. `validation_failed`.")
    message: str = Field(description="For people; may change between versions.")
    details: list[dict[str, JsonValue]] = Field(
        default_factory=list,
        description="For `validation_failed`: one `{loc, msg, type}` per contract violation.",
    )


class ErrorBody(_Response):
    """Every error the gateway answers, whatever the status."""

    error: ErrorDetail


class SyncAccepted(_Response):
    success: Literal["true"] = Field(
        description='The string "true", as the original clients expect.'
    )
    id: str = Field(description="The published event's id (a UUID).")


class EventAccepted(_Response):
    id: str = Field(description="The published event's id (a UUID), made by the gateway.")


class EventResult(_Response):
    """One item of a batch: accepted (202, with its event id) or not (its error)."""

    index: int = Field(ge=0, description="The item's position in the batch.")
    status: int = Field(
        description="202 accepted; else the status this item alone would have had "
        "(403, 422, 503, ...)."
    )
    id: str | SkipJsonSchema[None] = absent_when_none("The event id, when accepted.")
    replayed: Literal[True] | SkipJsonSchema[None] = absent_when_none(
        "Present when a retry of this client id answers with the first event id."
    )
    error: ErrorDetail | SkipJsonSchema[None] = absent_when_none("Why it was not accepted.")


class BatchResults(_Response):
    results: list[EventResult] = Field(description="One result per item, in the batch's order.")


class EventsAccepted(RootModel[EventAccepted | BatchResults]):
    """One event's id, or (for a batch) one result per item."""

    model_config = ConfigDict(frozen=True)


class LoginResponse(_Response):
    user: EventUser
    csrfToken: str = Field(description="Send it back in `X-CSRF-Token` on state-changing requests.")


class CsrfTokenResponse(_Response):
    csrfToken: str


class SessionResponse(_Response):
    # Absent (an empty object) when signed out; never null.
    user: EventUser | SkipJsonSchema[None] = absent_when_none()


class LoggedOut(_Response):
    success: Literal["true"]


class Health(_Response):
    status: Literal["ok"]


class Readiness(_Response):
    status: Literal["ready", "broker unavailable"]


class RunStatus(_Response):
    id: str
    status: Literal["pending", "handled"]
    receivedAt: int | SkipJsonSchema[None] = absent_when_none("ms since the epoch; if handled.")
    handledAt: int | SkipJsonSchema[None] = absent_when_none("ms since the epoch; if handled.")


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Every JSON answer of the gateway, encoded by orjson: about 2 us less per response than
    aiohttp's default (the standard library's json). Content-Type is `application/json`: JSON
    is UTF-8 by definition (RFC 8259), so it takes no charset."""
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


class DeadLetterItem(_Response):
    """One dead-lettered (or unrouted) event, as the DLQ page lists it."""

    position: int = Field(description="1 is the head of the queue (the oldest).")
    eventId: str
    deadLetteredAt: int | None = Field(description="ms since the epoch, when known.")
    reason: str = Field(description="x-syncgate-reason, or the broker's x-death reason.")
    attempts: int
    routingKey: str | None = Field(description="The original one, which a replay uses.")
    error: str


class QueuePage(_Response):
    queue: str
    count: int = Field(description="Messages in the queue now.")
    page: int
    pageSize: int
    readDepth: int = Field(description="A look reads at most this many from the head.")
    beyondReadDepth: int = Field(description="Messages deeper than readDepth: not shown.")
    items: list[DeadLetterItem]


class DeadLetterBody(DeadLetterItem):
    body: str = Field(description="UTF-8 text, or base64 (see encoding); at most 64 KiB.")
    encoding: Literal["utf-8", "base64"]
    bytes: int
    truncated: bool


class OperatorOutcome(_Response):
    eventId: str
    outcome: Literal["done", "failed"]
    error: str | None


class ReplayResult(_Response):
    replayed: int
    failed: int
    results: list[OperatorOutcome]


class AuditEntryBody(_Response):
    at: int = Field(description="ms since the epoch.")
    userId: str
    email: str
    action: Literal["replay", "discard"]
    queue: str
    eventId: str
    outcome: Literal["done", "failed"]
    detail: str


class AuditTrailBody(_Response):
    entries: list[AuditEntryBody] = Field(description="Newest first.")
