"""PostgreSQL for the tests: a database of its own per test on the machine's server, and a
server of a test's own (initdb + pg_ctl as the `postgres` user, on a free port, in a temp
dir) for the tests that stop it. The machine's server is never stopped or reconfigured."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

MACHINE_POSTGRES = os.environ.get(
    "SYNCGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_BIN = Path(os.environ.get("SYNCGATE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def database_url(server_url: str, database: str) -> str:
    """The same server and user, another database."""
    return server_url.rsplit("/", 1)[0] + f"/{database}"


@contextlib.asynccontextmanager
async def fresh_database(server_url: str = MACHINE_POSTGRES) -> AsyncIterator[str]:
    """A new, empty database with a unique name; its URL. Dropped afterwards, with whatever
    connections are still open to it."""
    name = f"syncgate_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield database_url(server_url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def recorded_ids(url: str) -> list[str]:
    """Every event id in `runs` (an empty list before a consumer created the table)."""
    connection = await asyncpg.connect(url)
    try:
        return [row[0] for row in await connection.fetch("SELECT event_id FROM runs")]
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await connection.close()


async def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OwnPostgres:
    """A PostgreSQL server of a test's own, with password (scram-sha-256) authentication."""

    def __init__(self) -> None:
        self.password = f"pw-{uuid.uuid4().hex}"
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="syncgate-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://postgres:{secret}@127.0.0.1:{self.port}/{database}"

    async def _as_postgres(self, *args: str) -> str:
        # initdb refuses to run as root; the server runs as `postgres`, as the machine's does.
        process = await asyncio.create_subprocess_exec(
            "runuser",
            "-u",
            "postgres",
            "--",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 90)
        if process.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {output.decode()[-2000:]}\n{tail}")
        return output.decode()

    async def create(self) -> None:
        shutil.chown(self.root, "postgres", "postgres")
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        shutil.chown(password_file, "postgres", "postgres")
        await self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "--no-sync",
        )
        password_file.unlink()
        # Loopback only, and its socket in its own dir: nothing to do with the machine's server.
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nfsync = on\n"
            )

    async def start(self) -> None:
        await self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start"
        )
        await self.wait_up()

    async def stop(self, mode: str = "fast") -> None:
        await self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop")

    async def wait_up(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while True:
            try:
                connection = await asyncpg.connect(self.url(), timeout=2)
                await connection.close()
                return
            except (OSError, asyncpg.PostgresError, TimeoutError):
                assert time.monotonic() < deadline, f"own postgres not up: {self.log}"
                await asyncio.sleep(0.1)

    async def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            await self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.asynccontextmanager
async def own_postgres() -> AsyncIterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        await server.create()
        await server.start()
        yield server
    finally:
        await server.destroy()
