"""The registry's entries: what each declares, and the second event's strict contract."""

from __future__ import annotations

import json
import uuid

import jsonschema
import pytest
from pydantic import ValidationError

from schemas.export import SCHEMA_DIR
from schemas.registry import REGISTRY, EventRegistry, EventType, UnknownEvent
from schemas.sync_completed import ConfluenceAppSyncCompleted
from tests.support.events import ADA

SYNC_ID = "0190a5b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b"


def completed() -> ConfluenceAppSyncCompleted:
    return ConfluenceAppSyncCompleted.new(sync_id=SYNC_ID, user=ADA, received_at=1_700_000_000_000)


def test_each_entry_says_whether_clients_may_publish_it() -> None:
    publishable = {(t.name, t.v): t.client_publishable for t in REGISTRY}
    assert publishable == {
        ("confluence/app.sync", "1"): True,
        ("confluence/app.sync.completed", "1"): False,
    }
    # Safe by default: an entry that does not say is the processes' own.
    assert (
        EventType(name="x/y", v="1", model=ConfluenceAppSyncCompleted).client_publishable is False
    )


def test_the_completed_event_derives_its_routing_key_and_schema_file() -> None:
    entry = REGISTRY.resolve("confluence/app.sync.completed", "1")
    assert entry.model is ConfluenceAppSyncCompleted
    assert entry.routing_key == "confluence.app.sync.completed"
    assert entry.schema_file_name == "confluence.app.sync.completed.v1.schema.json"
    assert (SCHEMA_DIR / entry.schema_file_name).is_file()


def test_latest_and_versions_order_numerically() -> None:
    registry = EventRegistry(
        *(EventType(name="a/b", v=v, model=ConfluenceAppSyncCompleted) for v in ("2", "10", "1"))
    )
    assert registry.versions("a/b") == ["1", "2", "10"]
    assert registry.latest("a/b").v == "10"
    assert registry.versions("c/d") == []
    with pytest.raises(UnknownEvent):
        registry.latest("c/d")
    assert REGISTRY.known() == ["confluence/app.sync v1", "confluence/app.sync.completed v1"]


def test_the_completed_event_round_trips_and_is_valid_under_its_exported_schema() -> None:
    event = completed()
    body = event.model_dump_json()
    assert ConfluenceAppSyncCompleted.model_validate_json(body) == event
    assert uuid.UUID(event.id).version == 7
    schema = json.loads(
        (SCHEMA_DIR / "confluence.app.sync.completed.v1.schema.json").read_text(encoding="utf-8")
    )
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(json.loads(body))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("ts",), "1796202060129"),
        (("ts",), -1),
        (("id",), "{0190a5b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b}"),
        (("id",), "0190a5b23c4d7e8f9a0b1c2d3e4f5a6b"),
        (("id",), "urn:uuid:0190a5b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b"),
        (("data", "syncId"), SYNC_ID.upper()),
        (("data", "receivedAt"), "1"),
        (("data", "extra"), 1),
        (("extra",), 1),
        (("v",), 1),
    ],
)
def test_the_completed_event_is_strict_as_its_schema(path: tuple[str, ...], value: object) -> None:
    payload = json.loads(completed().model_dump_json())
    target = payload
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(ValidationError):
        ConfluenceAppSyncCompleted.model_validate_json(json.dumps(payload))
    schema = json.loads(
        (SCHEMA_DIR / "confluence.app.sync.completed.v1.schema.json").read_text(encoding="utf-8")
    )
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    assert not validator.is_valid(payload)
