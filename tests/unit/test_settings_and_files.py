"""Settings validation, the app settings provider and the users file."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr, ValidationError

from common.stores.backends import describe
from consumers.settings import ConsumerSettings
from gateway.app_settings import AppSettingsError, AppSettingsProvider, load_app_settings
from gateway.settings import GatewaySettings
from gateway.users import UsersFileError, UserStore, add_user, hash_password, verify_password
from tests.conftest import PASSWORD
from tests.support.app import gateway_app
from tests.support.fakes import FakePublisher


def test_session_keys_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCGATE_SESSION_KEYS", raising=False)
    with pytest.raises(ValidationError, match="session_keys"):
        GatewaySettings()


@pytest.mark.parametrize("keys", ["", " , ", "not-a-key", f"{Fernet.generate_key().decode()},x"])
def test_bad_session_keys_are_refused(keys: str) -> None:
    with pytest.raises(ValidationError, match="syncgate keygen"):
        GatewaySettings(session_keys=keys)


def test_settings_come_from_the_environment_with_safe_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("SYNCGATE_SESSION_KEYS", f"{first}, {second}")
    monkeypatch.setenv("SYNCGATE_PORT", "9090")
    settings = GatewaySettings()
    assert settings.fernet_keys == [first, second]
    assert settings.port == 9090
    assert settings.cookie_secure is True
    assert settings.host == "127.0.0.1"
    assert settings.exchange == "syncgate.events"
    assert settings.publish_deadline == 5.0
    assert first not in repr(settings), "secrets must not show up in logs or tracebacks"


def test_app_settings_load_from_toml_and_json(tmp_path: Path, app_settings_file: Path) -> None:
    from_toml = load_app_settings(app_settings_file)
    json_file = tmp_path / "settings.json"
    json_file.write_text(from_toml.model_dump_json())
    assert load_app_settings(json_file) == from_toml
    assert from_toml.syncIntervalMinutes == 30


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("baseUrl = ", "not valid"),
        ('baseUrl = "ftp://x"\nspaceKeys = ["A"]', "invalid"),
        ('baseUrl = "https://x"\nspaceKeys = []', "invalid"),
        ('baseUrl = "https://x"\nspaceKeys = ["A"]\nsurprise = 1', "invalid"),
    ],
)
def test_a_missing_or_invalid_app_settings_file_fails_at_start_up(
    tmp_path: Path,
    make_settings: Callable[..., GatewaySettings],
    content: str | None,
    message: str,
) -> None:
    path = tmp_path / "bad.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(AppSettingsError, match=message):
        gateway_app(make_settings(app_settings_file=path), publisher=FakePublisher())


def test_app_settings_are_re_read_when_the_file_changes(app_settings_file: Path) -> None:
    provider = AppSettingsProvider(app_settings_file, check_interval=0)
    assert provider.current().spaceKeys == ("ENG",)
    app_settings_file.write_text('baseUrl = "https://x.example"\nspaceKeys = ["OPS", "HR"]\n')
    bump_mtime(app_settings_file)
    assert provider.current().spaceKeys == ("OPS", "HR")
    # A broken edit is logged and the last good settings stay.
    app_settings_file.write_text("baseUrl = ")
    bump_mtime(app_settings_file)
    assert provider.current().spaceKeys == ("OPS", "HR")


def bump_mtime(path: Path) -> None:
    later = time.time() + 5
    os.utime(path, (later, later))


def test_password_hashes_verify_and_are_salted() -> None:
    first, second = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert first != second
    assert first.startswith("scrypt$15$8$1$")
    assert verify_password("s3cret-pass", first)
    assert not verify_password("s3cret-pasS", first)
    assert not verify_password("s3cret-pass", "garbage")
    assert not verify_password("s3cret-pass", "bcrypt$1$2$3$4$5")


def test_add_user_writes_an_owner_only_file_and_replaces_by_email(tmp_path: Path) -> None:
    path = tmp_path / "var" / "users.json"
    first = add_user(path, email="ada@example.com", name="Ada", password="pw-one-long")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = add_user(path, email="ADA@example.com", name="Ada L.", password="pw-two-long")
    assert again.id == first.id
    users = json.loads(path.read_text())["users"]
    assert len(users) == 1
    assert "pw-two-long" not in path.read_text()
    store = UserStore(path)
    assert store.authenticate("ada@example.com", "pw-two-long") is not None
    assert store.authenticate("ada@example.com", "pw-one-long") is None


def test_authenticate(users_file: Path) -> None:
    store = UserStore(users_file)
    user = store.authenticate(" Ada@Example.com ", PASSWORD)
    assert user is not None
    assert user.id == "u-ada"
    assert store.authenticate("ada@example.com", "nope") is None
    assert store.authenticate("nobody@example.com", PASSWORD) is None


def test_a_missing_users_file_fails_at_start_up(
    tmp_path: Path, make_settings: Callable[..., GatewaySettings]
) -> None:
    with pytest.raises(UsersFileError, match="syncgate users add"):
        gateway_app(make_settings(users_file=tmp_path / "none.json"), publisher=FakePublisher())


@pytest.mark.parametrize(
    ("second_id", "second_email", "problem"),
    [("u-ada", "bob@example.com", "same id"), ("u-bob", "ADA@example.com", "same email")],
)
def test_a_users_file_naming_a_user_twice_is_refused_without_echoing_hashes(
    tmp_path: Path, second_id: str, second_email: str, problem: str
) -> None:
    path = tmp_path / "users.json"
    records = [
        {"id": "u-ada", "email": "ada@example.com", "name": "Ada", "password_hash": "h-one"},
        {"id": second_id, "email": second_email, "name": "Bob", "password_hash": "h-two"},
    ]
    path.write_text(json.dumps({"users": records}))
    with pytest.raises(UsersFileError, match=problem) as caught:
        UserStore(path)
    assert "h-one" not in str(caught.value)
    assert "h-two" not in str(caught.value)


def test_users_are_found_by_id_with_their_public_identity(users_file: Path) -> None:
    store = UserStore(users_file)
    record = store.by_id("u-ada")
    assert record is not None
    assert record.public.model_dump() == {
        "id": "u-ada",
        "email": record.email,
        "name": record.name,
    }
    assert store.by_id("u-nobody") is None


def test_settings_keep_the_store_secret() -> None:
    url = "postgresql://syncgate:s3cr3t-pw@db.example:5432/syncgate?password=s3cr3t-pw"
    settings = ConsumerSettings(run_store=url)
    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" not in str(settings.model_dump())
    assert describe(settings.run_store) == (
        "postgresql://syncgate:***@db.example:5432/syncgate?password=***"
    )
    assert describe(SecretStr("var/runs.sqlite3")) == "var/runs.sqlite3"
