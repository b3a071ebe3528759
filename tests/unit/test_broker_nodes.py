"""SYNCGATE_AMQP_URL as a list of broker nodes: parsing, the start-up error for a bad entry,
and what errors and the connection's name say (host:port, never a password)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli.main import cli
from common.amqp import BrokerUnreachable, FailoverConnection, broker_nodes, connect_once
from common.process import StartupError, load_settings
from consumers.settings import ConsumerSettings
from gateway.settings import GatewaySettings

SECRET = "s3cret-pw"


def test_one_url_is_one_node() -> None:
    nodes = broker_nodes("amqp://guest:guest@127.0.0.1:5672/")
    assert [str(url) for url in nodes.urls] == ["amqp://guest:guest@127.0.0.1:5672/"]
    assert str(nodes) == "127.0.0.1:5672"


def test_several_urls_are_the_nodes_in_their_order() -> None:
    nodes = broker_nodes(
        f" amqp://app:{SECRET}@rabbit-b:5682/prod , amqps://app:{SECRET}@rabbit-a/prod,"
        f"amqp://app:{SECRET}@[2001:db8::1]/prod"
    )
    # host:port only, default ports filled in (amqps 5671), IPv6 bracketed.
    assert str(nodes) == "rabbit-b:5682, rabbit-a:5671, [2001:db8::1]:5672"
    assert [url.host for url in nodes.urls] == ["rabbit-b", "rabbit-a", "2001:db8::1"]
    assert all(url.path == "/prod" and url.password == SECRET for url in nodes.urls)
    assert SECRET not in str(nodes)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "at least one amqp:// or amqps:// URL is required"),
        (" , ", "at least one"),
        (f"amqp://u:{SECRET}@a/,,amqp://u:{SECRET}@b/", "URL 2 of 3 is empty"),
        (f"amqp://u:{SECRET}@a/,", "URL 2 of 2 is empty"),
        (f"http://u:{SECRET}@a/", "the URL must start with amqp:// or amqps://"),
        (f"amqp://u:{SECRET}@a/,{SECRET}", "URL 2 of 2 must start with amqp://"),
        (f"amqp://u:{SECRET}@a/,amqp:///vhost", "URL 2 of 2 has no valid host"),
        (f"amqp://u:{SECRET}@a b/", "has no valid host"),
        (f"amqp://u:{SECRET}@a:99999/", "is not a valid URL"),
        (f"amqp://u:{SECRET}@a:0/", "(a) has no valid port"),
    ],
)
def test_a_bad_entry_is_named_by_its_position_never_quoted(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        broker_nodes(raw)
    assert SECRET not in str(raised.value)


BAD_LIST = f"amqp://app:{SECRET}@node-1:5672/,amqp://app:{SECRET}@node-2:5672:1/"


@pytest.mark.parametrize("settings_type", [GatewaySettings, ConsumerSettings])
def test_a_bad_url_in_the_list_stops_start_up_with_a_clear_error(
    settings_type: type[GatewaySettings] | type[ConsumerSettings],
    monkeypatch: pytest.MonkeyPatch,
    session_key: str,
) -> None:
    monkeypatch.setenv("SYNCGATE_SESSION_KEYS", session_key)
    monkeypatch.setenv("SYNCGATE_AMQP_URL", BAD_LIST)
    with pytest.raises(StartupError) as raised:
        load_settings(settings_type)
    assert raised.value.exit_code == 2
    assert "SYNCGATE_AMQP_URL" in raised.value.message
    assert "URL 2 of 2 is not a valid URL" in raised.value.message
    assert SECRET not in raised.value.message


def test_a_good_list_is_kept_as_given_and_as_a_secret(session_key: str) -> None:
    raw = f"amqp://app:{SECRET}@node-1/,amqp://app:{SECRET}@node-2/"
    for settings in (
        GatewaySettings(session_keys=session_key, amqp_url=raw),
        ConsumerSettings(amqp_url=raw),
    ):
        assert settings.amqp_url.get_secret_value() == raw
        assert SECRET not in repr(settings)


@pytest.mark.parametrize("module", ["gateway", "consumers"])
def test_the_processes_exit_2_on_a_bad_url_list_without_showing_it(
    module: str, session_key: str
) -> None:
    env = {**os.environ, "SYNCGATE_SESSION_KEYS": session_key, "SYNCGATE_AMQP_URL": BAD_LIST}
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "SYNCGATE_AMQP_URL" in done.stderr
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stderr + done.stdout


def test_the_dlq_commands_refuse_a_bad_url_list() -> None:
    result = CliRunner().invoke(cli, ["dlq", "list"], env={"SYNCGATE_AMQP_URL": BAD_LIST})
    assert result.exit_code == 2
    assert "SYNCGATE_AMQP_URL" in result.output
    assert SECRET not in result.output


async def test_a_command_tries_every_node_once_and_names_them_by_host_and_port() -> None:
    # Nothing listens on ports 1 and 2 of the loopback: both refuse at once.
    unreachable = f"amqp://app:{SECRET}@127.0.0.1:1/,amqp://app:{SECRET}@127.0.0.1:2/"
    with pytest.raises(BrokerUnreachable) as raised:
        await connect_once(unreachable, "dlq", connect_timeout=2)
    message = str(raised.value)
    assert message.startswith("127.0.0.1:1: ")
    assert "; 127.0.0.1:2: " in message
    assert SECRET not in message


def test_the_dlq_commands_report_every_unreachable_node() -> None:
    unreachable = f"amqp://app:{SECRET}@127.0.0.1:1/,amqp://app:{SECRET}@127.0.0.1:2/"
    result = CliRunner().invoke(cli, ["dlq", "list"], env={"SYNCGATE_AMQP_URL": unreachable})
    assert result.exit_code == 1
    assert "cannot reach the broker: 127.0.0.1:1: " in result.output
    assert "127.0.0.1:2: " in result.output
    assert SECRET not in result.output


async def test_a_failover_connection_names_its_role_and_nodes_never_a_password() -> None:
    connection = FailoverConnection(
        broker_nodes(f"amqp://app:{SECRET}@node-1/,amqp://app:{SECRET}@node-2:5673/"), "gateway"
    )
    assert connection.name.startswith("syncgate-gateway@")
    assert connection.node == "node-1:5672"
    # aio-pika's own log lines name a connection by str() and repr().
    for text in (str(connection), repr(connection)):
        assert "node-1:5672, node-2:5673" in text
        assert SECRET not in text
    await connection.close()
