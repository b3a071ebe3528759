"""Who a request is from, once the session has been checked."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import EventUser


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: EventUser
    session_id: str
    issued_at: int
