"""Exports the JSON Schema files from the models, and finds files that have drifted."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.registry import REGISTRY, EventRegistry

SCHEMA_DIR = Path(__file__).parent / "json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def render_schemas(registry: EventRegistry = REGISTRY) -> dict[str, str]:
    """File name -> file text, exactly as `syncgate schemas export` writes it."""
    rendered = {}
    for event_type in registry:
        schema = {"$schema": DIALECT, **event_type.model.model_json_schema(mode="validation")}
        rendered[event_type.schema_file_name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def export_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in render_schemas().items():
        path = directory / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def drifted_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the files that are missing or differ from what the models export now."""
    drifted = []
    for file_name, text in render_schemas().items():
        path = directory / file_name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            drifted.append(file_name)
    return drifted
