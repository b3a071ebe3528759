"""The users file: who may sign in, with scrypt password hashes.

The file is JSON, `{"users": [{"id", "email", "name", "password_hash", "role"}]}`, written
by `syncgate users add`. `role` is "user" or "operator" (the DLQ page and its routes); a
record without one, as files written before roles existed have, is a plain user. Hashes are
`scrypt$<log2 n>$<r>$<p>$<salt>$<hash>` in url-safe base64, so the cost can be raised later
without invalidating existing entries.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import uuid
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from gateway.watched_file import WatchedFile
from schemas.events import DisplayName, Email, EventUser, UserId

LOG2_N, R, P, LENGTH = 15, 8, 1, 32


class UsersFileError(RuntimeError):
    """The users file is missing or invalid."""


Role = Literal["user", "operator"]
ROLES: tuple[Role, ...] = ("user", "operator")


class UserRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UserId
    email: Email
    name: DisplayName
    password_hash: str
    role: Role = "user"

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    @cached_property
    def public(self) -> EventUser:
        """Who the record is, without its hash: what sessions and events carry.

        Built once per loaded record: the request path asks for it on every request.
        """
        return EventUser(id=self.id, email=self.email, name=self.name)


class UsersFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    users: tuple[UserRecord, ...] = ()

    @model_validator(mode="after")
    def _one_record_per_user(self) -> UsersFile:
        # An id or an email on two records would make who signed in depend on file order.
        ids = [u.id for u in self.users]
        emails = [u.email.lower() for u in self.users]
        if len(set(ids)) != len(ids):
            raise ValueError("two users have the same id")
        if len(set(emails)) != len(emails):
            raise ValueError("two users have the same email")
        return self

    @cached_property
    def by_id(self) -> Mapping[str, UserRecord]:
        return {u.id: u for u in self.users}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = Scrypt(salt=salt, length=LENGTH, n=2**LOG2_N, r=R, p=P).derive(password.encode())
    return f"scrypt${LOG2_N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, log2_n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        kdf = Scrypt(salt=_unb64(salt), length=LENGTH, n=2 ** int(log2_n), r=int(r), p=int(p))
        kdf.verify(password.encode(), _unb64(digest))
    except (ValueError, InvalidKey):
        return False
    return True


# Checked when the email is unknown, so that a miss costs what a hit costs.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def load_users(path: Path) -> UsersFile:
    try:
        return UsersFile.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise UsersFileError(
            f"cannot read the users file {path}: {exc}; add a user with `syncgate users add`"
        ) from exc
    except ValidationError as exc:
        # Without the input: it holds password hashes, and this message is logged.
        problems = "\n".join(
            f"  {'.'.join(str(part) for part in error['loc']) or 'users'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise UsersFileError(f"the users file {path} is invalid:\n{problems}") from exc


class UserStore:
    def __init__(self, path: Path) -> None:
        self._file = WatchedFile(path, load_users)

    def _users(self) -> tuple[UserRecord, ...]:
        return self._file.current().users

    def by_id(self, user_id: str) -> UserRecord | None:
        # Every authenticated request asks: a lookup, not a scan of the file.
        return self._file.current().by_id.get(user_id)

    def authenticate(self, email: str, password: str) -> UserRecord | None:
        """Blocking (scrypt is slow on purpose): call it in a thread."""
        # compare_digest takes str only when it is ASCII: compare UTF-8 bytes (found by fuzzing).
        wanted = email.strip().lower().encode()
        user = next(
            (u for u in self._users() if hmac.compare_digest(u.email.lower().encode(), wanted)),
            None,
        )
        ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
        return user if ok and user is not None else None


def add_user(
    path: Path, *, email: str, name: str, password: str, role: Role = "user"
) -> UserRecord:
    """Add or replace (by email) a user, writing the file atomically and owner-only."""
    existing = load_users(path).users if path.exists() else ()
    keep = tuple(u for u in existing if u.email.lower() != email.lower())
    previous = next((u for u in existing if u.email.lower() == email.lower()), None)
    record = UserRecord(
        id=previous.id if previous else uuid.uuid4().hex,
        email=email,
        name=name,
        password_hash=hash_password(password),
        role=role,
    )
    payload = UsersFile(users=(*keep, record)).model_dump(mode="json")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(payload, out, indent=2)
        out.write("\n")
    os.replace(tmp, path)
    return record
