"""Child processes under measurement: start, wait until ready, read their CPU and RSS, stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil


class StartupFailed(RuntimeError):
    """A child process died or never became ready."""


@dataclass
class Child:
    label: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, label: str, argv: Sequence[str], env: dict[str, str], log_path: Path) -> Child:
        log = log_path.open("ab")
        popen = subprocess.Popen(  # noqa: S603 (argv is built by the bench, never from input)
            list(argv), env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        return cls(label, popen, log_path)

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.popen.pid)

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def rss_bytes(self) -> int:
        return int(self.process.memory_info().rss)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise StartupFailed(f"{self.label} exited with {self.popen.returncode}:\n{tail}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextlib.contextmanager
def paused(children: Sequence[Child]) -> Iterator[None]:
    """Stop these processes (SIGSTOP) for the block, and let them go on after it."""
    processes = [child.process for child in children]
    for process in processes:
        process.suspend()
    try:
        yield
    finally:
        for process in processes:
            process.resume()


def cpu_of(children: Sequence[Child]) -> float:
    return sum(child.cpu_seconds() for child in children)


def rss_of(children: Sequence[Child]) -> int:
    return sum(child.rss_bytes() for child in children)


def broker_process(port: int = 5672) -> psutil.Process | None:
    """RabbitMQ's Erlang VM on this machine, to charge the broker's CPU too (None if remote).

    The one listening on the AMQP `port`: other nodes on the machine (a test's cluster) and
    rabbitmqctl's own VMs are beam.smp too. Without that, the first beam.smp found.
    """
    beams = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "beam.smp"]
    for process in beams:
        with contextlib.suppress(psutil.Error):
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port
                for c in process.net_connections("tcp")
            ):
                return process
    return beams[0] if beams else None


def process_cpu(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        return float(times.user + times.system)
    return 0.0


async def wait_http_ok(child: Child, url: str, within: float = 60.0) -> None:
    """Poll `url` until it answers 200; fail early if the child died."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            child.check_alive()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise StartupFailed(f"{child.label} did not answer 200 on {url} within {within:.0f}s")
