"""Flask CLI groups: ``flask config check`` (and later worker, users, services, invites).

``config`` is also published as a ``flask.commands`` entry point so it runs *without* building
the app: a deploy pipeline can check a configuration that ``create_app`` would refuse.
"""

from __future__ import annotations

import click
from flask import Flask

from config import ConfigError, load_config, validate


@click.group("config", help="Inspect and validate Cueline's configuration.")
def config_group():
    pass


@config_group.command("check")
@click.option("--env-file", default=".env", show_default=True,
              help="dotenv file read before the environment.")
def config_check(env_file: str):
    """Validate the configuration from the environment; exit 1 listing every problem."""
    try:
        values = load_config(None, env_file=env_file)
    except ConfigError as exc:
        problems = exc.problems
    else:
        problems = validate(values)
    if problems:
        click.echo("Configuration problems:", err=True)
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        raise SystemExit(1)
    from app import MODULES

    enabled = [m.name for m in MODULES if m.enabled(values)]
    click.echo("Configuration OK")
    click.echo(f"  ENV: {values['ENV']}")
    click.echo(f"  database: {values['DATABASE_URL'].split(':', 1)[0] or 'sqlite (instance/)'}")
    click.echo(f"  delegation (EXTERNAL_AUTH_BACKEND): {values['EXTERNAL_AUTH_BACKEND']}")
    click.echo(f"  modules: {', '.join(enabled)}")


def register_cli(app: Flask) -> None:
    """Attach the CLI groups to ``app``."""
    app.cli.add_command(config_group)
