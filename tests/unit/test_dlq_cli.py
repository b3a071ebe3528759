"""`syncgate dlq`: arguments and errors that need no broker."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli.main import cli

UNREACHABLE = {"SYNCGATE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}


@pytest.mark.parametrize("args", [[], ["--id", "abc", "--all"]])
def test_replay_needs_exactly_one_of_id_or_all(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["dlq", "replay", *args], env=UNREACHABLE)
    assert result.exit_code == 2
    assert "exactly one of --id ID or --all" in result.output


@pytest.mark.parametrize("args", [["list"], ["replay", "--all"], ["replay", "--id", "abc"]])
def test_an_unreachable_broker_is_a_clear_error(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["dlq", *args], env=UNREACHABLE)
    assert result.exit_code == 1
    assert "cannot reach the broker" in result.output
    assert "Traceback" not in result.output


def test_list_rejects_a_limit_below_one() -> None:
    result = CliRunner().invoke(cli, ["dlq", "list", "--limit", "0"], env=UNREACHABLE)
    assert result.exit_code == 2
    assert "--limit" in result.output
