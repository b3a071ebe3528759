"""`confluence/app.sync.completed`: the consumer recorded a sync run (version 1).

The consumer publishes it, confirmed, once the run is committed to its run store; clients
may not publish it (`schemas/registry.py`). Strict like the consumer's validation of every
body: JSON types only, no coercion, and explicit patterns for the ids, as pydantic's strict
mode alone still accepts UUIDs in braces, without hyphens, or as `urn:uuid:`.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from schemas.events import EventUser, new_event_id, whole_number

# Lower-case, hyphenated: the only form `str(uuid.UUID)` gives, and the one the gateway sends.
CANONICAL_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
Uuid = Annotated[str, Field(pattern=CANONICAL_UUID, json_schema_extra={"format": "uuid"})]
# 1.0 is the integer 1, as JSON Schema reads it (schemas/events.py).
Millis = Annotated[int, Field(ge=0, le=2**53 - 1), BeforeValidator(whole_number)]


class SyncCompletedData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    syncId: Uuid = Field(description="The id of the `confluence/app.sync` event recorded.")
    receivedAt: Millis = Field(description="When the consumer recorded it, ms since the epoch.")


class ConfluenceAppSyncCompleted(BaseModel):
    """The consumer recorded a sync run (version 1)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        title="confluence/app.sync.completed v1",
        json_schema_extra={"$id": "confluence.app.sync.completed.v1.schema.json"},
    )

    id: Uuid = Field(description="Event id, made by the consumer; dedupe on it.")
    name: Literal["confluence/app.sync.completed"]
    v: Literal["1"]
    ts: Millis = Field(description="When the consumer published it, ms since the epoch.")
    user: EventUser = Field(description="The user who asked for the sync.")
    data: SyncCompletedData

    @classmethod
    def new(cls, *, sync_id: str, user: EventUser, received_at: int) -> ConfluenceAppSyncCompleted:
        return cls(
            id=str(new_event_id()),
            name="confluence/app.sync.completed",
            v="1",
            ts=time.time_ns() // 1_000_000,
            user=user,
            data=SyncCompletedData(syncId=sync_id, receivedAt=received_at),
        )
