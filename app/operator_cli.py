"""Operator commands: see what happened to a cue, an execution or a user, and run long jobs.

* ``flask cues list`` / ``flask cues show CUE_ID`` (the cue and its execution timeline),
  ``flask executions show ID`` (attempts, response code, error, outcome), ``flask users show
  REF`` (id, e-mail or slug) — every one with ``--json`` for scripts.
* ``flask users import FILE`` (bulk user upserts, 1,000 per transaction) and ``flask worker
  sweep`` (the sweeps and retention jobs until nothing is left) report progress: a progress bar
  on a terminal, a line every few seconds otherwise (logs, CI).

They act across every user, with the database's authority: they are for operators, never
exposed over HTTP.  Look-ups live in :mod:`app.scheduling.services.inspect`.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import date, datetime
from typing import Any
from uuid import UUID

import click
from flask import Flask
from flask.cli import with_appcontext


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON (timestamps as ISO 8601, ids as strings)."""
    click.echo(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False))


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def _call(fn, *args, **kwargs):
    """Run a service call; an ``AppError`` becomes a clean CLI error (exit 1)."""
    from app.errors import AppError

    try:
        return fn(*args, **kwargs)
    except AppError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None


class Progress:
    """Progress of a long operation: ``click.progressbar`` on a terminal, otherwise one line
    at most every ``interval`` seconds (and a final one), so logs stay readable.

    ``total`` may be unknown (``None``): the lines then report the count so far.
    """

    def __init__(self, label: str, total: int | None = None, *, interval: float = 2.0,
                 tty: bool | None = None):
        self.label, self.total, self.interval = label, total, interval
        self.done = 0
        self.tty = sys.stdout.isatty() if tty is None else tty
        self._bar = None
        self._last = time.monotonic()

    def __enter__(self) -> Progress:
        if self.tty and self.total is not None:
            self._bar = click.progressbar(length=self.total, label=self.label).__enter__()
        return self

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._line()

    def _line(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        click.echo(f"{self.label}: {self.done}{of}")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif exc[0] is None:
            self._line()


# --- cues ------------------------------------------------------------------------------------

@click.group("cues", help="Inspect cues of every user (operators).")
def cues_group():
    pass


@cues_group.command("list")
@click.option("--user", "user_ref", default=None, help="Only this user's (id, e-mail or slug).")
@click.option("--status", type=click.Choice(["active", "paused", "completed", "failed"]),
              default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def cues_list(user_ref, status, limit, as_json):
    """List cues, newest first: id, status, transport, owner, name, next and last run."""
    from app.scheduling.presenters import cue_dict
    from app.scheduling.services.inspect import find_cues, find_user

    owner = _call(find_user, user_ref) if user_ref else None
    rows = find_cues(owner, status, limit)
    if as_json:
        echo_json([{**cue_dict(cue), "user_id": user.id, "user_email": user.email}
                   for cue, user in rows])
        return
    for cue, user in rows:
        click.echo(f"{cue.id}  {cue.status:9}  {cue.transport:7}  {user.email}  {cue.name}  "
                   f"next {_when(cue.next_run)}  last {_when(cue.last_run)}  "
                   f"runs {cue.run_count}")
    click.echo(f"({len(rows)} cue{'s' if len(rows) != 1 else ''})")


def _execution_line(execution) -> str:
    error = f"  error: {execution.error_message}" if execution.error_message else ""
    code = execution.http_status if execution.http_status is not None else "-"
    return (f"  {_when(execution.scheduled_for)}  {execution.status:13}  "
            f"attempts {execution.attempts}  http {code}  by {execution.triggered_by}  "
            f"{execution.id}{error}")


@cues_group.command("show")
@click.argument("cue_id")
@click.option("--executions", "limit", type=click.IntRange(0, 10_000), default=20,
              show_default=True, help="How many of the newest executions to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def cues_show(cue_id, limit, as_json):
    """One cue of any user and its execution timeline (newest first)."""
    from app.scheduling.presenters import cue_dict, execution_dict
    from app.scheduling.services.inspect import cue_timeline

    timeline = _call(cue_timeline, cue_id, limit)
    cue, owner = timeline.cue, timeline.owner
    if as_json:
        echo_json({**cue_dict(cue), "user_id": owner.id, "user_email": owner.email,
                   "executions": [execution_dict(e) for e in timeline.executions],
                   "total_executions": timeline.total_executions})
        return
    schedule = cue.schedule_cron or _when(cue.schedule_at)
    click.echo(f"Cue {cue.id} ({cue.name}) of {owner.email}")
    click.echo(f"  status {cue.status}, transport {cue.transport}, {cue.schedule_type} "
               f"{schedule} ({cue.schedule_timezone})")
    if cue.callback_url:
        click.echo(f"  callback {cue.callback_method} {cue.callback_url}")
    click.echo(f"  next run {_when(cue.next_run)}, last run {_when(cue.last_run)}, "
               f"fired {cue.fired_count}, delivered {cue.run_count}")
    click.echo(f"Executions ({len(timeline.executions)} of {timeline.total_executions}, "
               "newest first):")
    for execution in timeline.executions:
        click.echo(_execution_line(execution))


# --- executions ------------------------------------------------------------------------------

@click.group("executions", help="Inspect executions of every user (operators).")
def executions_group():
    pass


@executions_group.command("show")
@click.argument("execution_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def executions_show(execution_id, as_json):
    """One execution: attempts, last response code and error, retries, claim, outcome."""
    from app.scheduling.presenters import execution_dict
    from app.scheduling.services.inspect import execution_with_cue

    execution, cue, owner = _call(execution_with_cue, execution_id)
    details = {**execution_dict(execution), "cue_name": cue.name, "user_email": owner.email,
               "transport": cue.transport, "triggered_by": execution.triggered_by,
               "replayed_from": execution.replayed_from,
               "max_attempts": cue.retry_max_attempts, "next_retry_at": execution.next_retry_at,
               "response_body": execution.response_body,
               "claimed_by_worker": execution.claimed_by_worker,
               "claimed_at": execution.claimed_at,
               "outcome_state": execution.outcome_state, "evidence": execution.evidence}
    if as_json:
        echo_json(details)
        return
    click.echo(f"Execution {execution.id} of cue {cue.id} ({cue.name}, {owner.email})")
    code = execution.http_status if execution.http_status is not None else "-"
    lines = [
        ("status", execution.status), ("scheduled for", _when(execution.scheduled_for)),
        ("triggered by", execution.triggered_by),
        ("attempts", f"{execution.attempts} of {cue.retry_max_attempts + 1}"
         if cue.transport == "webhook" else execution.attempts),
        ("last attempt", _when(execution.last_attempt_at)), ("last response code", code),
        ("error", execution.error_message or "-"),
        ("next retry", _when(execution.next_retry_at)),
        ("delivered", _when(execution.delivered_at)),
    ]
    if cue.transport == "worker":
        lines.append(("claimed by", execution.claimed_by_worker or "-"))
    if execution.response_body:
        lines.append(("response body", execution.response_body[:500]))
    if execution.outcome is not None:
        lines.append(("outcome", json.dumps(execution.outcome, default=_json_default)))
    if execution.replayed_from:
        lines.append(("replay of", execution.replayed_from))
    for name, value in lines:
        click.echo(f"  {name + ':':20}{value}")


# --- users -----------------------------------------------------------------------------------

def show_user(ref: str, as_json: bool) -> None:
    """``flask users show REF``: the account, its limits and this month's counts."""
    from app.quotas.cues import counted_cues
    from app.scheduling.services.inspect import find_user
    from app.users.services import account_summary

    user = _call(find_user, ref)
    details = {**account_summary(user), "cues_counted_for_quota": counted_cues(user.id),
               "active": user.active, "external_owner": user.external_owner,
               "created_at": user.created_at, "updated_at": user.updated_at}
    if as_json:
        echo_json(details)
        return
    click.echo(f"User {user.id} ({user.email}, slug {user.slug})")
    for name in ("plan", "active", "external_owner", "active_cues", "cues_counted_for_quota",
                 "active_cue_limit", "executions_this_month", "monthly_execution_limit",
                 "monthly_message_limit", "rate_limit_per_minute", "api_key_prefix",
                 "has_webhook_secret", "created_at"):
        value = details[name]
        click.echo(f"  {name + ':':26}{_when(value) if isinstance(value, datetime) else value}")


def import_users(path: str, owner: str | None, batch: int) -> dict[str, int]:
    """``flask users import FILE``: upsert the users of a JSON array or JSON-lines file.

    Each item is an internal upsert body plus its ``id`` (see docs/delegation.md); items are
    applied ``batch`` at a time (one transaction each) with progress; returns the summary.
    """
    from app.users.sync import sync_users

    items = _read_items(path)
    summary = {"created": 0, "updated": 0, "unchanged": 0, "error": 0}
    errors: list[str] = []
    with Progress("Importing users", len(items)) as progress:
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            result = sync_users(chunk, owner=owner)
            for offset, item in enumerate(result["results"]):
                if item["status"] == "error" and len(errors) < 20:
                    errors.append(f"item {start + offset}: {item['error']['code']}: "
                                  f"{item['error']['message']}")
            for status, count in result["summary"].items():
                summary[status] += count
            progress.advance(len(chunk))
    for line in errors:
        click.echo(line, err=True)
    return summary


def _read_items(path: str) -> list[Any]:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            items = json.loads(text)
        else:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise click.ClickException(f"{path}: not a JSON array or JSON lines ({exc})") from None
    if not isinstance(items, list):
        raise click.ClickException(f"{path}: expected a JSON array of users")
    return items


@click.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def users_show(ref, as_json):
    """One user by id, e-mail or slug: account, limits, this month's counts."""
    show_user(ref, as_json)


@click.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--owner", default=None, help="Bind the users to this owner tag.")
@click.option("--batch", type=click.IntRange(1, 1000), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@with_appcontext
def users_import(path, owner, batch, as_json):
    """Create or update the users in PATH (JSON array or JSON lines, each with an id)."""
    summary = import_users(path, owner, batch)
    if as_json:
        echo_json(summary)
    else:
        click.echo(", ".join(f"{count} {status}" for status, count in summary.items()))
    if summary["error"]:
        raise SystemExit(1)


@click.command("sweep")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@with_appcontext
def worker_sweep(as_json):
    """Run the sweeps and retention jobs now, until nothing is left (with progress)."""
    from flask import current_app

    counts = run_sweeps(current_app.config)
    if as_json:
        echo_json(counts)
    else:
        click.echo(", ".join(f"{name}: {count}" for name, count in counts.items()))


def register_operator_cli(app: Flask, users_group: click.Group,
                          worker_group: click.Group) -> None:
    """Attach the operator groups and the extra ``users`` / ``worker`` commands."""
    users_group.add_command(users_show)
    users_group.add_command(users_import)
    worker_group.add_command(worker_sweep)
    app.cli.add_command(cues_group)
    app.cli.add_command(executions_group)


def run_sweeps(config) -> dict[str, int]:
    """Execution sweeps, message retention and audit pruning, each batch after batch until it
    finds nothing more; one progress step per batch.  Returns rows handled per job."""
    from app.auth.audit import prune_audit_at
    from app.db import utcnow
    from app.messaging.services import retention

    counts: dict[str, int] = {}
    with Progress("Sweeping") as progress:
        if not config["DISABLE_CUE_PRIMITIVE"]:
            from app.scheduling import sweeps

            counts["executions"] = sweeps.sweep_at(utcnow()) or 0
            progress.advance()
        counts["messages"] = 0
        while True:
            report = retention.run_retention(utcnow())
            counts["messages"] += report.total
            progress.advance()
            if not report.total:
                break
        counts["audit_records"] = 0
        while True:
            deleted = prune_audit_at(utcnow(), config["AUDIT_RETENTION_DAYS"])
            counts["audit_records"] += deleted
            progress.advance()
            if not deleted:
                break
    return counts
