"""The `syncgate` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import click
from cryptography.fernet import Fernet
from pydantic import ValidationError

from common.process import StartupError, load_settings
from common.stores.runs import DEFAULT_LOCATION as DEFAULT_RUN_STORE


@contextlib.contextmanager
def startup_errors() -> Iterator[None]:
    """A process that cannot start ends as a command does: bad settings are a usage error
    (exit code 2, one line per bad variable), anything else exit code 1, both with the reason."""
    try:
        yield
    except StartupError as exc:
        if exc.exit_code == 2:
            raise click.UsageError(exc.message) from None
        raise click.ClickException(exc.message) from None


@click.group()
def cli() -> None:
    """syncgate: an HTTP-to-RabbitMQ event gateway, its consumers, and their tools."""


@cli.command()
def gateway() -> None:
    """Serve the HTTP gateway (settings from SYNCGATE_* variables)."""
    from gateway.__main__ import main

    with startup_errors():
        main()


@cli.command()
def consumer() -> None:
    """Consume events from the broker until SIGTERM or SIGINT."""
    from consumers.__main__ import main

    with startup_errors():
        main()


@cli.command()
def keygen() -> None:
    """Print a new session key (Fernet, url-safe base64)."""
    click.echo(Fernet.generate_key().decode())


@cli.group()
def users() -> None:
    """Manage who may sign in."""


@users.command("add")
@click.argument("email")
@click.option("--name", required=True, help="Display name.")
@click.option(
    "--file",
    "users_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SYNCGATE_USERS_FILE",
    default="users.json",
    show_default=True,
    help="The users file (SYNCGATE_USERS_FILE).",
)
@click.option(
    "--role",
    type=click.Choice(["user", "operator"]),
    default="user",
    show_default=True,
    help="operator: may also use the DLQ page (read, replay, discard dead-lettered events).",
)
def users_add(email: str, name: str, users_file: Path, role: Literal["user", "operator"]) -> None:
    """Add a user, or reset their password and role. The password is read from stdin or a
    prompt."""
    from gateway.users import add_user

    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        raise click.BadParameter("the password must have at least 8 characters")
    try:
        record = add_user(users_file, email=email, name=name, password=password, role=role)
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"saved {record.email} (id {record.id}, {record.role}) in {users_file}")


@cli.command()
@click.option(
    "--store",
    envvar="SYNCGATE_RUN_STORE",
    default=str(DEFAULT_RUN_STORE),
    show_default=True,
    help="The consumer's run store: a SQLite file or a postgresql:// URL (SYNCGATE_RUN_STORE; "
    "prefer the variable for a URL with a password).",
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
def runs(store: str, limit: int) -> None:
    """List the most recent sync runs the consumer recorded."""
    from datetime import UTC, datetime

    from pydantic import SecretStr

    from common.stores.backends import open_run_reader
    from common.stores.runs import Run, RunStoreUnavailable

    async def recent() -> list[Run]:
        reader = open_run_reader(SecretStr(store))
        await reader.start()
        try:
            return await reader.recent(limit=limit)
        finally:
            await reader.close()

    try:
        rows = asyncio.run(recent())
    except RunStoreUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    if not rows:
        click.echo("no runs yet")
    for run in rows:
        handled = datetime.fromtimestamp(run.handled_at / 1000, tz=UTC).isoformat(
            timespec="seconds"
        )
        click.echo(f"{handled}  {run.event_id}  {run.user_email}  data={run.data}")


@cli.group()
def schemas() -> None:
    """Export the JSON Schema files from the event models, check them, release versions."""


@schemas.command("export")
def schemas_export() -> None:
    """Write schemas/json/*.schema.json from the models."""
    from schemas.export import export_schemas

    for path in export_schemas():
        click.echo(f"wrote {path}")


@schemas.command("check")
def schemas_check() -> None:
    """Fail if a schema file differs from what the models export now, or if a released
    version's schema changed in more than its descriptions (schemas/released.json)."""
    from schemas.evolution import compare
    from schemas.export import drifted_schemas

    drifted = drifted_schemas()
    if drifted:
        raise click.ClickException(
            "out of date: " + ", ".join(drifted) + "; run `syncgate schemas export`"
        )
    click.echo("schema files match the models")
    evolution = compare()
    if not evolution.ok:
        raise click.ClickException("\n".join(evolution.problems()))
    click.echo(f"released versions unchanged: {len(evolution.unchanged)}")
    for release in evolution.unreleased:
        click.echo(
            f"unreleased: {release.name} v{release.v} (record it with `syncgate schemas "
            "release` when it ships; until then it may still change)"
        )


@schemas.command("release")
def schemas_release() -> None:
    """Record every unreleased version in schemas/released.json. A released version that
    changed is never overwritten: the command fails instead."""
    from schemas.evolution import MANIFEST, ReleasedVersionChanged, release

    try:
        recorded = release()
    except ReleasedVersionChanged as exc:
        raise click.ClickException(str(exc)) from None
    for entry in recorded:
        click.echo(f"released {entry.name} v{entry.v} ({entry.fingerprint})")
    if not recorded:
        click.echo(f"nothing to release: {MANIFEST} lists every registered version")


@cli.group()
def topology() -> None:
    """Export the broker's definitions.json from the code that declares it, or check it."""


_DEFINITIONS_OPTION = click.option(
    "--file",
    "definitions_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default="definitions.json",
    show_default=True,
    help="The definitions file RabbitMQ loads at boot.",
)


@topology.command("export")
@_DEFINITIONS_OPTION
def topology_export(definitions_file: Path) -> None:
    """Write definitions.json: the exchanges, queues and bindings of the default settings."""
    from common.definitions import export_definitions

    click.echo(f"wrote {export_definitions(definitions_file)}")


@topology.command("check")
@_DEFINITIONS_OPTION
def topology_check(definitions_file: Path) -> None:
    """Fail if definitions.json differs from what the code declares now."""
    from common.definitions import definitions_drifted

    if definitions_drifted(definitions_file):
        raise click.ClickException(
            f"{definitions_file} is out of date; run `syncgate topology export`"
        )
    click.echo(f"{definitions_file} matches the code")


@cli.group()
def dlq() -> None:
    """Look into the consumer's dead-letter queue and replay what is in it (SYNCGATE_* settings)."""
    # aiormq logs every refused connection as an ERROR; with several nodes in SYNCGATE_AMQP_URL
    # a dead one is tried and passed over, and if none answers, the error names each of them.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)


@dlq.command("list")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
def dlq_list(limit: int) -> None:
    """Show dead-lettered events, oldest first, without removing them."""
    from consumers.dlq import DeadLetter, DeadLetterError, DeadLetterQueue
    from consumers.settings import ConsumerSettings

    async def browse() -> tuple[str, int, list[DeadLetter]]:
        async with DeadLetterQueue.open(settings) as queue:
            return queue.name, await queue.count(), await queue.list(limit=limit)

    with startup_errors():
        settings = load_settings(ConsumerSettings)
    try:
        name, total, letters = asyncio.run(browse())
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{name}: {total} dead-lettered" + (f", showing {len(letters)}" if letters else ""))
    for letter in letters:
        at = letter.dead_lettered_at
        when = at.isoformat(timespec="seconds") if at is not None else "-"
        click.echo(
            f"{when}  {letter.event_id}  reason={letter.reason}  attempts={letter.attempts}"
            f"  key={letter.routing_key or '-'}  error={letter.error or '-'}"
        )


@dlq.command("replay")
@click.option("--id", "event_id", help="Replay the dead-lettered event with this id.")
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead-lettered event.")
def dlq_replay(event_id: str | None, replay_all: bool) -> None:
    """Republish dead-lettered events to the events exchange as first attempts.

    Each is removed from the DLQ only after the broker confirmed its republish.
    """
    from consumers.dlq import DeadLetterError, DeadLetterQueue
    from consumers.settings import ConsumerSettings

    if (event_id is None) == (not replay_all):
        raise click.UsageError("give exactly one of --id ID or --all")
    with startup_errors():
        settings = load_settings(ConsumerSettings)

    async def replay_one(wanted: str) -> None:
        async with DeadLetterQueue.open(settings) as queue:
            letter = await queue.replay_one(wanted)
        click.echo(f"replayed {letter.event_id} to {letter.routing_key}")

    async def replay_every() -> None:
        async with DeadLetterQueue.open(settings) as queue:
            total = await queue.count()
            replayed = 0
            with click.progressbar(length=total, label=f"replaying {queue.name}") as bar:
                async for _ in queue.replay_all(limit=total):
                    replayed += 1
                    bar.update(1)
        click.echo(f"replayed {replayed} of {total}")

    try:
        asyncio.run(replay_one(event_id) if event_id is not None else replay_every())
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from None
