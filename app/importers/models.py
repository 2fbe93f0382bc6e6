"""The import ledger: what an import wrote, so that running it again is safe.

One row per imported row: the target table, the row's key and a digest of the values the
import wrote.  Comparing the digest with the source row and with the row as it is now in
Cueline tells the three cases apart — unchanged upstream (nothing to do), changed upstream
only (update), changed on both sides (a conflict, never an overwrite) — and a row deleted in
Cueline after it was imported is not brought back.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import UTCDateTime, utcnow
from app.extensions import db


class ImportedRow(db.Model):
    """One row written by an import from ``source`` (e.g. ``cueapi``)."""

    __tablename__ = "import_ledger"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    table_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    row_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    # SHA-256 (hex) of the imported values, canonically serialised.
    digest: Mapped[str] = mapped_column(String(64))
    # For counter tables: the count as imported, so both sides' increments can be added.
    counter: Mapped[int | None] = mapped_column(Integer, nullable=True)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
