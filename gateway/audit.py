"""The operators' audit trail: every replay and discard, who did it, when, and how it ended.

Each entry is logged (logger `syncgate.audit`, INFO, with the fields as `extra`), which is the
durable record, and the last MAX_ENTRIES are kept in this process for the DLQ page to show.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Literal

log = logging.getLogger("syncgate.audit")

MAX_ENTRIES = 500

Action = Literal["replay", "discard"]
Outcome = Literal["done", "failed"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    user_id: str
    email: str
    action: Action
    queue: str
    event_id: str
    outcome: Outcome
    detail: str

    def as_json(self) -> dict[str, Any]:
        entry = asdict(self)
        return {
            "at": int(entry.pop("at") * 1000),
            "userId": entry.pop("user_id"),
            "eventId": entry.pop("event_id"),
            **entry,
        }


class AuditTrail:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: deque[AuditEntry] = deque(maxlen=max_entries)

    def record(self, entry: AuditEntry) -> None:
        self._entries.append(entry)
        log.info(
            "audit: %s %s %s of %s in %s: %s",
            entry.email,
            entry.action,
            entry.outcome,
            entry.event_id,
            entry.queue,
            entry.detail or "-",
            extra={"audit": entry.as_json()},
        )

    def newest_first(self) -> list[AuditEntry]:
        return list(reversed(self._entries))
