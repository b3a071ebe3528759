"""Released event versions stay as they were released.

The exported schemas are closed (`additionalProperties: false`), so any change to a released
version breaks some consumer: even a new optional field makes old consumers refuse new events.
schemas/released.json records each released (name, v) with the fingerprint of its schema:
a hash of the schema's canonical JSON with its annotations (descriptions, titles, examples,
comments) left out, so that only words may change. `syncgate schemas check` compares every
registered version with it; `syncgate schemas release` records the ones not yet released.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.export import render_schemas
from schemas.registry import REGISTRY, EventRegistry

MANIFEST = Path(__file__).parent / "released.json"

# Annotations only: changing them changes no validation outcome.
_ANNOTATIONS = frozenset({"description", "title", "examples", "$comment"})
# Keywords whose value is a map of names to subschemas, a subschema, or a list of them.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
_SCHEMA_VALUES = frozenset(
    {
        "items",
        "additionalProperties",
        "unevaluatedItems",
        "unevaluatedProperties",
        "propertyNames",
        "contains",
        "not",
        "if",
        "then",
        "else",
    }
)
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})


def _without_annotations(schema: Any) -> Any:
    """The schema less its annotations. Only keywords are dropped: a property that happens to
    be called `title` stays."""
    if not isinstance(schema, dict):
        return schema  # a boolean schema
    kept: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            kept[key] = {name: _without_annotations(sub) for name, sub in value.items()}
        elif key in _SCHEMA_VALUES:
            kept[key] = _without_annotations(value)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            kept[key] = [_without_annotations(sub) for sub in value]
        else:
            kept[key] = value
    return kept


def fingerprint(schema: dict[str, Any]) -> str:
    """`sha256:` and the hex digest of the schema's canonical JSON, annotations left out."""
    canonical = json.dumps(
        _without_annotations(schema), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Release:
    name: str
    v: str
    schema: str
    fingerprint: str

    def as_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "v": self.v,
            "schema": self.schema,
            "fingerprint": self.fingerprint,
        }


def current_releases(registry: EventRegistry = REGISTRY) -> list[Release]:
    """Every registered version as it would be released now."""
    rendered = render_schemas(registry)
    return [
        Release(
            name=t.name,
            v=t.v,
            schema=t.schema_file_name,
            fingerprint=fingerprint(json.loads(rendered[t.schema_file_name])),
        )
        for t in registry
    ]


def read_manifest(path: Path = MANIFEST) -> dict[tuple[str, str], Release]:
    if not path.is_file():
        return {}
    entries = json.loads(path.read_text(encoding="utf-8"))["released"]
    releases = (Release(**entry) for entry in entries)
    return {(r.name, r.v): r for r in releases}


def write_manifest(releases: Iterable[Release], path: Path = MANIFEST) -> None:
    ordered = sorted(releases, key=lambda r: (r.name, int(r.v) if r.v.isdigit() else 0, r.v))
    document = {
        "about": (
            "Released event versions and their schema fingerprints (schemas/evolution.py). "
            "Written by `syncgate schemas release`; checked by `syncgate schemas check`."
        ),
        "released": [r.as_json() for r in ordered],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Evolution:
    """How the registered versions compare with the released ones."""

    unchanged: list[Release] = field(default_factory=list)
    unreleased: list[Release] = field(default_factory=list)
    changed: list[Release] = field(default_factory=list)
    """Released versions whose schema is no longer what was released: each breaks consumers."""
    removed: list[Release] = field(default_factory=list)
    """Released versions no longer registered: consumers may still receive them."""

    @property
    def ok(self) -> bool:
        return not self.changed and not self.removed

    def problems(self) -> list[str]:
        lines = [
            f"{r.name} v{r.v} was released and its schema ({r.schema}) has changed in more "
            f"than its descriptions. A released version cannot change: undo the change and "
            f"register the new schema as a new version (v{_next(r.v)}), then run "
            f"`syncgate schemas release`."
            for r in self.changed
        ]
        lines += [
            f"{r.name} v{r.v} was released but is no longer registered: consumers may still "
            f"receive it. Keep its model in schemas/registry.py."
            for r in self.removed
        ]
        return lines


def _next(v: str) -> str:
    return str(int(v) + 1) if v.isdigit() else f"{v}-next"


def compare(registry: EventRegistry = REGISTRY, manifest: Path = MANIFEST) -> Evolution:
    released = read_manifest(manifest)
    evolution = Evolution()
    current = current_releases(registry)
    for release in current:
        before = released.get((release.name, release.v))
        if before is None:
            evolution.unreleased.append(release)
        elif before.fingerprint == release.fingerprint:
            evolution.unchanged.append(release)
        else:
            evolution.changed.append(before)
    registered = {(r.name, r.v) for r in current}
    evolution.removed.extend(r for key, r in released.items() if key not in registered)
    return evolution


class ReleasedVersionChanged(RuntimeError):
    """`release` was asked to record versions while a released one has changed."""


def release(registry: EventRegistry = REGISTRY, manifest: Path = MANIFEST) -> list[Release]:
    """Record every unreleased version in the manifest; returns them. Refuses while a released
    version has changed or gone: its entry is never overwritten."""
    evolution = compare(registry, manifest)
    if not evolution.ok:
        raise ReleasedVersionChanged("\n".join(evolution.problems()))
    if evolution.unreleased:
        released = read_manifest(manifest)
        released.update({(r.name, r.v): r for r in evolution.unreleased})
        write_manifest(released.values(), manifest)
    return evolution.unreleased
