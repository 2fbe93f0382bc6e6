"""Flask CLI groups: ``config``, ``users``, ``invites`` (and the worker's, registered here too).

``config`` is also published as a ``flask.commands`` entry point so it runs *without* building
the app: a deploy pipeline can check a configuration that ``create_app`` would refuse.
"""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import with_appcontext

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


@click.group("users", help="Manage users (operators bootstrapping an instance).")
def users_group():
    pass


@users_group.command("create")
@click.argument("email")
@with_appcontext
def users_create(email: str):
    """Create a user and print their API key once."""
    from app.errors import AppError
    from app.users.services import register_user

    try:
        new = register_user(email)
    except AppError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    click.echo(f"Created user {new.user.id} ({new.user.email}, slug {new.user.slug}).")
    click.echo("API key (shown once, store it now):")
    click.echo(new.api_key)


@click.group("invites", help="Registration invites for instances with ALLOW_REGISTER=false.")
def invites_group():
    pass


@invites_group.command("create")
@click.option("--uses", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many registrations the invite allows.")
@click.option("--unlimited", is_flag=True, help="Allow any number of registrations.")
@click.option("--expires-in-days", type=click.IntRange(min=1), default=None,
              help="Expire the invite after this many days.")
@click.option("--email", default=None, help="Only this address may register with it.")
@click.option("--note", default=None, help="A note for yourself (who it is for).")
@with_appcontext
def invites_create(uses, unlimited, expires_in_days, email, note):
    """Mint an invite token and print it once."""
    from datetime import timedelta

    from app.auth.services import create_invite
    from app.db import utcnow
    from app.errors import AppError

    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    try:
        new = create_invite("cli", max_uses=None if unlimited else uses, expires_at=expires_at,
                            email=email, note=note)
    except AppError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    click.echo(f"Invite {new.invite.id} (uses: {'unlimited' if unlimited else uses}"
               f"{', expires ' + expires_at.isoformat() if expires_at else ''}).")
    click.echo("Token (shown once):")
    click.echo(new.token)


@invites_group.command("list")
@with_appcontext
def invites_list():
    """List invites: prefix, uses, expiry, state, creator and redeemers."""
    from app.auth.services import list_invites
    from app.db import utcnow

    now = utcnow()
    for invite, redemptions in list_invites():
        if invite.revoked_at:
            state = "revoked"
        elif invite.expires_at and invite.expires_at <= now:
            state = "expired"
        elif invite.max_uses is not None and invite.uses >= invite.max_uses:
            state = "used up"
        else:
            state = "active"
        limit = "unlimited" if invite.max_uses is None else invite.max_uses
        click.echo(f"{invite.id}  {invite.token_prefix}…  {state:8}  uses {invite.uses}/{limit}  "
                   f"by {invite.created_by}  redeemed by "
                   f"{', '.join(str(r.user_id) for r in redemptions) or '-'}")


@invites_group.command("revoke")
@click.argument("invite_id", type=click.UUID)
@with_appcontext
def invites_revoke(invite_id):
    """Revoke an invite."""
    from app.auth.services import revoke_invite
    from app.errors import AppError

    try:
        revoke_invite(invite_id)
    except AppError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"Revoked {invite_id}.")


@click.group("worker", help="The background worker: scheduler, deliveries, sweeps.")
def worker_group():
    pass


@worker_group.command("run")
@click.option("--once", is_flag=True, help="Run every enabled job once, wait for deliveries, "
              "and exit (for cron-style deployments and smoke tests).")
def worker_run(once: bool):
    """Run the background jobs until SIGTERM/SIGINT (graceful: nothing is left claimed)."""
    import logging

    from flask import current_app

    from app.worker.loop import Worker

    app = current_app._get_current_object()
    logging.basicConfig(level=app.config["LOG_LEVEL"].upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = Worker(app)
    if once:
        worker.run_once()
        worker.shutdown()
        return
    worker.install_signal_handlers()
    worker.run()


def register_cli(app: Flask) -> None:
    """Attach the CLI groups to ``app``."""
    app.cli.add_command(worker_group)
    app.cli.add_command(config_group)
    app.cli.add_command(users_group)
    app.cli.add_command(invites_group)
