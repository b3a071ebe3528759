"""A real gateway process (`syncgate gateway`) on a free port, for the tests that load it or
count its file descriptors."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from gateway.settings import GatewaySettings
from tests.conftest import AMQP_URL, BrokerNames
from tests.support.gateway import wait_ready_at

SYNCGATE = Path(sys.executable).with_name("syncgate")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_descriptor_limit(at_least: int) -> None:
    """This process's (and so its children's) RLIMIT_NOFILE soft limit, to `at_least` if the
    hard limit allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < at_least:
        if hard != resource.RLIM_INFINITY and hard < at_least:
            raise AssertionError(f"RLIMIT_NOFILE's hard limit is {hard}; {at_least} are needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (at_least, hard))


def gateway_env(settings: GatewaySettings, names: BrokerNames, **extra: str) -> dict[str, str]:
    """The test's settings (files, key) and broker names, as SYNCGATE_* variables."""
    return {
        **os.environ,
        "SYNCGATE_AMQP_URL": AMQP_URL,
        "SYNCGATE_SESSION_KEYS": settings.session_keys.get_secret_value(),
        "SYNCGATE_USERS_FILE": str(settings.users_file),
        "SYNCGATE_APP_SETTINGS_FILE": str(settings.app_settings_file),
        "SYNCGATE_COOKIE_SECURE": "false",
        "SYNCGATE_EXCHANGE": names.exchange,
        "SYNCGATE_UNROUTED_EXCHANGE": names.unrouted,
        "SYNCGATE_REVOCATION_STREAM": names.revocations,
        "SYNCGATE_LOG_FORMAT": "console",
        **{f"SYNCGATE_{key.upper()}": value for key, value in extra.items()},
    }


@dataclass(frozen=True, slots=True)
class GatewayProcess:
    base_url: str
    port: int
    pid: int
    log_path: Path

    def open_descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_seconds(self) -> float:
        """User and system CPU time the process has used, from /proc/<pid>/stat."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


@asynccontextmanager
async def gateway_process(env: dict[str, str], log_path: Path) -> AsyncIterator[GatewayProcess]:
    """The gateway, ready (its /readyz answers 200), and stopped with SIGTERM after."""
    port = free_port()
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            str(SYNCGATE),
            "gateway",
            env={**env, "SYNCGATE_PORT": str(port)},
            stdout=log_file,
            stderr=log_file,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            await wait_ready_at(base_url, within=30)
            yield GatewayProcess(base_url, port, process.pid, log_path)
        finally:
            if process.returncode is None:
                process.terminate()
                await asyncio.wait_for(process.wait(), 30)


async def wait_for_descriptors(gateway: GatewayProcess, at_most: int, *, within: float) -> int:
    """Poll the process's open descriptors until there are at most `at_most`; the count."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        count = gateway.open_descriptors()
        if count <= at_most or loop.time() > deadline:
            return count
        await asyncio.sleep(0.2)


async def metric_value(base_url: str, sample: str) -> float:
    """One sample of the gateway's /metrics, by its full name and labels; 0 if absent."""
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


async def metric_samples(base_url: str, name: str) -> dict[str, float]:
    """Every sample of the gateway's /metrics whose name starts with `name`, by its full name
    and labels."""
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/metrics") as response:
        text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples
