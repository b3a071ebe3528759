"""The event models. The JSON Schema files under schemas/json are exported from these."""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any, Literal

import uuid_utils.compat
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from typing_extensions import TypeAliasType

# How strictly an event is read is what its exported schema says, no more and no less
# (tests/unit/test_contract.py checks the two agree on generated events):
# - strict mode: no coercion, so `"60"` is no integer and `"true"` no boolean;
# - a pattern wherever strict mode still accepts more than one spelling (UUIDs) or a type
#   accepts more than the schema says (URLs). Patterns use only what ECMA-262 (the schema's
#   dialect), Rust's regex (pydantic's) and Python's re read alike: ASCII classes, no \s or
#   \d, anchored with ^ and $.

# Bounds keep events (and the session user they carry) small and predictable.
UserId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
# No whitespace, no control character and no second @ on either side of the one @.
Email = Annotated[
    str,
    Field(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+$",
        examples=["ada@example.com"],
    ),
]
DisplayName = Annotated[str, Field(min_length=1, max_length=100)]
SpaceKey = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_~-]+$")]

# http or https, a DNS host name, an optional port and path; no user, query or fragment.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SEGMENT = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*"
BASE_URL_PATTERN = rf"^https?://{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?(?:/{_SEGMENT})*$"
BaseUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        pattern=BASE_URL_PATTERN,
        json_schema_extra={"format": "uri"},
        examples=["https://example.atlassian.net/wiki"],
    ),
]

# The one spelling of an event id: a UUIDv7 (RFC 9562), lowercase and hyphenated, as
# str(uuid.UUID) writes it. Strict mode alone would also read braces, no hyphens, upper case
# and `urn:uuid:`, and any version.
EVENT_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
_EVENT_ID = re.compile(EVENT_ID_PATTERN)


def _canonical_event_id(value: object) -> object:
    text = str(value) if isinstance(value, uuid.UUID) else value
    if isinstance(text, str) and not _EVENT_ID.fullmatch(text):
        raise ValueError("an event id is a UUIDv7 written lowercase with hyphens (8-4-4-4-12)")
    return value


EventId = Annotated[
    uuid.UUID,
    BeforeValidator(_canonical_event_id),
    Field(json_schema_extra={"pattern": EVENT_ID_PATTERN}),
]


def whole_number(value: object) -> object:
    # JSON Schema (and JavaScript) cannot tell 60.0 from 60: both are the integer 60. Strict
    # mode still refuses a string, a boolean and any fraction.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integer = Annotated[int, BeforeValidator(whole_number)]
"""An integer field: a JSON integer, or a number whose fraction is zero."""

# Every number in `data` is within the signed 64-bit range: the gateway refuses integers past
# it (gateway/body.py), and a JSON Schema validator reads 1e19 as the integer 10^19, so floats
# are held to the same bounds. Integers stay exact; a consumer whose JSON parser makes every
# number a double (JavaScript's JSON.parse) loses precision past 2^53 and must parse them as
# big integers.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]


def _float_within_int64(value: object) -> object:
    # An integer is read by Int64 alone: as a float it could round into the range. A float is
    # compared exactly; pydantic's own bounds on a float would round 2^63-1 up to 2^63.
    if isinstance(value, int):
        raise ValueError("an integer in `data` must lie within the signed 64-bit range")
    if isinstance(value, float) and not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("a number in `data` must lie within the signed 64-bit range")
    return value


Float64 = Annotated[
    float,
    BeforeValidator(_float_within_int64),
    Field(json_schema_extra={"minimum": INT64_MIN, "maximum": INT64_MAX}),
]
EventData = TypeAliasType(
    "EventData",
    'Int64 | Float64 | str | bool | list["EventData"] | dict[str, "EventData"] | None',
)


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class EventUser(_Contract):
    """The signed-in user, exactly as the gateway verified it from the session."""

    id: UserId
    email: Email
    name: DisplayName


class AppSettings(_Contract):
    """The Confluence app's settings that a sync runs with."""

    baseUrl: BaseUrl = Field(description="Root URL of the Confluence site to sync: http or https.")
    spaceKeys: tuple[SpaceKey, ...] = Field(
        min_length=1, max_length=100, description="Keys of the spaces to sync."
    )
    syncIntervalMinutes: Integer = Field(
        default=60, ge=1, le=10_080, description="Minutes between scheduled syncs."
    )
    includeAttachments: bool = Field(
        default=False, description="Whether a sync also fetches page attachments."
    )


class ConfluenceAppSync(_Contract):
    """A user asked the Confluence app to sync now (version 1)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        title="confluence/app.sync v1",
        json_schema_extra={"$id": "confluence.app.sync.v1.schema.json"},
    )

    id: EventId = Field(
        description=(
            "Event id, made by the gateway; consumers dedupe on it. A UUIDv7 (RFC 9562), "
            "lowercase and hyphenated: ids sort in the order the gateway made them."
        )
    )
    name: Literal["confluence/app.sync"]
    v: Literal["1"]
    ts: Integer = Field(
        ge=0, description="When the gateway accepted the request, ms since the epoch."
    )
    user: EventUser
    appSettings: AppSettings
    data: EventData = Field(
        default=None,
        description=(
            "Free JSON from the request body's `data`. Every number in it lies within the "
            "signed 64-bit range, -2^63 to 2^63-1; integers are exact."
        ),
    )

    @classmethod
    def new(
        cls, *, user: EventUser, app_settings: AppSettings, data: Any = None
    ) -> ConfluenceAppSync:
        return cls(
            id=new_event_id(),
            name="confluence/app.sync",
            v="1",
            ts=time.time_ns() // 1_000_000,
            user=user,
            appSettings=app_settings,
            data=data,
        )


def new_event_id() -> uuid.UUID:
    """A UUIDv7: time-ordered, so a consumer's index on event ids grows at one end.

    Random (v4) keys land all over a B-tree: each insert touches another page, and every
    commit writes many. A consumer's dedupe table keyed by v7 ids costs about 40% less CPU
    per message (measured with SQLite, README "Benchmarks").
    """
    return uuid_utils.compat.uuid7()
