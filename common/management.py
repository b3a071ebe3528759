"""The RabbitMQ management HTTP API, for the one thing AMQP cannot do: setting a policy.

Policies are set through the management API (or `rabbitmqctl` on the broker's host); AMQP
0-9-1 has no method for them. The consumer applies `common.broker_version`'s policy on
RabbitMQ 4.x at start-up, then checks that it is the policy in effect on each queue (only the
highest-priority matching policy applies). Every failure is a PolicyError whose message
says what to do, including the `rabbitmqctl` command that does the same by hand.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
from aio_pika.abc import AbstractChannel
from yarl import URL

from common.broker_version import (
    Policy,
    broker_version,
    keep_dead_letters_policy,
    looked_into_queues,
)
from common.topology import ConsumerTopology

# How long the queues' effective policy may take to show the one just set.
_EFFECT_TIMEOUT = 10.0
_REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)


class PolicyError(Exception):
    """The policy could not be set or is not the one in effect; the message says why."""


def rabbitmqctl_command(policy: Policy, vhost: str) -> str:
    """The same policy, set by hand on the broker's host."""
    return (
        f"rabbitmqctl set_policy -p '{vhost}' --priority {policy.priority} "
        f"--apply-to {policy.apply_to} {policy.name} '{policy.pattern}' "
        f"'{json.dumps(policy.definition)}'"
    )


def vhost_of(amqp_url: str) -> str:
    """The vhost an AMQP URL names, as aio-pika reads it ("/" when the path is empty)."""
    path = URL(amqp_url).path
    return path[1:] if len(path) > 1 else "/"


class ManagementApi:
    def __init__(self, url: str) -> None:
        parsed = URL(url)
        self._headers = (
            {"Authorization": aiohttp.encode_basic_auth(parsed.user, parsed.password or "")}
            if parsed.user is not None
            else {}
        )
        self._base = parsed.with_user(None).with_password(None)
        self.shown = str(self._base)

    def _url(self, *parts: str) -> str:
        path = "/".join(quote(part, safe="") for part in parts)
        return str(self._base).rstrip("/") + "/api/" + path

    async def _request(
        self, http: aiohttp.ClientSession, method: str, url: str, body: Any = None
    ) -> Any:
        try:
            async with http.request(method, url, json=body) as response:
                text = await response.text()
                if response.status >= 300:
                    raise PolicyError(
                        f"the management API at {self.shown} answered {method} with "
                        f"{response.status}: {text[:300]}"
                    )
                return json.loads(text) if text else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PolicyError(
                f"cannot reach the management API at {self.shown}: {exc or type(exc).__name__}"
            ) from None

    async def apply(self, policy: Policy, vhost: str, queues: Sequence[str]) -> None:
        """Set `policy` in `vhost` (idempotent), then wait until it is the one in effect on
        each of `queues`."""
        async with aiohttp.ClientSession(headers=self._headers, timeout=_REQUEST_TIMEOUT) as http:
            url = self._url("policies", vhost, policy.name)
            if await self._current(http, url) == policy.body():
                # Set already (definitions.json, an operator, an earlier start): a user
                # without the 'policymaker' tag may check it.
                for queue in queues:
                    await self._wait_in_effect(http, policy, vhost, queue)
                return
            try:
                await self._request(http, "PUT", url, policy.body())
            except PolicyError as exc:
                raise PolicyError(
                    f"{exc}. The user needs the 'policymaker' tag; or set the policy by hand: "
                    f"{rabbitmqctl_command(policy, vhost)}"
                ) from None
            for queue in queues:
                await self._wait_in_effect(http, policy, vhost, queue)

    async def _current(self, http: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
        """The policy at `url` as its PUT body would say it; None when there is none."""
        try:
            async with http.get(url) as response:
                if response.status != 200:
                    return None
                reported = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None  # the PUT that follows reports what is wrong
        if not isinstance(reported, dict):
            return None
        return {key: reported.get(key) for key in ("pattern", "definition", "apply-to", "priority")}

    async def _wait_in_effect(
        self, http: aiohttp.ClientSession, policy: Policy, vhost: str, queue: str
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _EFFECT_TIMEOUT
        while True:
            reported = await self._request(http, "GET", self._url("queues", vhost, queue))
            effective = reported.get("policy") if isinstance(reported, dict) else None
            if effective == policy.name:
                return
            if loop.time() >= deadline:
                raise PolicyError(
                    f"policy {policy.name} is set but queue {queue!r} is under policy "
                    f"{effective or 'none'}: a policy of higher priority than "
                    f"{policy.priority} matches it; give that one 'delivery-limit: -1' for "
                    "this queue, or lower its priority"
                )
            await asyncio.sleep(0.5)

    async def policies(self, vhost: str) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession(headers=self._headers, timeout=_REQUEST_TIMEOUT) as http:
            listed = await self._request(http, "GET", self._url("policies", vhost))
        return list(listed or [])


async def keep_dead_letters(
    channel: AbstractChannel,
    topology: ConsumerTopology,
    *,
    management_url: str | None,
    vhost: str,
) -> Policy | None:
    """Make sure looking into the DLQ and the unrouted queue never loses a message on this
    broker: nothing to do on 3.x; on 4.x the policy is set and in effect, or PolicyError."""
    version = await broker_version(channel)
    policy = keep_dead_letters_policy(version, topology)
    if policy is None:
        return None
    if management_url is None:
        raise PolicyError(
            f"RabbitMQ {version} gives quorum queues a delivery limit of 20, so the 21st look "
            f"into {topology.dead_letter_queue} would drop a dead-lettered event; syncgate "
            "lifts it with a policy, set through the management API: set "
            "SYNCGATE_MANAGEMENT_URL (e.g. http://user:password@broker:15672/, a user with "
            "the 'policymaker' tag), or set the policy by hand and still give the URL so that "
            f"syncgate can check it: {rabbitmqctl_command(policy, vhost)}"
        )
    await ManagementApi(management_url).apply(policy, vhost, looked_into_queues(topology))
    return policy
