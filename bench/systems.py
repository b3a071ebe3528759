"""Starting the systems under test and the ceilings, each as its own processes."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection

from bench.procs import Child, StartupFailed, wait_http_ok
from bench.workspace import AMQP_URL, PYTHON, REPO_ROOT, Workspace, bench_env, free_port
from common.topology import QUORUM

# The installed `syncgate` command next to this interpreter, as an operator would run it.
SYNCGATE_CLI = str(Path(PYTHON).parent / "syncgate")
# The Node.js peer (Fastify + amqplib + better-sqlite3); scripts/bench.sh runs `npm ci` there.
NODE_PEER = REPO_ROOT / "bench" / "node_peer"


@dataclass
class HttpSystem:
    """One system that answers POST /api/sync: its servers, and its consumer and queue if any."""

    label: str
    port: int
    servers: list[Child]
    consumers: list[Child] = field(default_factory=list)
    queue: str | None = None
    exchange: str | None = None  # where its events go, for a backlog of C's (consumer_drain)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/sync"

    @property
    def children(self) -> list[Child]:
        return [*self.servers, *self.consumers]


async def queue_counts(channel: AbstractChannel, name: str) -> tuple[int, int]:
    """(ready messages, consumers) from a passive declare: exact and immediate, unlike the
    management API's statistics, which refresh every few seconds."""
    queue = await channel.declare_queue(name, passive=True)
    result = queue.declaration_result
    return int(result.message_count or 0), int(result.consumer_count or 0)


