"""`python -m bench --profile`: where each microsecond of a request goes, layer by layer.

syncgate's gateway and consumer take the bench's load at one concurrency while py-spy samples
each process (`py-spy record --format raw`, only stacks that are running, not idle). Each
sample goes to the layer of its innermost frame that one of LAYERS names, so a Fernet
decryption called from the session code counts as the session, and pydantic called from the
body code as validation. A layer's share of the samples, times the process's CPU per request
measured in the same run (psutil), gives its µs per request. The Node.js peer, where it is
installed, runs the same load under `node --cpu-prof`; its V8 profile is split by the same
layers, by the file each function comes from.

Sampling attributes time, it does not measure it: the shares are as good as the number of
samples (printed), and py-spy's own cost is left out of the process's CPU only roughly (it
reads the process's memory from outside, without pausing it: --nonblocking).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aio_pika.abc import AbstractConnection

from bench.load import Credentials, offer_load, sign_in
from bench.procs import Child, cpu_of, wait_http_ok
from bench.runner import bench_broker
from bench.systems import (
    NODE_PEER,
    HttpSystem,
    node_peer_env,
    node_peer_missing,
    start_syncgate,
    start_syncgate_consumer,
    wait_for_consumer,
)
from bench.workspace import BENCH_EMAIL, BENCH_PASSWORD, Workspace, free_port

# (layer, substrings of a frame's file path or function), innermost match first. The order
# decides only for frames that several rules name; each rule is a library or module of ours.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("log line", ("/logging/", "common/logs.py", "pino", "sonic-boom")),
    ("metrics", ("prometheus_client", "gateway/metrics.py")),
    ("session", ("gateway/sessions.py", "aiohttp_session", "cryptography", "fernet", "crypto")),
    ("CSRF", ("gateway/csrf.py", "csrf")),
    ("body", ("gateway/body.py", "content-type-parser", "secure-json-parse")),
    ("validation", ("pydantic", "schemas/", "ajv", "gateway/views.py")),
    ("serialisation", ("orjson", "json")),
    ("publish and confirm", ("aiormq", "pamqp", "aio_pika", "gateway/publisher.py", "amqplib")),
    ("run store", ("sqlite3", "common/stores", "better-sqlite3", "run_store")),
    ("consume loop", ("consumers/", "consumer.js")),
    ("HTTP parse", ("http_parser", "_http_parser", "web_protocol", "llhttp", "_http_")),
    ("response", ("web_response", "aiohttp/http_writer", "reply", "response")),
    ("middlewares", ("gateway/middlewares.py", "gateway/routing.py", "web_middlewares", "hooks")),
    ("aiohttp and web framework", ("aiohttp/", "fastify", "find-my-way", "avvio")),
    ("event loop and I/O", ("asyncio", "uvloop", "selectors", "socket", "node:net", "(program)")),
)
OTHER = "other"


def layer_of(frames: Sequence[str]) -> str:
    """The layer of a sample: `frames` from the outermost to the innermost."""
    for frame in reversed(frames):
        lowered = frame.lower()
        for layer, marks in LAYERS:
            if any(mark.lower() in lowered for mark in marks):
                return layer
    return OTHER


def pyspy_layers(raw: str) -> Counter[str]:
    """Samples per layer from py-spy's raw (collapsed) output: `frame;frame;... count`."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[layer_of(stack.split(";"))] += int(count)
    return counts


