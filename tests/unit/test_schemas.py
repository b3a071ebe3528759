from __future__ import annotations

import json
import uuid
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from schemas import REGISTRY, AppSettings, ConfluenceAppSync, EventUser, UnknownEvent
from schemas.export import SCHEMA_DIR, drifted_schemas, export_schemas, render_schemas
from schemas.registry import routing_key_for

USER = EventUser(id="u-1", email="ada@example.com", name="Ada")
SETTINGS = AppSettings(baseUrl="https://example.atlassian.net/wiki", spaceKeys=("ENG",))


def make_event(**overrides: object) -> ConfluenceAppSync:
    return ConfluenceAppSync.new(user=USER, app_settings=SETTINGS, data="data").model_copy(
        update=overrides
    )


def test_new_event_carries_the_seed_fields() -> None:
    event = ConfluenceAppSync.new(user=USER, app_settings=SETTINGS, data={"data": "data"})
    dumped = json.loads(event.model_dump_json())
    assert set(dumped) == {"id", "name", "v", "ts", "user", "appSettings", "data"}
    assert dumped["name"] == "confluence/app.sync"
    assert dumped["v"] == "1"
    assert uuid.UUID(dumped["id"]).version == 7
    assert dumped["ts"] > 1_700_000_000_000  # milliseconds, not seconds
    assert dumped["user"] == {"id": "u-1", "email": "ada@example.com", "name": "Ada"}


def test_event_ids_sort_in_the_order_they_were_made() -> None:
    # Consumers store ids as text; thousands are made within one millisecond here, so this
    # also checks the order within a millisecond, not just the timestamp in front.
    ids = [str(ConfluenceAppSync.new(user=USER, app_settings=SETTINGS).id) for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_event_is_frozen_and_strict() -> None:
    event = make_event()
    with pytest.raises(ValidationError):
        event.v = "2"  # type: ignore[misc,assignment]
    payload = json.loads(event.model_dump_json())
    payload["extra"] = 1
    with pytest.raises(ValidationError, match="extra"):
        ConfluenceAppSync.model_validate_json(json.dumps(payload))


@pytest.mark.parametrize("field", ["id", "name", "v", "ts", "user", "appSettings"])
def test_required_fields(field: str) -> None:
    payload = json.loads(make_event().model_dump_json())
    del payload[field]
    with pytest.raises(ValidationError):
        ConfluenceAppSync.model_validate_json(json.dumps(payload))


def test_routing_key_is_derived_from_the_name() -> None:
    assert routing_key_for("confluence/app.sync") == "confluence.app.sync"
    assert REGISTRY.resolve("confluence/app.sync", "1").routing_key == "confluence.app.sync"


def test_registry_resolves_known_and_rejects_unknown() -> None:
    assert REGISTRY.resolve("confluence/app.sync", "1").model is ConfluenceAppSync
    with pytest.raises(UnknownEvent):
        REGISTRY.resolve("confluence/app.sync", "2")
    with pytest.raises(UnknownEvent):
        REGISTRY.resolve("other/event", "1")


def test_schema_files_match_the_models() -> None:
    assert drifted_schemas() == [], "run `syncgate schemas export`"


def test_drift_is_detected(tmp_path: Path) -> None:
    export_schemas(tmp_path)
    assert drifted_schemas(tmp_path) == []
    path = tmp_path / "confluence.app.sync.v1.schema.json"
    path.write_text(path.read_text().replace('"maxLength": 254', '"maxLength": 255'))
    assert drifted_schemas(tmp_path) == ["confluence.app.sync.v1.schema.json"]
    path.unlink()
    assert drifted_schemas(tmp_path) == ["confluence.app.sync.v1.schema.json"]


def test_exported_schema_accepts_events_and_rejects_bad_ones() -> None:
    schema = json.loads((SCHEMA_DIR / "confluence.app.sync.v1.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = json.loads(make_event().model_dump_json())
    validator.validate(good)
    for bad in ({**good, "v": "2"}, {**good, "surprise": True}, {**good, "ts": "soon"}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(bad)


def test_render_names_one_file_per_registered_event() -> None:
    assert set(render_schemas()) == {t.schema_file_name for t in REGISTRY}
