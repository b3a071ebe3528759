"""The Confluence app's settings, from a JSON or TOML file, validated on every load."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from pydantic import ValidationError

from gateway.watched_file import WatchedFile
from schemas.events import AppSettings


class AppSettingsError(RuntimeError):
    """The app settings file is missing or invalid."""


def load_app_settings(path: Path) -> AppSettings:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AppSettingsError(f"cannot read the app settings file {path}: {exc}") from exc
    try:
        data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AppSettingsError(f"the app settings file {path} is not valid: {exc}") from exc
    try:
        # Lax here, unlike on the wire: TOML and JSON arrays arrive as lists, not tuples.
        return AppSettings.model_validate(data, strict=False)
    except ValidationError as exc:
        raise AppSettingsError(f"the app settings in {path} are invalid:\n{exc}") from exc


class AppSettingsProvider:
    """What the seed called `getAppSettings()`: the current settings, re-read on change."""

    def __init__(self, path: Path, *, check_interval: float = 1.0) -> None:
        self._file = WatchedFile(path, load_app_settings, check_interval=check_interval)

    def current(self) -> AppSettings:
        return self._file.current()