def cpuprofile_layers(profile: dict[str, object]) -> Counter[str]:
    """Samples per layer from a V8 .cpuprofile (node --cpu-prof): each sample's node and its
    parents, innermost last. Idle samples ("(idle)") are left out, as py-spy leaves them."""
    nodes = {int(n["id"]): n for n in profile["nodes"]}  # type: ignore[attr-defined]
    parent: dict[int, int] = {}
    for node in nodes.values():
        for child in node.get("children", []):
            parent[int(child)] = int(node["id"])

    def frame(node_id: int) -> str:
        call = nodes[node_id]["callFrame"]
        return f"{call['functionName']} ({call['url']})"

    counts: Counter[str] = Counter()
    for sample in profile["samples"]:  # type: ignore[attr-defined]
        node_id = int(sample)
        if nodes[node_id]["callFrame"]["functionName"] in ("(idle)", "(garbage collector)"):
            counts["(idle)" if "idle" in frame(node_id) else "garbage collection"] += 1
            continue
        frames = [frame(node_id)]
        while node_id in parent:
            node_id = parent[node_id]
            frames.append(frame(node_id))
        counts[layer_of(list(reversed(frames)))] += 1
    counts.pop("(idle)", None)
    return counts


@dataclass(frozen=True)
class Breakdown:
    label: str
    samples: Counter[str]
    us_per_request: float  # the process's CPU per accepted request in the profiled load

    @property
    def total_samples(self) -> int:
        return max(1, sum(self.samples.values()))

    def us(self, layer: str) -> float:
        return self.us_per_request * self.samples[layer] / self.total_samples


def table(breakdowns: Sequence[Breakdown]) -> list[str]:
    layers = [layer for layer, _ in LAYERS] + ["garbage collection", OTHER]
    head = f"{'layer':28}" + "".join(f"{b.label:>22}" for b in breakdowns)
    lines = [head, "-" * len(head)]
    for layer in layers:
        if not any(b.samples[layer] for b in breakdowns):
            continue
        cells = "".join(
            f"{b.us(layer):>12,.0f} µs {100 * b.samples[layer] / b.total_samples:>4.0f}%"
            for b in breakdowns
        )
        lines.append(f"{layer:28}{cells}")
    lines.append(
        f"{'total (psutil)':28}"
        + "".join(f"{b.us_per_request:>12,.0f} µs     " for b in breakdowns)
    )
    lines.append(
        f"{'samples':28}" + "".join(f"{sum(b.samples.values()):>17,}     " for b in breakdowns)
    )
    return lines


async def _profiled_load(
    system: HttpSystem,
    credentials: Credentials,
    *,
    pids: dict[str, int],
    out: Path,
    concurrency: int,
    duration: float,
    use_wrk: bool,
) -> tuple[dict[str, str], int, dict[str, float]]:
    """Load the system while py-spy samples each named pid; (raw output per name, accepted
    requests, CPU seconds per name)."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy (the bench extra has it)")
    spies = {
        name: await asyncio.create_subprocess_exec(
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out / f"{name}.txt"),
            "--duration",
            str(int(duration) + 1),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    }
    await asyncio.sleep(0.5)  # py-spy attaches before the load starts
    gateway_cpu0, consumer_cpu0 = cpu_of(system.servers), cpu_of(system.consumers)
    load = await offer_load(
        system.url,
        concurrency=concurrency,
        duration=duration,
        credentials=credentials,
        use_wrk=use_wrk,
    )
    cpu = {
        "gateway": cpu_of(system.servers) - gateway_cpu0,
        "consumer": cpu_of(system.consumers) - consumer_cpu0,
    }
    for spy in spies.values():
        await asyncio.wait_for(spy.wait(), 30)
    raw = {name: (out / f"{name}.txt").read_text() for name in pids}
    return raw, load.accepted, cpu


async def _node_peer_profile(
    workspace: Workspace,
    connection: AbstractConnection,
    *,
    concurrency: int,
    duration: float,
    use_wrk: bool,
    prefetch: int,
    credentials: Credentials,
) -> list[Breakdown]:
    """The Node.js peer under `node --cpu-prof`: each process writes its profile as it exits.
    It has no login of its own: it takes syncgate's session cookies, as in the bench."""
    port = free_port()
    env = node_peer_env(workspace, port=port, prefetch=prefetch)
    prof = workspace.root / "node-profiles"
    argv = ["node", "--cpu-prof", f"--cpu-prof-dir={prof}", "--cpu-prof-interval=2000"]
    consumer = Child.start(
        "node peer consumer",
        [*argv, "--cpu-prof-name=consumer.cpuprofile", str(NODE_PEER / "consumer.js")],
        env,
        workspace.log_file("node-peer-consumer-profiled"),
    )
    server = None
    try:
        await wait_for_consumer(connection, consumer, workspace.name("node.work"))
        server = Child.start(
            "node peer",
            [*argv, "--cpu-prof-name=server.cpuprofile", str(NODE_PEER / "server.js")],
            env,
            workspace.log_file("node-peer-profiled"),
        )
        await wait_http_ok(server, f"http://127.0.0.1:{port}/readyz")
        system = HttpSystem("node peer", port, [server], [consumer], workspace.name("node.work"))
        server_cpu0, consumer_cpu0 = cpu_of([server]), cpu_of([consumer])
        load = await offer_load(
            system.url,
            concurrency=concurrency,
            duration=duration,
            credentials=credentials,
            use_wrk=use_wrk,
        )
        await asyncio.sleep(2)  # the consumer catches up with the backlog
        server_cpu, consumer_cpu = (
            cpu_of([server]) - server_cpu0,
            cpu_of([consumer]) - consumer_cpu0,
        )
    finally:
        # SIGTERM: the peer shuts down and exits, and V8 writes its profile on the way out.
        for child in (server, consumer):
            if child is not None:
                child.popen.send_signal(signal.SIGTERM)
                await asyncio.to_thread(child.popen.wait, 30)
    accepted = max(1, load.accepted)
    return [
        Breakdown(
            "node peer gateway",
            cpuprofile_layers(json.loads((prof / "server.cpuprofile").read_text())),
            server_cpu / accepted * 1e6,
        ),
        Breakdown(
            "node peer consumer",
            cpuprofile_layers(json.loads((prof / "consumer.cpuprofile").read_text())),
            consumer_cpu / accepted * 1e6,
        ),
    ]


