"""The `syncgate` command: keygen, users add, schemas check, runs, and its errors."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from cli.main import cli
from common.process import YOUNG_COLLECTION_THRESHOLD, tune_collector
from common.stores.runs_sqlite import SqliteRunStore
from tests.support.events import sync_event


def test_keygen_prints_a_usable_fernet_key() -> None:
    result = CliRunner().invoke(cli, ["keygen"])
    assert result.exit_code == 0
    Fernet(result.output.strip())
    assert CliRunner().invoke(cli, ["keygen"]).output != result.output


def test_users_add_reads_the_password_from_stdin(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    result = CliRunner().invoke(
        cli,
        ["users", "add", "ada@example.com", "--name", "Ada", "--file", str(path)],
        input="long-enough-password\n",
    )
    assert result.exit_code == 0, result.output
    [user] = json.loads(path.read_text())["users"]
    assert user["email"] == "ada@example.com"
    assert user["password_hash"].startswith("scrypt$")


def test_users_add_refuses_short_passwords_and_bad_emails(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    short = CliRunner().invoke(
        cli, ["users", "add", "ada@example.com", "--name", "Ada", "--file", str(path)], input="x\n"
    )
    assert short.exit_code == 2
    assert "at least 8" in short.output
    bad = CliRunner().invoke(
        cli,
        ["users", "add", "not-an-email", "--name", "Ada", "--file", str(path)],
        input="long-enough-password\n",
    )
    assert bad.exit_code == 2
    assert not path.exists()


def test_schemas_check_passes_on_the_committed_files() -> None:
    result = CliRunner().invoke(cli, ["schemas", "check"])
    assert result.exit_code == 0, result.output


def test_runs_lists_recorded_runs(tmp_path: Path) -> None:
    store_path = tmp_path / "runs.sqlite3"
    store = SqliteRunStore(store_path)
    event = sync_event("data")
    assert store.record_sync(event, received_at=1)
    assert not store.record_sync(event, received_at=2), "a redelivery is not recorded twice"
    store.close()
    result = CliRunner().invoke(cli, ["runs", "--store", str(store_path)])
    assert result.exit_code == 0, result.output
    assert str(event.id) in result.output
    assert "ada@example.com" in result.output


def test_runs_says_when_there_is_no_store_or_no_run_yet(tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite3"
    result = CliRunner().invoke(cli, ["runs", "--store", str(missing)])
    assert result.exit_code == 1
    assert f"no run store at {missing}" in result.output
    assert not missing.exists(), "listing never creates the store"
    SqliteRunStore(tmp_path / "empty.sqlite3").close()
    result = CliRunner().invoke(cli, ["runs", "--store", str(tmp_path / "empty.sqlite3")])
    assert result.exit_code == 0, result.output
    assert "no runs yet" in result.output


def test_gateway_refuses_to_start_without_session_keys(monkeypatch: object) -> None:
    result = CliRunner(env={"SYNCGATE_SESSION_KEYS": None}).invoke(cli, ["gateway"])
    assert result.exit_code == 2
    assert "SYNCGATE_SESSION_KEYS" in result.output


@pytest.mark.parametrize("module", ["gateway", "consumers"])
def test_python_dash_m_stops_on_bad_settings_as_the_command_does(module: str) -> None:
    """`python -m gateway` runs the same main as `syncgate gateway`: exit 2, no traceback."""
    env = {**os.environ, "SYNCGATE_SESSION_KEYS": "not-a-key", "SYNCGATE_PREFETCH": "0"}
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "invalid settings" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def collector_state() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector_state")
def test_servers_freeze_start_up_objects_and_collect_young_ones_less_often() -> None:
    gc.unfreeze()
    _, middle, old = gc.get_threshold()
    tune_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, middle, old)
