"""CloudEvents 1.0 in binary content mode: the event's attributes as AMQP headers.

Every message syncgate publishes is a CloudEvent whose data is the body, unchanged (the event
JSON), and whose `datacontenttype` is the AMQP `content_type` property. The other attributes
travel as application headers named with the `cloudEvents:` prefix, the naming of the
CloudEvents AMQP binding (AMQP 0-9-1 has no binding of its own; the 1.0 binding's names are
what the SDKs and brokers' plugins read). Each value is a string: the binding's types map
onto AMQP 1.0's, which a 0-9-1 table does not have, and a string reads alike everywhere.

From the event itself (the seed's envelope):
    id          <- id        the event id, which consumers dedupe on
    type        <- name      "confluence/app.sync"
    time        <- ts        ms since the epoch, as RFC 3339 in UTC with milliseconds
    subject     <- user.id   the signed-in user the event is about
    dataschema  <- name, v   the URI of the event's JSON Schema file (schemas/json/)
and from the process's settings: `source` (a URI naming the producer) and the base of every
`dataschema`. `v` stays the `v` header (and in the body): CloudEvents has no version
attribute, and the schema URI names the version already.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

PREFIX = "cloudEvents:"
SPECVERSION = "1.0"

SPECVERSION_HEADER = PREFIX + "specversion"
ID_HEADER = PREFIX + "id"
SOURCE_HEADER = PREFIX + "source"
TYPE_HEADER = PREFIX + "type"
TIME_HEADER = PREFIX + "time"
DATASCHEMA_HEADER = PREFIX + "dataschema"
SUBJECT_HEADER = PREFIX + "subject"

URN_SCHEMA_BASE = "urn:syncgate:schema:"
"""The base of `dataschema` when no public base URL is configured (see `EventSource`)."""

DEFAULT_SOURCE = "urn:syncgate:gateway"

# RFC 3986's scheme, then at least one character that is neither a space nor a control.
_ABSOLUTE_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s\x00-\x1f\x7f]+$")
URI_MAX_LENGTH = 1024


def absolute_uri(value: str) -> str:
    """`value` if it is an absolute URI of at most URI_MAX_LENGTH characters; else ValueError
    (a settings validator's message: it never quotes the value)."""
    if len(value) > URI_MAX_LENGTH:
        raise ValueError(f"must be at most {URI_MAX_LENGTH} characters")
    if not _ABSOLUTE_URI.match(value):
        raise ValueError(
            "must be an absolute URI (a scheme, a colon, then no spaces), "
            "e.g. urn:syncgate:gateway or https://sync.example.com/"
        )
    return value


def public_base_url(value: str) -> str:
    """`value` without its trailing slash if it is an http(s) URL with a host, no user info,
    no query and no fragment (what a schema's URL is the file name appended to); else
    ValueError, which never quotes the value."""
    absolute_uri(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.query or parts.fragment or "?" in value:
        raise ValueError("must have no user info, query or fragment")
    return value.rstrip("/")


@dataclass(frozen=True, slots=True)
class EventSource:
    """Where this process's events come from: the CloudEvents `source`, and the base that each
    `dataschema` is the schema file's name appended to.

    With a public base URL `schema_base` is `<base>/schemas/`, where the gateway serves every
    registered schema file (GET /schemas/{file}). Without one it is URN_SCHEMA_BASE: an
    absolute URI that names the file but is fetched from nowhere. A URL is never guessed from
    a request's Host header (a client chooses it: any client could point every consumer at a
    schema of its own) nor from the listening address (0.0.0.0 or 127.0.0.1 means another
    host to each consumer).
    """

    source: str = DEFAULT_SOURCE
    schema_base: str = URN_SCHEMA_BASE

    @classmethod
    def of(cls, source: str, public_base_url: str | None) -> EventSource:
        if public_base_url is None:
            return cls(source=source)
        return cls(source=source, schema_base=public_base_url.rstrip("/") + "/schemas/")

    def dataschema(self, schema_file_name: str) -> str:
        return self.schema_base + schema_file_name


DEFAULT_EVENT_SOURCE = EventSource()
"""The settings' defaults: `source` urn:syncgate:gateway, `dataschema` urn:syncgate:schema:."""


def event_time(ts: int) -> str:
    """`ts` (ms since the epoch) as RFC 3339 in UTC: "2026-12-03T08:43:02.123Z"."""
    seconds, millis = divmod(ts, 1000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


def attribute_headers(
    source: EventSource,
    *,
    event_id: str,
    name: str,
    ts: int,
    subject: str,
    schema_file_name: str,
) -> dict[str, str]:
    """The CloudEvents attributes of one event, as the AMQP headers that carry them."""
    return {
        SPECVERSION_HEADER: SPECVERSION,
        ID_HEADER: event_id,
        SOURCE_HEADER: source.source,
        TYPE_HEADER: name,
        TIME_HEADER: event_time(ts),
        DATASCHEMA_HEADER: source.dataschema(schema_file_name),
        SUBJECT_HEADER: subject,
    }