async def wait_for_consumer(connection: AbstractConnection, child: Child, queue: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        child.check_alive()
        # A passive declare of a missing queue closes the channel; use a throwaway one.
        probe = await connection.channel()
        try:
            if (await queue_counts(probe, queue))[1] > 0:
                return
        except aio_pika.exceptions.ChannelClosed:
            pass
        finally:
            with contextlib.suppress(Exception):
                await probe.close()
        await asyncio.sleep(0.3)
    raise StartupFailed(f"{child.label} never consumed from {queue}")


async def start_syncgate_consumer(workspace: Workspace, connection: AbstractConnection) -> Child:
    env = workspace.syncgate_env(port=0)
    consumer = Child.start(
        "syncgate consumer",
        [SYNCGATE_CLI, "consumer"],
        env,
        workspace.log_file("syncgate-consumer"),
    )
    await wait_for_consumer(connection, consumer, workspace.name("work"))
    return consumer


async def start_syncgate(workspace: Workspace, consumer: Child, *, workers: int) -> HttpSystem:
    """`workers` gateway processes sharing one port through SO_REUSEPORT."""
    port = free_port()
    env = workspace.syncgate_env(port=port)
    env["SYNCGATE_REUSE_PORT"] = "true" if workers > 1 else "false"
    label = "syncgate" if workers == 1 else f"syncgate x{workers}"
    servers = [
        Child.start(
            f"{label} gateway {n}",
            [SYNCGATE_CLI, "gateway"],
            env,
            workspace.log_file(f"gateway-w{workers}-{n}"),
        )
        for n in range(workers)
    ]
    for server in servers:
        # Each process must be ready; with SO_REUSEPORT any one may answer a probe, so probe
        # until all of them have opened their broker link (several probes in a row).
        await wait_http_ok(server, f"http://127.0.0.1:{port}/readyz")
    for _ in range(4 * workers):
        await wait_http_ok(servers[0], f"http://127.0.0.1:{port}/readyz")
    return HttpSystem(
        label, port, servers, [consumer], workspace.name("work"), workspace.name("events")
    )


async def start_ceiling_server(workspace: Workspace, kind: str) -> HttpSystem:
    port = free_port()
    argv = [PYTHON, "-m", "bench.ceilings", kind, f"--port={port}"]
    if kind == "session":
        argv.append(f"--key={workspace.session_key}")
    label = "A static" if kind == "static" else "B session"
    server = Child.start(label, argv, bench_env(), workspace.log_file(f"ceiling-{kind}"))
    await wait_http_ok(server, f"http://127.0.0.1:{port}/healthz")
    return HttpSystem(label, port, [server])


async def start_peer(
    workspace: Workspace, connection: AbstractConnection, prefetch: int
) -> HttpSystem:
    port = free_port()
    env = bench_env(
        BENCH_PEER_AMQP_URL=AMQP_URL,
        BENCH_PEER_EXCHANGE=workspace.name("peer.events"),
        BENCH_PEER_QUEUE=workspace.name("peer.work"),
        BENCH_PEER_SESSION_KEYS=workspace.session_key,
        BENCH_PEER_USERS_FILE=str(workspace.users_file),
        BENCH_PEER_APP_SETTINGS_FILE=str(workspace.app_settings_file),
        BENCH_PEER_RUN_STORE=str(workspace.root / "peer-runs.sqlite3"),
        BENCH_PEER_PREFETCH=str(prefetch),
    )
    consumer = Child.start(
        "peer consumer", [PYTHON, "-m", "bench.peer"], env, workspace.log_file("peer-consumer")
    )
    await wait_for_consumer(connection, consumer, workspace.name("peer.work"))
    uvicorn = [PYTHON, "-m", "uvicorn", "bench.peer:app", "--host=127.0.0.1", f"--port={port}"]
    uvicorn += ["--workers=1", "--no-access-log", "--log-level=warning"]
    server = Child.start("peer", uvicorn, env, workspace.log_file("peer"))
    await wait_http_ok(server, f"http://127.0.0.1:{port}/healthz")
    return HttpSystem("peer", port, [server], [consumer], workspace.name("peer.work"))


def node_peer_missing() -> str | None:
    """Why the Node.js peer cannot run here, or None if it can: `node` on the PATH and its
    packages installed (`npm ci` in bench/node_peer, as scripts/bench.sh does)."""
    if shutil.which("node") is None:
        return "node is not installed"
    # npm writes this record of what it installed at the end of every `npm ci`.
    if not (NODE_PEER / "node_modules" / ".package-lock.json").exists():
        return f"its packages are not installed (cd {NODE_PEER} && npm ci)"
    return None


def node_peer_env(workspace: Workspace, *, port: int, prefetch: int) -> dict[str, str]:
    """The Node.js peer's settings: its own names, syncgate's sessions and revocation stream."""
    return bench_env(
        BENCH_PEER_AMQP_URL=AMQP_URL,
        BENCH_PEER_EXCHANGE=workspace.name("node.events"),
        BENCH_PEER_UNROUTED_EXCHANGE=workspace.name("node.unrouted"),
        BENCH_PEER_QUEUE=workspace.name("node.work"),
        BENCH_PEER_DEAD_LETTER_EXCHANGE=workspace.name("node.dlx"),
        # The sessions are syncgate's, so their logouts are on syncgate's stream.
        BENCH_PEER_REVOCATION_STREAM=workspace.name("revocations"),
        BENCH_PEER_SESSION_KEYS=workspace.session_key,
        BENCH_PEER_USERS_FILE=str(workspace.users_file),
        BENCH_PEER_APP_SETTINGS_FILE=str(workspace.app_settings_file),
        BENCH_PEER_RUN_STORE=str(workspace.root / "node-peer-runs.sqlite3"),
        BENCH_PEER_PREFETCH=str(prefetch),
        BENCH_PEER_HOST="127.0.0.1",
        BENCH_PEER_PORT=str(port),
    )


async def start_node_peer(
    workspace: Workspace, connection: AbstractConnection, prefetch: int
) -> HttpSystem:
    """One Node process for HTTP and one for the consumer, as `start_peer` starts FastAPI's."""
    port = free_port()
    env = node_peer_env(workspace, port=port, prefetch=prefetch)
    consumer = Child.start(
        "node peer consumer",
        ["node", str(NODE_PEER / "consumer.js")],
        env,
        workspace.log_file("node-peer-consumer"),
    )
    await wait_for_consumer(connection, consumer, workspace.name("node.work"))
    server = Child.start(
        "node peer", ["node", str(NODE_PEER / "server.js")], env, workspace.log_file("node-peer")
    )
    # Ready once its confirm channel is open and it has replayed the revocation stream.
    await wait_http_ok(server, f"http://127.0.0.1:{port}/readyz")
    return HttpSystem(
        "node peer",
        port,
        [server],
        [consumer],
        workspace.name("node.work"),
        workspace.name("node.events"),
    )


async def declare_ceiling_topology(channel: AbstractChannel, workspace: Workspace) -> str:
    """C publishes into this exchange and its quorum queue; D drains that queue."""
    exchange = await channel.declare_exchange(
        workspace.name("ceiling.events"), aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(
        workspace.name("ceiling.work"), durable=True, arguments=QUORUM
    )
    await queue.bind(exchange, routing_key="confluence.#")
    return exchange.name
