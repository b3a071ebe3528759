"""definitions.json is exported from the declare functions and cannot drift from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from common.definitions import (
    TopologyRecorder,
    definitions_drifted,
    rabbit_password_hash,
    render_definitions,
)
from common.topology import ConsumerTopology

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_file_is_what_the_code_declares() -> None:
    assert (ROOT / "definitions.json").read_text() == render_definitions(), (
        "definitions.json is out of date; run `syncgate topology export`"
    )


def test_the_export_ignores_this_shells_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCGATE_QUEUE", "someone.elses")
    assert "someone.elses" not in render_definitions()


def test_other_settings_give_other_definitions() -> None:
    """The export follows the code: change a setting and the file changes with it."""
    shorter = ConsumerTopology(max_attempts=2, delivery_limit=7)
    definitions = json.loads(render_definitions(shorter))
    retry_queues = [q["name"] for q in definitions["queues"] if ".retry." in q["name"]]
    assert retry_queues == ["syncgate.confluence-sync.retry.1000ms"]
    (work,) = [q for q in definitions["queues"] if q["name"] == "syncgate.confluence-sync"]
    assert work["arguments"]["x-delivery-limit"] == 7


def test_the_check_command_fails_on_a_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "definitions.json"
    runner = CliRunner()
    assert runner.invoke(cli, ["topology", "check", "--file", str(path)]).exit_code == 1
    exported = runner.invoke(cli, ["topology", "export", "--file", str(path)])
    assert exported.exit_code == 0, exported.output
    assert not definitions_drifted(path)
    checked = runner.invoke(cli, ["topology", "check", "--file", str(path)])
    assert checked.exit_code == 0, checked.output
    path.write_text(path.read_text().replace('"x-delivery-limit": 20', '"x-delivery-limit": 21'))
    assert runner.invoke(cli, ["topology", "check", "--file", str(path)]).exit_code == 1


async def test_a_conflicting_redeclaration_is_an_error() -> None:
    recorder = TopologyRecorder()
    await recorder.declare_exchange("x", "topic", durable=True)
    await recorder.declare_exchange("x", "topic", durable=True)  # the same: fine
    with pytest.raises(ValueError, match="declared two different ways"):
        await recorder.declare_exchange("x", "fanout", durable=True)


def test_the_password_hash_is_rabbitmqs() -> None:
    # The worked example in RabbitMQ's "Credentials and Passwords" guide.
    assert (
        rabbit_password_hash("test12", bytes.fromhex("908DC60A"))
        == "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
    )


def test_the_broker_gets_a_vhost_and_a_user_since_it_skips_its_defaults() -> None:
    definitions = json.loads((ROOT / "definitions.json").read_text())
    assert definitions["vhosts"] == [{"name": "/"}]
    (user,) = definitions["users"]
    (permission,) = definitions["permissions"]
    assert permission["user"] == user["name"] == "syncgate"
    compose = (ROOT / "compose.yaml").read_text()
    assert "amqp://syncgate:syncgate@rabbitmq:5672/" in compose
