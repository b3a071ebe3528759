"""Users have a role: an old users file (no role) still loads, its users plain users."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cli.main import cli
from gateway.users import load_users


def test_a_file_without_roles_loads_with_plain_users(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    old = {"users": [{"id": "u1", "email": "a@example.com", "name": "A", "password_hash": "x"}]}
    path.write_text(json.dumps(old))
    (user,) = load_users(path).users
    assert user.role == "user"
    assert not user.is_operator


def test_users_add_writes_the_role_and_keeps_the_id(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    runner = CliRunner()
    args = ["users", "add", "op@example.com", "--name", "Op", "--file", str(path)]
    added = runner.invoke(cli, [*args, "--role", "operator"], input="long enough pw\n")
    assert added.exit_code == 0, added.output
    (operator,) = load_users(path).users
    assert operator.is_operator
    demoted = runner.invoke(cli, args, input="long enough pw\n")  # the default role: user
    assert demoted.exit_code == 0, demoted.output
    (user,) = load_users(path).users
    assert (user.id, user.role) == (operator.id, "user")
    refused = runner.invoke(cli, [*args, "--role", "root"], input="long enough pw\n")
    assert refused.exit_code == 2
