"""Flask CLI groups: ``config``, ``users``, ``invites``, ``services``, ``console`` (and the
worker's), plus ``import-cueapi`` (``app/importers``); the operator's inspection commands
(``cues``, ``executions``, ``users show``) are in :mod:`app.operator_cli`.

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
@click.option("--connect", is_flag=True,
              help="Also connect to the database (and Redis, when configured) and check the "
                   "schema is migrated.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too (for deploy pipelines).")
def config_check(env_file: str, connect: bool, strict: bool):
    """Validate the configuration from the environment; exit 1 listing every problem.

    Production risks of a valid configuration are listed as warnings (exit 0 unless
    ``--strict``); ``--connect`` reports an unreachable database or Redis as a problem.
    """
    from config import format_problems, production_warnings, web_process_count

    try:
        values = load_config(None, env_file=env_file)
    except ConfigError as exc:
        problems = exc.problems
    else:
        problems = validate(values)
    if problems:
        click.echo(format_problems(problems, "Configuration problems:"), err=True)
        raise SystemExit(1)
    from app import MODULES

    enabled = [m.name for m in MODULES if m.enabled(values)]
    connection_problems: list[str] = []
    report: list[str] = []
    if connect:
        from app.checks import check_connections

        report, connection_problems = check_connections(values)
    if connection_problems:
        click.echo(format_problems(connection_problems, "Connection problems:"), err=True)
        raise SystemExit(1)
    click.echo("Configuration OK")
    click.echo(f"  ENV: {values['ENV']}")
    click.echo(f"  database: {values['DATABASE_URL'].split(':', 1)[0] or 'sqlite (instance/)'}")
    click.echo(f"  delegation (EXTERNAL_AUTH_BACKEND): {values['EXTERNAL_AUTH_BACKEND']}")
    click.echo(f"  modules: {', '.join(enabled)}")
    for line in report:
        click.echo(f"  {line}")
    warnings = production_warnings(values, web_process_count())
    if warnings:
        click.echo(format_problems(warnings, "Warnings:"), err=True)
        if strict:
            raise SystemExit(1)


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


@click.group("services", help="Named service principals for delegation (svc_ keys).")
def services_group():
    pass


def _principal_call(fn, *args, **kwargs):
    from app.errors import AppError

    try:
        return fn(*args, **kwargs)
    except AppError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None


def _echo_new_key(new, what: str) -> None:
    click.echo(f"{what} {new.principal.name} (key {new.key.id}, {new.key.key_prefix}…).")
    click.echo("Key (shown once, store it now):")
    click.echo(new.token)


@services_group.command("create")
@click.argument("name")
@click.option("--owner", default=None,
              help="Bind the principal to the users of this owner tag (external_owner).")
@click.option("--scope", "scopes", multiple=True,
              type=click.Choice(["users:write", "users:act", "keys:mint"]),
              help="Grant a scope (repeatable). Default: users:write and users:act.")
@with_appcontext
def services_create(name, owner, scopes):
    """Create a service principal and print its first key once."""
    from app.auth.principals import create_principal

    new = _principal_call(create_principal, name, owner=owner, scopes=scopes or None)
    _echo_new_key(new, "Created service principal")


@services_group.command("rotate")
@click.argument("name")
@with_appcontext
def services_rotate(name):
    """Add a second live key (both work until you retire the old one)."""
    from app.auth.principals import rotate_key

    _echo_new_key(_principal_call(rotate_key, name), "New key for")
    click.echo("Deploy it, then: flask services retire-key " + name)


@services_group.command("retire-key")
@click.argument("name")
@click.argument("key", required=False)
@with_appcontext
def services_retire_key(name, key):
    """Retire KEY (its id or svc_ prefix) of NAME, or its oldest live key."""
    from app.auth.principals import retire_key

    retired = _principal_call(retire_key, name, key)
    click.echo(f"Retired key {retired.id} ({retired.key_prefix}…) of {name}.")


@services_group.command("revoke")
@click.argument("name")
@with_appcontext
def services_revoke(name):
    """Revoke a principal: every key of it is refused from the next request on."""
    from app.auth.principals import revoke_principal

    _principal_call(revoke_principal, name)
    click.echo(f"Revoked {name}.")


@services_group.command("list")
@with_appcontext
def services_list():
    """List principals: owner, scopes, state and keys (never the keys themselves)."""
    from app.auth.principals import list_principals

    for principal, keys in list_principals():
        state = "revoked" if principal.revoked_at else "active"
        click.echo(f"{principal.name}  {state}  owner {principal.owner or '-'}  "
                   f"scopes {principal.scopes}")
        for key in keys:
            used = key.last_used_at.isoformat() if key.last_used_at else "never"
            key_state = "retired" if key.retired_at else "live"
            click.echo(f"    {key.id}  {key.key_prefix}…  {key_state:7}  "
                       f"created {key.created_at.isoformat()}  last used {used}")


@click.group("console", help="The operator console (/console).")
def console_group():
    pass


@console_group.command("login")
@click.argument("email")
@with_appcontext
def console_login(email):
    """Print a one-time sign-in link (15 minutes) for the operator EMAIL."""
    from flask import current_app

    from app.console.auth import LINK_TTL, issue_login_link, link_url

    config = current_app.config
    if not config["CONSOLE_ENABLED"]:
        raise click.ClickException("The console is off; set CONSOLE_ENABLED=true (and "
                                   "CONSOLE_ADMINS) and restart the server")
    token = _principal_call(issue_login_link, email, config["CONSOLE_ADMINS"], "cli")
    minutes = int(LINK_TTL.total_seconds() // 60)
    click.echo(f"Sign-in link for {email.strip().lower()} (works once, within {minutes} "
               "minutes):")
    click.echo(link_url(config["BASE_URL"], token))


@click.group("worker", help="The background worker: scheduler, deliveries, sweeps.")
def worker_group():
    pass


@worker_group.command("run")
@click.option("--once", is_flag=True, help="Run every enabled job once, wait for deliveries, "
              "and exit (for cron-style deployments and smoke tests).")
@click.option("--metrics-bind", default=None, metavar="HOST:PORT",
              help="Serve this worker's Prometheus metrics on HOST:PORT (no token: bind it "
                   "where only Prometheus reaches).")
def worker_run(once: bool, metrics_bind: str | None):
    """Run the background jobs until SIGTERM/SIGINT (graceful: nothing is left claimed)."""
    import logging

    from flask import current_app

    from app.worker.loop import Worker

    app = current_app._get_current_object()
    logging.basicConfig(level=app.config["LOG_LEVEL"].upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from app.metrics import prepare_multiprocess_dir, serve_worker_metrics

    prepare_multiprocess_dir()
    if metrics_bind:
        serve_worker_metrics(metrics_bind)
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
    app.cli.add_command(services_group)
    from app.importers.cli import import_cueapi

    app.cli.add_command(import_cueapi)
    from app.operator_cli import register_operator_cli

    register_operator_cli(app, users_group, worker_group)
    app.cli.add_command(console_group)
