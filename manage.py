#!/usr/bin/env python
"""Operator commands: migrate, create-client, scheduler, standalone."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent


@click.group()
def cli() -> None:
    """Job scheduler management commands."""


def data_dir_option(command):
    """--data-dir: the standalone run whose database and broker a command uses by default."""
    return click.option(
        "--data-dir",
        default=".standalone",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Data dir of a running `manage.py standalone` (make run): its standalone.json "
        "supplies the database and broker URLs unless SCHEDULER_DATABASE_URL is set.",
    )(command)


def _settings(data_dir: Path | None = None):
    from scheduler_app.config import ConfigError, load_settings
    from scheduler_app.standalone.state import StandaloneStateError, service_environ

    try:
        environ = os.environ if data_dir is None else service_environ(data_dir, os.environ)
        return load_settings(environ=environ)
    except (ConfigError, StandaloneStateError) as exc:
        raise click.ClickException(f"configuration: {exc}") from exc


def run_migrations(database_url: str, revision: str = "head") -> None:
    """Bring the database schema to ``revision`` with Alembic."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["skip_logging"] = True
    command.upgrade(config, revision)


@cli.command()
@click.option("--revision", default="head", show_default=True)
@data_dir_option
def migrate(revision: str, data_dir: Path) -> None:
    """Apply database migrations."""
    run_migrations(_settings(data_dir).database_url, revision)
    click.echo(f"database at {revision}")


@cli.command("create-client")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["submitter", "operator", "admin"]),
    default="submitter",
    show_default=True,
)
@data_dir_option
def create_client(name: str, role: str, data_dir: Path) -> None:
    """Create an API client and print its credentials (the secret is shown only once)."""
    from scheduler_app.db import make_engine, make_session_factory
    from scheduler_app.services.clients.service import ClientService

    engine = make_engine(_settings(data_dir), pool_size=1)
    client, secret = ClientService(make_session_factory(engine)).create(name, role)
    engine.dispose()
    click.echo(
        json.dumps(
            {
                "client_id": client.client_id,
                "client_secret": secret,
                "role": client.role,
                "name": client.name,
                "id": str(client.id),
            }
        )
    )


@cli.command()
@data_dir_option
def scheduler(data_dir: Path) -> None:
    """Run the scheduler: release delayed tasks, re-publish lost ones."""
    from scheduler_app.logs import configure_logging
    from scheduler_app.scheduler_process import Scheduler

    settings = _settings(data_dir)
    configure_logging(settings)
    process = Scheduler(settings)
    process.install_signal_handlers()
    process.run()


@cli.command("webhook-receiver")
@click.option("--port", default=9000, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--secret", default=None, help="whsec_… key: verify signatures (401 on a bad one)")
def webhook_receiver(port: int, host: str, secret: str | None) -> None:
    """Run a local webhook receiver: it verifies and shows what it receives."""
    from scheduler_app.services.notifiers.receiver import make_server

    server = make_server(host, port, secret)
    click.echo(
        f"webhook receiver on http://{host}:{server.server_address[1]}/ "
        f"(JSON at /api/received; signatures {'verified' if secret else 'not checked'})"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.command()
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--data-dir", default=".standalone", show_default=True, type=click.Path())
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 32),
    help="Worker processes to run (each -c 2, named standalone-N@host when more than one).",
)
def standalone(port: int, data_dir: str, no_flower: bool, workers: int) -> None:
    """Start API, workers, scheduler and Flower on embedded (or configured) Postgres and Redis."""
    from scheduler_app.standalone import run_standalone

    sys.exit(
        run_standalone(
            port=port, data_dir=Path(data_dir).resolve(), flower=not no_flower, workers=workers
        )
    )


if __name__ == "__main__":
    cli()
