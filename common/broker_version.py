"""What the broker's version means for the queues an operator looks into: the one place that
decides it.

`dlq list` (and the gateway's DLQ page) read a queue with `basic.get` and hand every message
back, so each look is one delivery of each message. A quorum queue dead-letters or drops a
message once its delivery limit is reached, and RabbitMQ 4.0 gives every quorum queue a
default limit of 20: on 4.x the 21st look would lose a dead-lettered event.

- RabbitMQ 3.x: no default limit applies to a queue without `x-delivery-limit`, and 3.x has
  no way to say "unlimited" (`-1` or `0` as the argument drop a message on its first return;
  a policy of `-1` is refused). The DLQ and the unrouted queue stay as they are.
- RabbitMQ 4.x: a policy with `delivery-limit: -1` lifts the limit. A policy, not the
  `x-delivery-limit` argument: a queue declared on 3.x (without the argument) cannot be
  redeclared with it ("inequivalent arg"), while a policy applies to an existing queue at
  once and can be changed or removed without redeclaring anything. The policy matches the
  DLQ and the unrouted queue by exact name only, and neither queue has the argument (a
  non-negative argument would take precedence over the policy's -1).

The work queue keeps its explicit `x-delivery-limit` on both: there the limit is wanted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel

from common.topology import ConsumerTopology

UNLIMITED = -1
"""RabbitMQ 4.x's "no delivery limit" (a policy value; 3.x refuses it)."""

POLICY_NAME = "syncgate-keep-dead-letters"
# Only one policy applies to a queue: the highest priority wins. Ours matches two queues by
# exact name, so a higher priority than an operator's catch-all policy is what is meant.
POLICY_PRIORITY = 100


class UnknownBrokerVersion(ValueError):
    """The broker sent no version we can read."""


@dataclass(frozen=True, slots=True, order=True)
class BrokerVersion:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(value: object) -> BrokerVersion:
    """The version in a broker's `server_properties["version"]` (bytes or text, e.g.
    b"3.10.8" or "4.1.0-rc.1")."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    match = _VERSION.match(text.strip())
    if match is None:
        raise UnknownBrokerVersion(f"the broker reports version {text[:64]!r}")
    major, minor, patch = match.groups()
    return BrokerVersion(int(major), int(minor), int(patch or 0))


async def broker_version(channel: AbstractChannel) -> BrokerVersion:
    """The version of the broker this channel's connection is on, from its server properties."""
    underlay = await channel.get_underlay_channel()
    properties: dict[str, Any] = dict(underlay.connection.server_properties or {})
    return parse_version(properties.get("version", ""))


@dataclass(frozen=True, slots=True)
class Policy:
    """A RabbitMQ policy, as the management API's PUT /api/policies/{vhost}/{name} takes it."""

    name: str
    pattern: str
    definition: dict[str, Any]
    apply_to: str
    priority: int

    def body(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "definition": dict(self.definition),
            "apply-to": self.apply_to,
            "priority": self.priority,
        }

    def as_definition(self, vhost: str) -> dict[str, Any]:
        """The policy as definitions.json holds it."""
        return {"name": self.name, "vhost": vhost, **self.body()}


def _literal(name: str) -> str:
    """`name` as a regular expression (PCRE, as the broker reads it) that matches only itself."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", name)


def looked_into_queues(topology: ConsumerTopology) -> tuple[str, str]:
    """The queues operators read with a requeueing `basic.get`: the DLQ and the unrouted."""
    return (topology.dead_letter_queue, topology.events.unrouted)


def keep_dead_letters_policy(version: BrokerVersion, topology: ConsumerTopology) -> Policy | None:
    """The policy this broker needs so that looking never loses a message; None on 3.x."""
    if version.major < 4:
        return None
    names = "|".join(_literal(name) for name in looked_into_queues(topology))
    return Policy(
        name=POLICY_NAME,
        pattern=f"^({names})$",
        definition={"delivery-limit": UNLIMITED},
        apply_to="quorum_queues",
        priority=POLICY_PRIORITY,
    )
