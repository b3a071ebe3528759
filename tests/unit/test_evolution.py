"""Released versions cannot change but in their descriptions; new versions and events can."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict, Field

from cli.main import cli
from schemas.evolution import (
    MANIFEST,
    ReleasedVersionChanged,
    compare,
    fingerprint,
    read_manifest,
    release,
)
from schemas.registry import REGISTRY, EventRegistry, EventType

_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True)


class Released(BaseModel):
    """A fixture event, version 1, as it was released."""

    model_config = _STRICT

    name: Literal["test/thing.done"]
    v: Literal["1"]
    count: int = Field(ge=0, description="How many things.")


class Reworded(BaseModel):
    """Version 1 again, with only its words changed."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, title="Thing done")

    name: Literal["test/thing.done"]
    v: Literal["1"]
    count: int = Field(ge=0, description="The number of things done.", examples=[3])


class WithOptionalField(BaseModel):
    """Version 1 with a new optional field: old consumers would refuse events that carry it."""

    model_config = _STRICT

    name: Literal["test/thing.done"]
    v: Literal["1"]
    count: int = Field(ge=0, description="How many things.")
    note: str = ""


class Version2(BaseModel):
    """Version 2: the new field, under a new version."""

    model_config = _STRICT

    name: Literal["test/thing.done"]
    v: Literal["2"]
    count: int = Field(ge=0)
    note: str = ""


def _registry(*models: tuple[str, type[BaseModel]]) -> EventRegistry:
    return EventRegistry(*(EventType(name="test/thing.done", v=v, model=m) for v, m in models))


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "released.json"
    assert [r.v for r in release(_registry(("1", Released)), path)] == ["1"]
    return path


def test_the_committed_manifest_passes() -> None:
    evolution = compare()
    assert evolution.ok, evolution.problems()
    assert ("confluence/app.sync", "1") in read_manifest(MANIFEST)


def test_a_changed_released_version_fails(manifest: Path) -> None:
    evolution = compare(_registry(("1", WithOptionalField)), manifest)
    assert not evolution.ok
    [problem] = evolution.problems()
    assert "test/thing.done v1 was released" in problem
    assert "new version (v2)" in problem


def test_a_changed_bound_fails(manifest: Path) -> None:
    class Tighter(BaseModel):
        model_config = _STRICT
        name: Literal["test/thing.done"]
        v: Literal["1"]
        count: int = Field(ge=1, description="How many things.")

    assert not compare(_registry(("1", Tighter)), manifest).ok


def test_a_description_only_change_passes(manifest: Path) -> None:
    evolution = compare(_registry(("1", Reworded)), manifest)
    assert evolution.ok
    assert [r.v for r in evolution.unchanged] == ["1"]


def test_a_new_version_passes_and_is_released_by_the_command(manifest: Path) -> None:
    registry = _registry(("1", Released), ("2", Version2))
    evolution = compare(registry, manifest)
    assert evolution.ok
    assert [r.v for r in evolution.unreleased] == ["2"]
    assert [r.v for r in release(registry, manifest)] == ["2"]
    assert set(read_manifest(manifest)) == {("test/thing.done", "1"), ("test/thing.done", "2")}
    assert compare(registry, manifest).unreleased == []


def test_release_never_overwrites_a_changed_released_version(manifest: Path) -> None:
    before = manifest.read_text()
    with pytest.raises(ReleasedVersionChanged, match="v1 was released"):
        release(_registry(("1", WithOptionalField), ("2", Version2)), manifest)
    assert manifest.read_text() == before


def test_a_released_version_that_is_no_longer_registered_fails(manifest: Path) -> None:
    evolution = compare(_registry(("2", Version2)), manifest)
    assert not evolution.ok
    assert "no longer registered" in evolution.problems()[0]


def test_the_fingerprint_ignores_annotations_but_not_properties_named_like_them() -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string", "title": "T"}}}
    assert fingerprint(schema) == fingerprint(
        {"description": "d", **schema, "properties": {"title": {"type": "string"}}}
    )
    assert fingerprint(schema) != fingerprint({**schema, "properties": {}})
    assert fingerprint(schema) != fingerprint({**schema, "required": ["title"]})


def test_each_version_is_validated_by_its_own_model() -> None:
    registry = _registry(("1", Released), ("2", Version2))
    v1 = json.dumps({"name": "test/thing.done", "v": "1", "count": 1})
    v2 = json.dumps({"name": "test/thing.done", "v": "2", "count": 1, "note": "new"})
    assert isinstance(
        registry.resolve("test/thing.done", "1").model.model_validate_json(v1), Released
    )
    assert isinstance(
        registry.resolve("test/thing.done", "2").model.model_validate_json(v2), Version2
    )
    with pytest.raises(ValueError, match="note"):
        registry.resolve("test/thing.done", "1").model.model_validate_json(
            json.dumps({"name": "test/thing.done", "v": "1", "count": 1, "note": "new"})
        )


def test_cli_check_and_release_on_the_committed_files() -> None:
    runner = CliRunner()
    checked = runner.invoke(cli, ["schemas", "check"])
    assert checked.exit_code == 0, checked.output
    assert "released versions unchanged" in checked.output
    # Every registered version is released or listed as unreleased, nothing else.
    registered = {(t.name, t.v) for t in REGISTRY}
    unreleased = {line for line in checked.output.splitlines() if line.startswith("unreleased:")}
    assert len(unreleased) == len(registered - set(read_manifest(MANIFEST)))


def test_cli_check_fails_with_the_advice_on_a_changed_version(
    manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import schemas.evolution

    changed = _registry(("1", WithOptionalField))
    monkeypatch.setattr(schemas.evolution, "compare", lambda: compare(changed, manifest))
    result = CliRunner().invoke(cli, ["schemas", "check"])
    assert result.exit_code == 1
    assert "register the new schema as a new version (v2)" in result.output
