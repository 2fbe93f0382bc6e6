"""The proxy's own SQLite store: its users, and the per-user cue counter behind the plan cap.

Plain ``sqlite3`` keeps the example free of an ORM.  Every function opens its own short-lived
connection, so the store is safe to use from a threaded server.  The cap is enforced by one
conditional ``UPDATE`` (``… SET used = used + 1 WHERE used < cap``): SQLite runs it under its
write lock, so two concurrent creates can never both take the last slot.
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    plan          TEXT NOT NULL DEFAULT 'free',
    mirrored_plan TEXT,
    created_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cue_slots (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    used    INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0)
);
"""


@dataclass(frozen=True)
class User:
    id: str
    email: str
    password_hash: str
    plan: str
    mirrored_plan: str | None


class EmailTaken(Exception):
    """Sign-up with an address that already has an account."""


class Store:
    """Access to the proxy database at ``path``."""

    def __init__(self, path: str):
        self.path = path
        with closing(self._connect()) as conn:
            conn.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: each statement is its own transaction; busy writers wait up to 30 s.
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    # -- users -------------------------------------------------------------------------------
    def create_user(self, email: str, password_hash: str, plan: str = "free") -> User:
        user_id = str(uuid.uuid4())
        now = datetime.now(UTC).isoformat()
        with closing(self._connect()) as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO users (id, email, password_hash, plan, created_at) "
                             "VALUES (?, ?, ?, ?, ?)", (user_id, email, password_hash, plan, now))
                conn.execute("INSERT INTO cue_slots (user_id, used) VALUES (?, 0)", (user_id,))
                conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                raise EmailTaken(email) from None
        return User(user_id, email, password_hash, plan, None)

    def _user_where(self, clause: str, value: str) -> User | None:
        with closing(self._connect()) as conn:
            row = conn.execute(f"SELECT id, email, password_hash, plan, mirrored_plan "
                               f"FROM users WHERE {clause} = ?", (value,)).fetchone()
        return User(**dict(row)) if row else None

    def user_by_email(self, email: str) -> User | None:
        return self._user_where("email", email)

    def user_by_id(self, user_id: str) -> User | None:
        return self._user_where("id", user_id)

    def set_plan(self, user_id: str, plan: str) -> None:
        with closing(self._connect()) as conn:
            conn.execute("UPDATE users SET plan = ? WHERE id = ?", (plan, user_id))

    def mark_mirrored(self, user_id: str, plan: str) -> None:
        with closing(self._connect()) as conn:
            conn.execute("UPDATE users SET mirrored_plan = ? WHERE id = ?", (plan, user_id))

    # -- the cue cap -------------------------------------------------------------------------
    def reserve_cue_slot(self, user_id: str, cap: int) -> bool:
        """Take one slot if fewer than ``cap`` are used; atomic, so never over the cap."""
        with closing(self._connect()) as conn:
            cursor = conn.execute(
                "UPDATE cue_slots SET used = used + 1 WHERE user_id = ? AND used < ?",
                (user_id, cap))
            return cursor.rowcount == 1

    def release_cue_slot(self, user_id: str) -> None:
        """Give a slot back (the create failed, or a cue was deleted)."""
        with closing(self._connect()) as conn:
            conn.execute("UPDATE cue_slots SET used = used - 1 WHERE user_id = ? AND used > 0",
                         (user_id,))

    def cue_slots_used(self, user_id: str) -> int:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT used FROM cue_slots WHERE user_id = ?",
                               (user_id,)).fetchone()
        return row["used"] if row else 0