async def run_profile(
    *, concurrency: int, duration: float, use_wrk: bool, prefetch: int, node_peer: bool
) -> list[Breakdown]:
    workspace = Workspace.create()
    children: list[Child] = []
    try:
        async with bench_broker(workspace) as connection:
            try:
                consumer = await start_syncgate_consumer(workspace, connection)
                children.append(consumer)
                system = await start_syncgate(workspace, consumer, workers=1)
                children.extend(system.servers)
                credentials = await sign_in(
                    f"http://127.0.0.1:{system.port}", BENCH_EMAIL, BENCH_PASSWORD
                )
                # A warm-up, so the profile is of the steady state.
                await offer_load(
                    system.url, concurrency=concurrency, duration=2.0,
                    credentials=credentials, use_wrk=use_wrk,
                )  # fmt: skip
                out = workspace.root / "profiles"
                out.mkdir()
                pids = {"gateway": system.servers[0].popen.pid, "consumer": consumer.popen.pid}
                raw, accepted, cpu = await _profiled_load(
                    system, credentials, pids=pids, out=out,
                    concurrency=concurrency, duration=duration, use_wrk=use_wrk,
                )  # fmt: skip
                accepted = max(1, accepted)
                breakdowns = [
                    Breakdown("syncgate gateway", pyspy_layers(raw["gateway"]),
                              cpu["gateway"] / accepted * 1e6),
                    Breakdown("syncgate consumer", pyspy_layers(raw["consumer"]),
                              cpu["consumer"] / accepted * 1e6),
                ]  # fmt: skip
                for child in reversed(children):
                    child.stop()
                children.clear()
                if node_peer and node_peer_missing() is None:
                    breakdowns += await _node_peer_profile(
                        workspace, connection, concurrency=concurrency, duration=duration,
                        use_wrk=use_wrk, prefetch=prefetch, credentials=credentials,
                    )  # fmt: skip
                return breakdowns
            finally:
                for child in reversed(children):
                    child.stop()
    finally:
        workspace.remove_files()
