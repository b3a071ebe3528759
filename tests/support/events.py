"""The event most tests need: a valid sync by one fixed user, built as the gateway builds it."""

from __future__ import annotations

from typing import Any

from schemas.events import AppSettings, ConfluenceAppSync, EventUser

ADA = EventUser(id="u-ada", email="ada@example.com", name="Ada")
APP_SETTINGS = AppSettings(baseUrl="https://example.atlassian.net/wiki", spaceKeys=("ENG",))


def sync_event(data: Any = None, **fields: Any) -> ConfluenceAppSync:
    """A new sync event (fresh id, current time) carrying `data`. `fields` then replace
    others, such as `ts` or `id`, without validation: the caller knows they are valid."""
    event = ConfluenceAppSync.new(user=ADA, app_settings=APP_SETTINGS, data=data)
    return event.model_copy(update=fields) if fields else event
