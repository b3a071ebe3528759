"""The broker's version decides how looking into the DLQ keeps every message: nothing on 3.x,
a `delivery-limit: -1` policy on 4.x, sent exactly as tested here to the management API."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractChannel
from aiohttp import web
from aiohttp.test_utils import TestServer

from common.broker_version import (
    BrokerVersion,
    UnknownBrokerVersion,
    keep_dead_letters_policy,
    parse_version,
)
from common.definitions import DEFINITIONS_BROKER, VHOST
from common.management import ManagementApi, PolicyError, keep_dead_letters, vhost_of
from common.topology import ConsumerTopology

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ConsumerTopology()
EXPECTED_BODY = {
    "pattern": r"^(syncgate\.confluence-sync\.dlq|syncgate\.unrouted)$",
    "definition": {"delivery-limit": -1},
    "apply-to": "quorum_queues",
    "priority": 100,
}


@pytest.mark.parametrize(
    ("sent", "version"),
    [
        (b"3.10.8", BrokerVersion(3, 10, 8)),
        ("4.0.5", BrokerVersion(4, 0, 5)),
        (b"4.3.0-rc.1", BrokerVersion(4, 3, 0)),
        ("4.1", BrokerVersion(4, 1, 0)),
    ],
)
def test_the_version_is_read_from_server_properties(sent: object, version: BrokerVersion) -> None:
    assert parse_version(sent) == version


@pytest.mark.parametrize("sent", [b"", "unknown", None])
def test_an_unreadable_version_is_an_error(sent: object) -> None:
    with pytest.raises(UnknownBrokerVersion):
        parse_version(sent)


@pytest.mark.parametrize("version", ["3.8.0", "3.10.8", "3.13.7"])
def test_on_3x_the_queues_stay_as_they_are(version: str) -> None:
    assert keep_dead_letters_policy(parse_version(version), TOPOLOGY) is None


@pytest.mark.parametrize("version", ["4.0.0", "4.1.4", "4.3.1", "5.0.0"])
def test_on_4x_a_policy_lifts_the_limit_on_the_dlq_and_unrouted_only(version: str) -> None:
    policy = keep_dead_letters_policy(parse_version(version), TOPOLOGY)
    assert policy is not None
    assert policy.name == "syncgate-keep-dead-letters"
    assert policy.body() == EXPECTED_BODY
    # The broker matches with PCRE; for these patterns Python's re agrees.
    pattern = re.compile(policy.pattern)
    assert pattern.search("syncgate.confluence-sync.dlq")
    assert pattern.search("syncgate.unrouted")
    for other in (
        "syncgate.confluence-sync",
        "syncgate.confluence-sync.retry.1000ms",
        "syncgate.confluence-syncXdlq",
        "syncgate.unrouted.more",
        "x.syncgate.unrouted",
    ):
        assert not pattern.search(other), other


def test_definitions_json_carries_the_4x_policy() -> None:
    assert DEFINITIONS_BROKER.major >= 4
    definitions = json.loads((ROOT / "definitions.json").read_text())
    policy = keep_dead_letters_policy(DEFINITIONS_BROKER, TOPOLOGY)
    assert policy is not None
    assert definitions["policies"] == [{"name": policy.name, "vhost": VHOST, **EXPECTED_BODY}]
    # Neither queue has an x-delivery-limit: a non-negative one would beat the policy's -1.
    queues = {q["name"]: q["arguments"] for q in definitions["queues"]}
    assert "x-delivery-limit" not in queues[TOPOLOGY.dead_letter_queue]
    assert "x-delivery-limit" not in queues[TOPOLOGY.events.unrouted]


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "/"),
        ("amqp://guest:guest@127.0.0.1:5672", "/"),
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "/"),
        ("amqp://guest:guest@127.0.0.1:5672/prod", "prod"),
    ],
)
def test_the_vhost_comes_from_the_amqp_url(url: str, vhost: str) -> None:
    assert vhost_of(url) == vhost


@dataclass
class FakeManagement:
    """The management API's policy and queue endpoints, recording what it is sent."""

    put_status: int = 204
    effective: str | None = "syncgate-keep-dead-letters"
    policies: dict[str, Any] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/policies/{vhost}/{name}", self.policy)
        app.router.add_get("/api/queues/{vhost}/{name}", self.queue)
        return app

    async def policy(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.raw_path, body))
        assert request.headers["Authorization"].startswith("Basic ")
        if request.method == "GET":
            if name not in self.policies:
                return web.json_response({"error": "Object Not Found"}, status=404)
            return web.json_response({"name": name, **self.policies[name]})
        if self.put_status >= 300:
            return web.json_response({"error": "not_authorised"}, status=self.put_status)
        self.policies[name] = body
        return web.Response(status=self.put_status)

    async def queue(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.raw_path, None))
        return web.json_response({"name": request.match_info["name"], "policy": self.effective})


