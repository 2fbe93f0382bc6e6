"""``flask import-cueapi``: bring a cueapi-core database over, as often as needed.

Per-row notes (conflicts, skipped rows) and the summary go to stdout, progress to stderr.
Exit status: 0 when everything was imported (or already was), 2 when some rows were reported
as conflicts, 1 when the import could not run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click
from flask.cli import with_appcontext

from app.importers.progress import Progress


def _timestamp(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 timestamp "
                                 "(e.g. 2026-11-23T09:00:00Z)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@click.command("import-cueapi")
@click.option("--from", "source_url", required=True, metavar="URL",
              help="The cueapi-core PostgreSQL database, e.g. "
                   "postgresql://user:password@host:5432/cueapi (read only, never written).")
@click.option("--dry-run", is_flag=True,
              help="Print what would be imported (counts per table, conflicts); write nothing.")
@click.option("--since", "since", default=None, metavar="TIMESTAMP",
              help="Only rows changed at or after this time (ISO 8601; naive means UTC): "
                   "the catch-up run of a cut-over.")
@click.option("--batch-size", type=click.IntRange(10, 10_000), default=1000,
              show_default=True, help="Rows read and written per batch.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, writable=True),
              default=None, help="Also write the report as JSON to this file.")
@with_appcontext
def import_cueapi(source_url, dry_run, since, batch_size, report_path):
    """One-way import of a cueapi-core database (users and their keys, cues, executions,
    workers, agents, messages, monthly counters); safe to run again."""
    from app.importers.cueapi.runner import ImportFailed, run_import

    progress = Progress()

    def echo_note(note):
        progress.clear_line()
        click.echo(note.line())

    try:
        report = run_import(source_url, since=_timestamp(since), dry_run=dry_run,
                            batch=batch_size, progress=progress, note_sink=echo_note)
    except ImportFailed as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        progress.finish()
    click.echo(report.render())
    if report_path:
        with open(report_path, "w", encoding="utf-8") as handle:
            json.dump(report.to_dict(), handle, indent=2, default=str)
    if report.conflicts:
        raise SystemExit(2)
