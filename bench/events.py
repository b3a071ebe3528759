"""The one event every system in the bench publishes, so message sizes match."""

from __future__ import annotations

from pathlib import Path

from gateway.app_settings import load_app_settings
from schemas.events import AppSettings, ConfluenceAppSync, EventUser

BENCH_USER = EventUser(id="u-bench", email="bench@example.com", name="Bench User")
BENCH_DATA = {"bench": True}
# As JSON, the way every reader of an event reads it (strict models take arrays only there).
BENCH_APP_SETTINGS = AppSettings.model_validate_json(
    '{"baseUrl": "https://example.atlassian.net/wiki", "spaceKeys": ["ENG", "OPS"]}'
)


def sample_event_body(app_settings_file: Path | None = None) -> bytes:
    settings = load_app_settings(app_settings_file) if app_settings_file else BENCH_APP_SETTINGS
    event = ConfluenceAppSync.new(user=BENCH_USER, app_settings=settings, data=BENCH_DATA)
    return event.model_dump_json().encode()
