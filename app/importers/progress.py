"""Progress of an import, per table: a progress bar on a terminal, periodic lines otherwise.

Progress goes to stderr, so stdout (the per-row notes and the summary) can be redirected to a
file while the operator watches the bar.
"""

from __future__ import annotations

import sys
import time
from typing import IO

import click


class Progress:
    """Reports rows read per table.

    ``interval``: seconds between two lines when not on a terminal.
    """

    def __init__(self, stream: IO[str] | None = None, tty: bool | None = None,
                 interval: float = 10.0):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self._bar = None
        self._table = ""
        self._total = 0
        self._done = 0
        self._started = 0.0
        self._last_line = 0.0

    def start(self, table: str, total: int) -> None:
        self.finish()
        self._table, self._total, self._done = table, total, 0
        self._started = self._last_line = time.monotonic()
        if self.tty:
            self._bar = click.progressbar(length=max(total, 1), label=f"{table:26}",
                                          file=self.stream, show_pos=True, show_percent=True,
                                          width=30)
            self._bar.__enter__()
        else:
            click.echo(f"{table}: {total} rows to read", file=self.stream)

    def advance(self, rows: int) -> None:
        self._done += rows
        if self._bar is not None:
            self._bar.update(rows)
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval:
            self._last_line = now
            share = f" ({self._done * 100 // self._total}%)" if self._total else ""
            click.echo(f"{self._table}: {self._done}/{self._total}{share}", file=self.stream)

    def finish(self) -> None:
        if not self._table:
            return
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        else:
            elapsed = time.monotonic() - self._started
            click.echo(f"{self._table}: {self._done} rows read in {elapsed:.1f}s",
                       file=self.stream)
        self._table = ""

    def clear_line(self) -> None:
        """Before printing a line while a bar is drawn on the same terminal."""
        if self._bar is not None:
            self.stream.write("\r\033[K")
            self.stream.flush()


class Silent(Progress):
    """No progress output (library callers, tests)."""

    def start(self, table: str, total: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass

    def finish(self) -> None:
        pass
