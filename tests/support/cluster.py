"""The three-node RabbitMQ cluster of scripts/cluster.sh, driven from tests.

`Cluster` runs the script in asyncio subprocesses (never blocking the loop) and asks the
nodes' management API what a test needs to know: which node leads a quorum queue, where its
members are, which node a client connection landed on. Every call has a time limit, and a
failure says what failed, with the script's output and the tail of the node's log.

The ports and the state dir come from the same environment variables as the script's
(SYNCGATE_CLUSTER_*, same defaults), so both always agree. The object holds no loop-bound
state: a session-scoped fixture can create it and tests on any event loop can use it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cluster.sh"
# The script's default state dir: a dir of its own there, which the script creates, marks
# and checks before it deletes anything.
STATE_DIR = "/var/tmp/syncgate-cluster"  # noqa: S108
NODES = (1, 2, 3)

# What one run of the script may take. start --fresh stops whatever runs, then boots node 1
# and nodes 2 and 3 after it (about 30-40 s on two cores); the script gives up on its own
# after SYNCGATE_CLUSTER_START_TIMEOUT (180 s), this is the outer bound.
START_LIMIT = 240.0
STOP_LIMIT = 180.0
COMMAND_LIMIT = 90.0
HTTP_LIMIT = 5.0
GUEST = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}


class ClusterError(RuntimeError):
    """The cluster or the script did not do what was asked."""


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class Cluster:
    """scripts/cluster.sh's three nodes, numbered 1 to 3."""

    nodes = NODES

    def __init__(self, script: Path = SCRIPT, *, env: Mapping[str, str] | None = None) -> None:
        self.script = script
        self.env = dict(os.environ if env is None else env)
        self.state_dir = Path(self.env.get("SYNCGATE_CLUSTER_DIR", STATE_DIR))
        self.node_prefix = self.env.get("SYNCGATE_CLUSTER_NODE_PREFIX", "syncgate-c")
        self._amqp_base = self._port_base("AMQP", 5680)
        self._management_base = self._port_base("MANAGEMENT", 15680)
        self._prometheus_base = self._port_base("PROMETHEUS", 15690)
        self.amqp_urls: list[str] = [self.amqp_url(n) for n in NODES]

    def _port_base(self, kind: str, default: int) -> int:
        return int(self.env.get(f"SYNCGATE_CLUSTER_{kind}_PORT_BASE", default))

    # --- names and addresses ----------------------------------------------------------------

    @staticmethod
    def _check(n: int) -> int:
        if n not in NODES:
            raise ValueError(f"the cluster's nodes are 1, 2 and 3, not {n!r}")
        return n

    def node_name(self, n: int) -> str:
        return f"{self.node_prefix}{self._check(n)}@localhost"

    def node_number(self, name: str) -> int:
        """1 for syncgate-c1@localhost; a name outside this cluster is an error."""
        for n in NODES:
            if self.node_name(n) == name:
                return n
        raise ClusterError(f"{name!r} is not a node of this cluster")

    def amqp_port(self, n: int) -> int:
        return self._amqp_base + self._check(n)

    def amqp_url(self, n: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port(n)}/"

    def management_url(self, n: int) -> str:
        return f"http://127.0.0.1:{self._management_base + self._check(n)}"

    def prometheus_url(self, n: int) -> str:
        return f"http://127.0.0.1:{self._prometheus_base + self._check(n)}"

    def log_file(self, n: int) -> Path:
        return self.state_dir / f"c{self._check(n)}" / "log" / f"{self.node_name(n)}.log"

    def log_tail(self, n: int, lines: int = 40) -> str:
        """The last lines of node N's log (and of its startup output), for error messages."""
        parts = []
        for path in (self.log_file(n).with_name("startup.log"), self.log_file(n)):
            try:
                text = path.read_text(errors="replace")
            except OSError as error:
                parts.append(f"--- {path}: {error.strerror}")
                continue
            parts.append(f"--- last lines of {path}\n{_tail(text, lines)}")
        return "\n".join(parts)

    # --- the script -------------------------------------------------------------------------

    async def run(
        self, *args: str, limit: float = COMMAND_LIMIT, logs_of: tuple[int, ...] = ()
    ) -> str:
        """Run scripts/cluster.sh with these arguments; its stdout, or ClusterError.

        Its progress lines (stderr) are passed on to this process's stderr, where pytest
        shows them with -s or for a failing test. `logs_of` names the nodes whose log tail a
        timeout's error message should carry (the script adds log tails itself when it fails
        on its own).
        """
        command = f"cluster.sh {' '.join(args)}"
        process = await asyncio.create_subprocess_exec(
            str(self.script),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            # Its own process group, so a timeout can end the script with every rabbitmqctl it
            # runs. The nodes themselves run in sessions of their own and are not touched.
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(limit):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            logs = "".join(f"\n{self.log_tail(n)}" for n in logs_of)
            raise ClusterError(f"{command} did not finish within {limit:.0f}s{logs}") from None
        err = stderr.decode(errors="replace")
        if err:
            sys.stderr.write(err if err.endswith("\n") else err + "\n")
        if process.returncode != 0:
            raise ClusterError(
                f"{command} failed (exit {process.returncode}):\n{_tail(err, 120)}"
                + (f"\n{_tail(stdout.decode(errors='replace'), 20)}" if stdout else "")
            )
        return stdout.decode()

    async def start(self, fresh: bool = True) -> None:
        """All three nodes running as one cluster; `fresh` wipes the cluster's state first
        (no queue, message or user change of an earlier run survives)."""
        await self.run("start", *(["--fresh"] if fresh else []), limit=START_LIMIT, logs_of=NODES)

    async def stop(self, purge: bool = False) -> None:
        """All three nodes stopped cleanly; `purge` also deletes the state dir."""
        await self.run("stop", *(["--purge"] if purge else []), limit=STOP_LIMIT)

    async def kill(self, n: int) -> None:
        """kill -9 node N's Erlang VM: a crash, with no goodbye to its peers or clients."""
        await self.run("kill", str(self._check(n)), limit=30.0)

    async def start_node(self, n: int) -> None:
        """Start node N again; returns once it runs and every running node lists it."""
        await self.run("start-node", str(self._check(n)), limit=START_LIMIT, logs_of=(n,))

    async def ctl(self, n: int, *args: str) -> str:
        """rabbitmqctl against node N with the cluster's cookie; its stdout."""
        return await self.run("ctl", str(self._check(n)), *args)

    async def status(self) -> str:
        return await self.run("status")

    async def cluster_status(self, n: int) -> dict[str, Any]:
        """`rabbitmqctl cluster_status` as node N sees it (running_nodes, disk_nodes, ...)."""
        status: dict[str, Any] = json.loads(
            await self.ctl(n, "-q", "cluster_status", "--formatter", "json")
        )
        return status

    # --- the management API -----------------------------------------------------------------

    async def management_get(self, path: str, *, node: int | None = None) -> Any:
        """GET /api/<path> from node `node` if given, else from the first node that answers.

        Nodes that refuse the connection or answer 5xx (down, or booting) are skipped; 404
        and the like are the answer, and raise.
        """
        order = list(NODES) if node is None else [self._check(node)]
        failures = []
        timeout = aiohttp.ClientTimeout(total=HTTP_LIMIT)
        for n in order:
            url = f"{self.management_url(n)}/api/{path}"
            try:
                async with (
                    aiohttp.ClientSession(headers=GUEST, timeout=timeout) as http,
                    http.get(url) as response,
                ):
                    if response.status >= 500:
                        failures.append(f"{url}: HTTP {response.status}")
                        continue
                    if response.status != 200:
                        raise ClusterError(
                            f"GET {url}: HTTP {response.status} {await response.text()}"
                        )
                    return await response.json()
            except (aiohttp.ClientConnectionError, TimeoutError) as error:
                failures.append(f"{url}: {error!r}")
        raise ClusterError("no node's management API answered: " + "; ".join(failures))

    def _queue_path(self, name: str, vhost: str) -> str:
        return f"queues/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(name, safe='')}"

    async def _quorum_queue(self, name: str, vhost: str) -> dict[str, Any]:
        queue: dict[str, Any] = await self.management_get(self._queue_path(name, vhost))
        if queue.get("type") != "quorum":
            raise ClusterError(f"queue {name!r} is {queue.get('type')!r}, not a quorum queue")
        return queue

    async def queue_leader(self, name: str, vhost: str = "/", *, within: float = 30.0) -> int:
        """The number of the node that leads quorum queue `name`.

        While the queue elects a leader (just after its leader died) the API reports none;
        this waits up to `within` seconds for one.
        """
        deadline = time.monotonic() + within
        while True:
            queue = await self._quorum_queue(name, vhost)
            leader = queue.get("leader")
            if isinstance(leader, str) and leader:
                return self.node_number(leader)
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"quorum queue {name!r} reported no leader within {within:.0f}s "
                    f"(members {queue.get('members')}, online {queue.get('online')})"
                )
            await asyncio.sleep(0.25)

    async def members(self, name: str, vhost: str = "/") -> list[int]:
        """The nodes that hold a replica of quorum queue `name`, running or not."""
        queue = await self._quorum_queue(name, vhost)
        return sorted(self.node_number(member) for member in queue.get("members", []))

    async def online_members(self, name: str, vhost: str = "/") -> list[int]:
        """The members of quorum queue `name` whose replica runs."""
        queue = await self._quorum_queue(name, vhost)
        return sorted(self.node_number(member) for member in queue.get("online", []))

    async def connection_node(self, connection_name: str, *, within: float = 0.0) -> int | None:
        """The node that a client connection with this `connection_name` client property is
        connected to, or None. The management API lists a new connection a moment after it
        opened: `within` > 0 waits that long for it to show up."""
        deadline = time.monotonic() + within
        while True:
            for connection in await self.management_get("connections"):
                properties = connection.get("client_properties") or {}
                if properties.get("connection_name") == connection_name:
                    return self.node_number(connection["node"])
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.25)
