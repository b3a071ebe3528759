"""The `syncgate` command."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TypeVar

import click
from cryptography.fernet import Fernet
from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


def load_settings(settings_type: type[S]) -> S:
    """Settings from the environment, or a readable error and exit code 2."""
    try:
        return settings_type()
    except ValidationError as exc:
        lines = [
            f"  SYNCGATE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        ]
        raise click.UsageError("invalid settings:\n" + "\n".join(lines)) from None


@click.group()
def cli() -> None:
    """syncgate: an HTTP-to-RabbitMQ event gateway, its consumers, and their tools."""


@cli.command()
def gateway() -> None:
    """Serve the HTTP gateway (settings from SYNCGATE_* variables)."""
    from aiohttp import web

    from gateway.app import create_app
    from gateway.app_settings import AppSettingsError
    from gateway.settings import GatewaySettings
    from gateway.users import UsersFileError
    from syncgate.logs import configure_logging

    settings = load_settings(GatewaySettings)
    configure_logging(settings.log_format, settings.log_level)
    try:
        app = create_app(settings)
    except (AppSettingsError, UsersFileError) as exc:
        raise click.ClickException(str(exc)) from None
    web.run_app(app, host=settings.host, port=settings.port, access_log=None, print=None)


@cli.command()
def consumer() -> None:
    """Consume events from the broker until SIGTERM or SIGINT."""
    from consumers.service import serve
    from consumers.settings import ConsumerSettings
    from syncgate.logs import configure_logging

    settings = load_settings(ConsumerSettings)
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(serve(settings))


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
def users_add(email: str, name: str, users_file: Path) -> None:
    """Add a user, or reset their password. The password is read from stdin or a prompt."""
    from gateway.users import add_user

    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        raise click.BadParameter("the password must have at least 8 characters")
    try:
        record = add_user(users_file, email=email, name=name, password=password)
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"saved {record.email} (id {record.id}) in {users_file}")


@cli.command()
@click.option(
    "--store",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SYNCGATE_RUN_STORE",
    default="syncgate-runs.sqlite3",
    show_default=True,
    help="The consumer's run store (SYNCGATE_RUN_STORE).",
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
def runs(store: Path, limit: int) -> None:
    """List the most recent sync runs the consumer recorded."""
    from datetime import UTC, datetime

    from consumers.run_store import RunStore

    if not store.exists():
        raise click.ClickException(f"no run store at {store}")
    run_store = RunStore(store)
    try:
        rows = run_store.runs(limit=limit)
    finally:
        run_store.close()
    if not rows:
        click.echo("no runs yet")
    for run in rows:
        handled = datetime.fromtimestamp(run.handled_at / 1000, tz=UTC).isoformat(
            timespec="seconds"
        )
        click.echo(f"{handled}  {run.event_id}  {run.user_email}  data={run.data}")


@cli.group()
def schemas() -> None:
    """Export the JSON Schema files from the event models, or check them."""


@schemas.command("export")
def schemas_export() -> None:
    """Write schemas/json/*.schema.json from the models."""
    from schemas.export import export_schemas

    for path in export_schemas():
        click.echo(f"wrote {path}")


@schemas.command("check")
def schemas_check() -> None:
    """Fail if a schema file differs from what the models export now."""
    from schemas.export import drifted_schemas

    drifted = drifted_schemas()
    if drifted:
        raise click.ClickException(
            "out of date: " + ", ".join(drifted) + "; run `syncgate schemas export`"
        )
    click.echo("schema files match the models")