@dataclass
class _Connection:
    server_properties: dict[str, Any]


@dataclass
class _Underlay:
    connection: _Connection


@dataclass
class FakeChannel:
    version: bytes

    async def get_underlay_channel(self) -> _Underlay:
        return _Underlay(_Connection({"product": b"RabbitMQ", "version": self.version}))

    def as_channel(self) -> AbstractChannel:
        return cast(AbstractChannel, self)


async def keep(
    version: bytes, fake: FakeManagement | None, *, url: str | None = None
) -> tuple[object, TestServer | None]:
    server = None
    if fake is not None:
        server = TestServer(fake.app())
        await server.start_server()
        url = f"http://ops:secret@127.0.0.1:{server.port}/"
    try:
        return await keep_dead_letters(
            FakeChannel(version).as_channel(), TOPOLOGY, management_url=url, vhost="/"
        ), server
    finally:
        if server is not None:
            await server.close()


async def test_on_4x_the_policy_is_put_then_checked_on_both_queues() -> None:
    fake = FakeManagement()
    policy, _ = await keep(b"4.3.1", fake)
    assert policy is not None
    assert fake.requests == [
        ("GET", "/api/policies/%2F/syncgate-keep-dead-letters", None),
        ("PUT", "/api/policies/%2F/syncgate-keep-dead-letters", EXPECTED_BODY),
        ("GET", "/api/queues/%2F/syncgate.confluence-sync.dlq", None),
        ("GET", "/api/queues/%2F/syncgate.unrouted", None),
    ]


async def test_a_policy_already_set_is_only_checked() -> None:
    """definitions.json set it at boot: a user without 'policymaker' may still start."""
    fake = FakeManagement(put_status=401, policies={"syncgate-keep-dead-letters": EXPECTED_BODY})
    assert (await keep(b"4.0.5", fake))[0] is not None
    assert [method for method, _, _ in fake.requests] == ["GET", "GET", "GET"]


async def test_on_3x_nothing_is_sent() -> None:
    fake = FakeManagement()
    assert (await keep(b"3.10.8", fake))[0] is None
    assert fake.requests == []
    # Not even a management URL is needed.
    assert (await keep(b"3.13.7", None, url=None))[0] is None


async def test_on_4x_without_a_management_url_the_error_says_what_to_do() -> None:
    with pytest.raises(PolicyError) as raised:
        await keep(b"4.1.0", None, url=None)
    message = str(raised.value)
    assert "SYNCGATE_MANAGEMENT_URL" in message
    assert "delivery limit of 20" in message
    assert (
        "rabbitmqctl set_policy -p '/' --priority 100 --apply-to quorum_queues "
        "syncgate-keep-dead-letters "
        r"""'^(syncgate\.confluence-sync\.dlq|syncgate\.unrouted)$' '{"delivery-limit": -1}'"""
    ) in message


async def test_a_refused_put_names_the_tag_and_the_command() -> None:
    fake = FakeManagement(put_status=401)
    with pytest.raises(PolicyError) as raised:
        await keep(b"4.3.1", fake)
    assert "401" in str(raised.value)
    assert "policymaker" in str(raised.value)
    assert "rabbitmqctl set_policy" in str(raised.value)
    assert "secret" not in str(raised.value)  # the URL's password is never shown


async def test_a_higher_priority_policy_in_effect_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("common.management._EFFECT_TIMEOUT", 0.0)
    fake = FakeManagement(effective="ops-catch-all")
    with pytest.raises(PolicyError, match="under policy ops-catch-all"):
        await keep(b"4.3.1", fake)


async def test_an_unreachable_management_api_is_a_clear_error() -> None:
    server = TestServer(web.Application())
    await server.start_server()
    port = server.port
    await server.close()  # nothing listens there now
    with pytest.raises(PolicyError, match="cannot reach the management API"):
        await ManagementApi(f"http://ops:secret@127.0.0.1:{port}/").apply(
            keep_dead_letters_policy(BrokerVersion(4, 0, 0), TOPOLOGY),  # type: ignore[arg-type]
            "/",
            ["q"],
        )
