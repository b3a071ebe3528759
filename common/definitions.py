"""definitions.json, the broker's declared topology, exported from the code that declares it.

RabbitMQ loads the file at boot (`management.load_definitions`, see deploy/rabbitmq.conf), so
the queues and their policies exist, and show in the management UI, before any syncgate
process starts. The policies are those of the broker version compose.yaml runs
(DEFINITIONS_BROKER; see common.broker_version). The file is not written by hand: the real
declare functions run against a channel that only records what they declare, with the
default settings, so the file cannot say something the code does not do. `syncgate topology
check` (and a unit test) fails when the file is out of date; an integration test compares it
with what the broker reports after the code declared it for real.

A broker that loads definitions at boot skips its default `guest` user and `/` vhost, so the
file also declares the vhost and a `syncgate` user for the local compose stack (see
LOCAL_USER).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aio_pika.abc import AbstractChannel

from common.broker_version import BrokerVersion, keep_dead_letters_policy
from common.topology import ConsumerTopology, declare_consumer_topology, declare_events_exchange

DEFINITIONS_FILE = Path("definitions.json")
VHOST = "/"
# The broker the file is loaded into: compose.yaml's image. Its policies are that version's
# (common.broker_version): a 3.x broker refuses the file, as it refuses `delivery-limit: -1`.
DEFINITIONS_BROKER = BrokerVersion(4, 3, 0)

# The broker user of the compose stack. Its password is in this public repository, so it is
# for a laptop only: compose publishes the broker's ports on 127.0.0.1, and the README says
# how to change it for anything shared.
LOCAL_USER = "syncgate"
LOCAL_PASSWORD = "syncgate"  # noqa: S105 - published on purpose, see above
# A fixed salt keeps the exported file stable; a random one would make every export differ.
_LOCAL_SALT = b"sgt1"

Json = dict[str, Any]


def rabbit_password_hash(password: str, salt: bytes) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt + sha256(salt + password))."""
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@dataclass
class _RecordedExchange:
    name: str


@dataclass
class _RecordedQueue:
    name: str
    recorder: TopologyRecorder

    async def bind(
        self, exchange: _RecordedExchange | str, routing_key: str | None = None, **_: Any
    ) -> None:
        source = exchange if isinstance(exchange, str) else exchange.name
        # aio-pika binds with the queue's name when no routing key is given, and so does this.
        binding = {
            "source": source,
            "vhost": VHOST,
            "destination": self.name,
            "destination_type": "queue",
            "routing_key": self.name if routing_key is None else routing_key,
            "arguments": {},
        }
        # Binding twice is a no-op on the broker, so it is one binding here too.
        if binding not in self.recorder.bindings:
            self.recorder.bindings.append(binding)

    async def unbind(
        self, exchange: _RecordedExchange | str, routing_key: str | None = None, **_: Any
    ) -> None:
        source = exchange if isinstance(exchange, str) else exchange.name
        key = self.name if routing_key is None else routing_key
        self.recorder.bindings[:] = [
            b
            for b in self.recorder.bindings
            if (b["source"], b["destination"], b["routing_key"]) != (source, self.name, key)
        ]


@dataclass
class TopologyRecorder:
    """Stands in for a channel: records declarations instead of sending them.

    It has the three calls the declare functions use. An exchange declared twice (the consumer
    declares the events exchange the gateway declares too) must be declared the same way,
    as the broker would insist.
    """

    exchanges: dict[str, Json] = field(default_factory=dict)
    queues: dict[str, Json] = field(default_factory=dict)
    bindings: list[Json] = field(default_factory=list)

    async def declare_exchange(
        self,
        name: str,
        type: Any = "direct",  # aio-pika's parameter name
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
        **_: Any,
    ) -> _RecordedExchange:
        declared = {
            "name": name,
            "vhost": VHOST,
            "type": str(getattr(type, "value", type)),
            "durable": durable,
            "auto_delete": auto_delete,
            "internal": internal,
            "arguments": dict(arguments or {}),
        }
        self._record(self.exchanges, declared)
        return _RecordedExchange(name)

    async def declare_queue(
        self,
        name: str,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        **_: Any,
    ) -> _RecordedQueue:
        declared = {
            "name": name,
            "vhost": VHOST,
            "durable": durable,
            "auto_delete": auto_delete,
            "arguments": dict(arguments or {}),
        }
        self._record(self.queues, declared)
        return _RecordedQueue(name, self)

    def _record(self, declared_so_far: dict[str, Json], declared: Json) -> None:
        earlier = declared_so_far.setdefault(declared["name"], declared)
        if earlier != declared:
            raise ValueError(f"{declared['name']} is declared two different ways")

    def as_channel(self) -> AbstractChannel:
        # The declare functions take a channel; they only call what this class implements.
        return cast(AbstractChannel, self)


async def record_topology(topology: ConsumerTopology) -> TopologyRecorder:
    """What the gateway and a consumer with this topology declare, recorded."""
    recorder = TopologyRecorder()
    await declare_events_exchange(recorder.as_channel(), topology.events)
    await declare_consumer_topology(recorder.as_channel(), topology)
    return recorder


def render_definitions(topology: ConsumerTopology | None = None) -> str:
    """definitions.json's text for this topology (the production defaults unless given),
    whatever SYNCGATE_* variables this shell happens to have."""
    topology = topology or ConsumerTopology()
    recorded = asyncio.run(record_topology(topology))
    policy = keep_dead_letters_policy(DEFINITIONS_BROKER, topology)
    definitions: Json = {
        "vhosts": [{"name": VHOST}],
        "users": [
            {
                "name": LOCAL_USER,
                "password_hash": rabbit_password_hash(LOCAL_PASSWORD, _LOCAL_SALT),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": ["administrator"],
            }
        ],
        "permissions": [
            {"user": LOCAL_USER, "vhost": VHOST, "configure": ".*", "write": ".*", "read": ".*"}
        ],
        "exchanges": sorted(recorded.exchanges.values(), key=lambda e: e["name"]),
        "queues": sorted(recorded.queues.values(), key=lambda q: q["name"]),
        "policies": [] if policy is None else [policy.as_definition(VHOST)],
        "bindings": sorted(
            recorded.bindings, key=lambda b: (b["source"], b["destination"], b["routing_key"])
        ),
    }
    return json.dumps(definitions, indent=2, sort_keys=True) + "\n"


def export_definitions(path: Path = DEFINITIONS_FILE) -> Path:
    path.write_text(render_definitions())
    return path


def definitions_drifted(path: Path = DEFINITIONS_FILE) -> bool:
    return not path.exists() or path.read_text() != render_definitions()
