"""Everything one bench run creates: files, keys, ports and unique broker names, and cleanup."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from cryptography.fernet import Fernet

from gateway.users import UserRecord, UsersFile, hash_password

AMQP_URL = os.environ.get("SYNCGATE_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT_URL = os.environ.get("SYNCGATE_BENCH_MANAGEMENT_URL", "http://127.0.0.1:15672")
MANAGEMENT_AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}

BENCH_EMAIL = "bench@example.com"
# Made fresh for each run and thrown away with it.
BENCH_PASSWORD = uuid.uuid4().hex
ROUTING_KEY = "confluence.app.sync"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Workspace:
    """A temp dir with the users and app settings files, a session key and broker names.

    Every exchange and queue of the run starts with `prefix`, so `delete_topology` finds them
    all, including the retry and dead-letter queues the consumer declares.
    """

    root: Path
    prefix: str = field(default_factory=lambda: f"bench.{uuid.uuid4().hex[:10]}")
    session_key: str = field(default_factory=lambda: Fernet.generate_key().decode())

    @classmethod
    def create(cls) -> Workspace:
        workspace = cls(Path(tempfile.mkdtemp(prefix="syncgate-bench-")))
        workspace.users_file.write_text(
            UsersFile(
                users=(
                    UserRecord(
                        id="u-bench",
                        email=BENCH_EMAIL,
                        name="Bench User",
                        password_hash=hash_password(BENCH_PASSWORD),
                    ),
                )
            ).model_dump_json()
        )
        workspace.app_settings_file.write_text(
            'baseUrl = "https://example.atlassian.net/wiki"\nspaceKeys = ["ENG", "OPS"]\n'
        )
        return workspace

    @property
    def users_file(self) -> Path:
        return self.root / "users.json"

    @property
    def app_settings_file(self) -> Path:
        return self.root / "app-settings.toml"

    def name(self, part: str) -> str:
        return f"{self.prefix}.{part}"

    def log_file(self, label: str) -> Path:
        return self.root / f"{label}.log"

    def syncgate_env(self, *, port: int, run_store: str = "runs.sqlite3") -> dict[str, str]:
        """Production settings, except plain-http cookies and this run's names and files."""
        return {
            **os.environ,
            "SYNCGATE_AMQP_URL": AMQP_URL,
            "SYNCGATE_EXCHANGE": self.name("events"),
            "SYNCGATE_UNROUTED_EXCHANGE": self.name("unrouted"),
            "SYNCGATE_QUEUE": self.name("work"),
            "SYNCGATE_DEAD_LETTER_EXCHANGE": self.name("dlx"),
            "SYNCGATE_REVOCATION_STREAM": self.name("revocations"),
            "SYNCGATE_HOST": "127.0.0.1",
            "SYNCGATE_PORT": str(port),
            "SYNCGATE_USERS_FILE": str(self.users_file),
            "SYNCGATE_APP_SETTINGS_FILE": str(self.app_settings_file),
            "SYNCGATE_SESSION_KEYS": self.session_key,
            # Plain http on localhost: a Secure cookie would never be sent back.
            "SYNCGATE_COOKIE_SECURE": "false",
            "SYNCGATE_RUN_STORE": str(self.root / run_store),
        }

    def remove_files(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


PYTHON = sys.executable
REPO_ROOT = Path(__file__).resolve().parent.parent


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for the bench's helper processes: `bench` is importable from anywhere."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


async def delete_topology(prefix: str, management_url: str = MANAGEMENT_URL) -> list[str]:
    """Delete every queue and exchange whose name starts with `prefix`, through the broker's
    management API at `management_url`; returns their names."""
    deleted: list[str] = []
    async with aiohttp.ClientSession(headers=MANAGEMENT_AUTH) as http:
        for kind in ("queues", "exchanges"):
            async with http.get(f"{management_url}/api/{kind}/%2F?columns=name") as response:
                response.raise_for_status()
                names = [item["name"] for item in await response.json()]
            for name in names:
                if name.startswith(prefix):
                    async with http.delete(f"{management_url}/api/{kind}/%2F/{name}") as gone:
                        if gone.status in (204, 404):
                            deleted.append(name)
    return deleted
