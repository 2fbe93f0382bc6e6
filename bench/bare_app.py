"""The ceilings: bare Flask routes served exactly like Cueline.

``/bare`` returns a small JSON dict (the stack's ceiling).  ``/bare-db`` does the least an
authenticated endpoint must: one indexed lookup in PostgreSQL over a persistent psycopg
connection, no ORM — the ceiling of any endpoint that reads the database once per request.
"""

import os

import psycopg
from flask import Flask

app = Flask(__name__)
_connection = None


def _db():
    global _connection
    if _connection is None or _connection.closed:
        url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        _connection = psycopg.connect(url, autocommit=True)
    return _connection


@app.get("/bare")
def bare():
    return {"status": "ok", "service": "bare", "n": 1}


@app.get("/bare-db")
def bare_db():
    row = _db().execute("SELECT slug, plan FROM users WHERE api_key_hash = %s",
                        ("0" * 64,)).fetchone()
    return {"status": "ok", "found": row is not None}


@app.get("/health")
def health():
    return {"status": "healthy"}
