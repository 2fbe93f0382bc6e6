"""What an import did: counts per table, notes per row, and what did not carry over.

Every row that is not written as asked gets a :class:`RowNote` (a conflict, a dependent skip,
a row kept as Cueline has it); notes are handed to a sink as they happen (the CLI prints them
at once) and the first :data:`KEPT_NOTES` are kept in the report, so a million skipped rows do
not make the process grow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

#: Notes kept in memory (all of them are passed to the sink).
KEPT_NOTES = 10_000

CONFLICT = "conflict"  # the row could not be written as it is upstream; nothing of it was
SKIPPED = "skipped"    # the row depends on a row that was not written
KEPT = "kept"          # Cueline's copy was kept (deleted or changed there since the import)
WARNING = "warning"    # written, but something about it needs a look


@dataclass(frozen=True)
class RowNote:
    """One row the import did not write as asked, and why."""

    table: str
    key: str
    kind: str
    code: str
    message: str

    def line(self) -> str:
        return f"{self.kind:8} {self.table} {self.key}: {self.code} — {self.message}"


@dataclass
class TableStats:
    """Counts of one target table."""

    name: str
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    conflicts: int = 0
    skipped: int = 0
    kept: int = 0

    @property
    def changes(self) -> int:
        return self.inserted + self.updated + self.deleted


@dataclass
class Report:
    """The outcome of one import run (or of a dry run: what it would do)."""

    source: str
    dry_run: bool
    since: datetime | None = None
    revision: str | None = None
    snapshot_at: datetime | None = None
    tables: dict[str, TableStats] = field(default_factory=dict)
    notes: list[RowNote] = field(default_factory=list)
    notes_dropped: int = 0
    note_codes: Counter = field(default_factory=Counter)
    #: Source tables that are not imported, with their row counts.
    not_carried_tables: dict[str, int] = field(default_factory=dict)
    #: ``table.column`` of source columns Cueline does not model → rows holding a value.
    unmodeled: dict[str, int] = field(default_factory=dict)
    #: Source columns the reference schema has but this source lacks (read as empty).
    missing_columns: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    sink: Callable[[RowNote], None] | None = field(default=None, repr=False, compare=False)

    def table(self, name: str) -> TableStats:
        if name not in self.tables:
            self.tables[name] = TableStats(name)
        return self.tables[name]

    def note(self, note: RowNote) -> None:
        """Record ``note`` (counted in its table) and pass it to the sink."""
        stats = self.table(note.table)
        if note.kind == CONFLICT:
            stats.conflicts += 1
        elif note.kind == SKIPPED:
            stats.skipped += 1
        elif note.kind == KEPT:
            stats.kept += 1
        self.note_codes[(note.table, note.code)] += 1
        if len(self.notes) < KEPT_NOTES:
            self.notes.append(note)
        else:
            self.notes_dropped += 1
        if self.sink is not None:
            self.sink(note)

    def count_unmodeled(self, column: str, rows: int = 1) -> None:
        self.unmodeled[column] = self.unmodeled.get(column, 0) + rows

    @property
    def changes(self) -> int:
        """Rows inserted, updated or deleted (0 on a run that found nothing to do)."""
        return sum(stats.changes for stats in self.tables.values())

    @property
    def conflicts(self) -> int:
        return sum(stats.conflicts for stats in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--report FILE``)."""
        return {
            "source": self.source, "dry_run": self.dry_run,
            "since": self.since.isoformat() if self.since else None,
            "revision": self.revision,
            "snapshot_at": self.snapshot_at.isoformat() if self.snapshot_at else None,
            "changes": self.changes, "conflicts": self.conflicts,
            "tables": {name: asdict(stats) for name, stats in self.tables.items()},
            "notes": [asdict(note) for note in self.notes],
            "notes_dropped": self.notes_dropped,
            "not_carried_tables": self.not_carried_tables,
            "unmodeled_columns": self.unmodeled,
            "missing_columns": self.missing_columns,
            "info": self.info,
        }

    def render(self) -> str:
        """The summary printed at the end of a run."""
        lines = [f"Source: {self.source}"
                 + (f" (schema revision {self.revision})" if self.revision else "")]
        if self.snapshot_at:
            lines.append(f"Snapshot of the source taken at {self.snapshot_at.isoformat()}")
        if self.since:
            lines.append(f"Rows changed since {self.since.isoformat()}")
        lines.append("DRY RUN: nothing was written; counts say what an import would do."
                     if self.dry_run else "Import finished.")
        headers = ("table", "read", "insert", "update", "unchanged", "delete", "conflict",
                   "skipped", "kept")
        rows = [(s.name, s.read, s.inserted, s.updated, s.unchanged, s.deleted, s.conflicts,
                 s.skipped, s.kept) for s in self.tables.values()]
        widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
        lines.append("")
        for row in [headers, *rows]:
            lines.append("  " + "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)
                                          for i, (v, w) in enumerate(zip(row, widths,
                                                                         strict=True))))
        lines.append("")
        if self.note_codes:
            lines.append("Rows not written as they are upstream (each is listed above):")
            for (table, code), count in sorted(self.note_codes.items()):
                lines.append(f"  {table}: {code} × {count}")
            if self.notes_dropped:
                lines.append(f"  ({self.notes_dropped} notes were printed but not kept in "
                             "the report)")
        else:
            lines.append("No conflicts.")
        if self.not_carried_tables:
            lines.append("Source tables that do not carry over (rows):")
            lines.append("  " + ", ".join(f"{name} ({count})" for name, count in
                                          sorted(self.not_carried_tables.items())))
        if self.unmodeled:
            lines.append("Source columns Cueline does not model (rows holding a value; "
                         "not imported):")
            for column, count in sorted(self.unmodeled.items()):
                lines.append(f"  {column}: {count}")
        if self.missing_columns:
            lines.append("Columns of the reference schema this source lacks (read as empty): "
                         + ", ".join(self.missing_columns))
        lines.extend(self.info)
        verb = "would change" if self.dry_run else "changed"
        lines.append(f"Total: {verb} {self.changes} rows, {self.conflicts} conflicts.")
        return "\n".join(lines)
