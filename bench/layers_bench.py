"""What each layer of the stack costs per request, measured in-process (no HTTP server).

Each route below answers one request with one more layer than the one before: a bare Flask
JSON route; the same with one indexed lookup over a raw psycopg connection; through a
SQLAlchemy Core connection; through the Flask-SQLAlchemy session (Core statement; the same on
the session's connection straight on psycopg, as ``app.db.fetch_one_direct`` runs Cueline's hot
writes; then ORM entity); in a transaction instead of autocommit; and a bare route counted by
Cueline's rate limiter.
The WSGI app is called directly with a prebuilt environ, so the numbers are the CPU time of
Flask and the libraries alone (median of five rounds), without gunicorn, sockets or the load
generator; the layers take turns in blocks of a few calls, so a drift in the machine's speed
reaches them all alike.  ``bench/http_bench.py`` measures the same stack served over HTTP.

A second table prices one PostgreSQL round trip on its own (a prepared ``SELECT 1`` over raw
psycopg): the client's CPU and the wall time, with the client and its backend pinned to the
same core and to different cores.  On a virtual machine the difference is the cost of waking a
process on another core, which every request with a query pays in a busy deployment.

Run ``python bench/layers_bench.py`` (a throwaway PostgreSQL cluster on loopback); results land
in ``bench/results/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from flask import Flask, g  # noqa: E402
from flask_sqlalchemy import SQLAlchemy  # noqa: E402
from sqlalchemy import Integer, String, Uuid, bindparam, create_engine, select  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from app.db import fetch_one_direct  # noqa: E402
from app.ratelimit import Bucket, RequestLimiter  # noqa: E402
from bench.http_bench import RESULTS, machine  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402

KEY_HASH = hashlib.sha256(b"layers-bench-key").hexdigest()
ROUND_TRIP_QUERIES = 5000


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    slug: Mapped[str] = mapped_column(String)
    plan: Mapped[str] = mapped_column(String)
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer)


def add_limit_headers_from(window):
    """An ``after_request`` writing the ``X-RateLimit-*`` headers of ``window()``."""

    def add(response):
        current = window()
        response.headers["X-RateLimit-Limit"] = str(current.per_minute)
        response.headers["X-RateLimit-Remaining"] = str(current.remaining)
        response.headers["X-RateLimit-Reset"] = str(current.reset_at)
        return response

    return add


def build_apps(url: str) -> list[tuple[str, Flask, str]]:
    """(label, app, path) for every layer, against the database at ``url``."""
    orm = SQLAlchemy(model_class=Base)
    app = Flask("layers")
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    orm.init_app(app)
    raw = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    engine = create_engine(url)
    autocommit_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    table = User.__table__
    core = select(table.c.id, table.c.slug).where(table.c.api_key_hash == bindparam("h"))
    entity = select(User).where(User.api_key_hash == bindparam("h"))

    @app.get("/bare")
    def bare():
        return {"id": "x", "slug": "bare"}

    @app.get("/raw")
    def raw_psycopg():
        row = raw.execute("SELECT id, slug FROM users WHERE api_key_hash = %s",
                          (KEY_HASH,)).fetchone()
        return {"id": str(row[0]), "slug": row[1]}

    @app.get("/core")
    def core_connection():
        with autocommit_engine.connect() as connection:
            row = connection.execute(core, {"h": KEY_HASH}).one()
        return {"id": str(row.id), "slug": row.slug}

    @app.get("/session-core")
    def session_core():
        orm.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        row = orm.session.execute(core, {"h": KEY_HASH}).one()
        return {"id": str(row.id), "slug": row.slug}

    @app.get("/session-direct")
    def session_direct():
        orm.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        row = fetch_one_direct(core, {"h": KEY_HASH}, session=orm.session)
        return {"id": str(row.id), "slug": row.slug}

    @app.get("/session-entity")
    def session_entity():
        orm.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        user = orm.session.execute(entity, {"h": KEY_HASH}).scalar_one()
        return {"id": str(user.id), "slug": user.slug}

    @app.get("/session-entity-transaction")
    def session_entity_transaction():
        user = orm.session.execute(entity, {"h": KEY_HASH}).scalar_one()
        return {"id": str(user.id), "slug": user.slug}

    limited = Flask("layers-limited")

    @limited.get("/bare")
    def bare_limited():
        return {"id": "x", "slug": "bare"}

    limited.config.update(RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI="memory://")
    limiter = RequestLimiter(limited)
    bucket = [Bucket("user:x", 1_000_000_000, "user")]

    @limited.before_request
    def _count():
        g.window = limiter.acquire(bucket)[1][0]

    limited.after_request(add_limit_headers_from(lambda: g.window))
    return [
        ("bare Flask JSON route", app, "/bare"),
        ("+ one raw psycopg query (autocommit)", app, "/raw"),
        ("+ the query through a SQLAlchemy Core connection", app, "/core"),
        ("+ the query through the Flask-SQLAlchemy session", app, "/session-core"),
        ("the session's query straight on psycopg instead (app.db.fetch_one_direct)", app,
         "/session-direct"),
        ("+ the row as an ORM entity", app, "/session-entity"),
        ("+ in a transaction (BEGIN … ROLLBACK)", app, "/session-entity-transaction"),
        ("bare Flask JSON route + Cueline's rate limiter (memory://)", limited, "/bare"),
    ]


#: Calls of each layer per block: the layers take turns in blocks this short.
BLOCK = 5


def caller(app: Flask, path: str):
    """A function answering one request to ``app`` at ``path`` (asserting a 200)."""
    environ = EnvironBuilder(path=path).get_environ()

    def start_response(status, _headers, _exc_info=None):
        assert status.startswith("200"), status

    def call():
        body = app.wsgi_app(dict(environ), start_response)
        b"".join(body)
        if hasattr(body, "close"):
            body.close()

    return call


def cpu_per_request(calls: list, requests: int, rounds: int) -> list[float]:
    """Median CPU µs per request of each of ``calls`` over ``rounds`` rounds of ``requests``.

    The layers take turns in blocks of :data:`BLOCK` calls, each timed on this thread's CPU
    clock: a core of this shared machine changes speed by up to 2× from one second to the
    next, and layers measured one after another would compare those seconds, not the layers.
    """
    for call in calls:
        for _ in range(requests // 10):
            call()
    blocks = max(requests // BLOCK, 1)
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        spent = [0.0] * len(calls)
        for _ in range(blocks):
            for index, call in enumerate(calls):
                started = time.thread_time()
                for _ in range(BLOCK):
                    call()
                spent[index] += time.thread_time() - started
        for index, total in enumerate(spent):
            samples[index].append(total / (blocks * BLOCK) * 1e6)
    return [statistics.median(each) for each in samples]


def round_trip_costs(url: str, queries: int = ROUND_TRIP_QUERIES) -> list[dict]:
    """Client CPU and wall µs of one prepared ``SELECT 1``, backend on the same core as the
    client and on another one (empty when this process may not pin the backend)."""
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return []
    own = os.sched_getaffinity(0)
    results = []
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as connection:
        backend = connection.info.backend_pid
        cursor = connection.cursor()

        def run() -> tuple[float, float]:
            for _ in range(queries // 10):
                cursor.execute("SELECT 1", prepare=True).fetchall()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(queries):
                cursor.execute("SELECT 1", prepare=True).fetchall()
            return ((time.process_time() - cpu) / queries * 1e6,
                    (time.perf_counter() - wall) / queries * 1e6)

        try:
            os.sched_setaffinity(0, {0})
            for label, core in (("same core", 0), ("different cores", 1)):
                os.sched_setaffinity(backend, {core})
                cpu, wall = run()
                results.append({"placement": label, "client_cpu_us": cpu, "wall_us": wall})
        except PermissionError:
            return []
        finally:
            os.sched_setaffinity(0, own)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    cluster = PostgresCluster().start()
    try:
        url = cluster.create_database("cueline_layers")
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"),
                             autocommit=True) as connection:
            connection.execute("CREATE TABLE users (id uuid PRIMARY KEY, slug text, plan text, "
                               "api_key_hash varchar(64) UNIQUE, rate_limit_per_minute int)")
            connection.execute("INSERT INTO users VALUES (%s, 'layers', 'free', %s, 0)",
                               (uuid.uuid4(), KEY_HASH))
        layers = build_apps(url)
        costs = cpu_per_request([caller(app, path) for _label, app, path in layers],
                                args.requests, args.rounds)
        results = []
        for (label, _app, _path), micros in zip(layers, costs, strict=True):
            results.append({"layer": label, "cpu_us_per_request": micros})
            print(f"  {label}: {micros:.0f} µs", file=sys.stderr)
        round_trips = round_trip_costs(url)
    finally:
        cluster.cleanup()

    header = (f"In-process CPU per request (median of {args.rounds} rounds of {args.requests}), "
              "WSGI app called directly; PostgreSQL 15 on loopback.")
    table = ["| Layer | CPU µs/request |", "|---|---:|"]
    table += [f"| {row['layer']} | {row['cpu_us_per_request']:.0f} |" for row in results]
    if round_trips:
        table += ["", "One PostgreSQL round trip (prepared `SELECT 1`, raw psycopg, "
                  f"{ROUND_TRIP_QUERIES} queries), client and backend pinned:", "",
                  "| Placement | client CPU µs | wall µs |", "|---|---:|---:|"]
        table += [f"| {row['placement']} | {row['client_cpu_us']:.0f} | {row['wall_us']:.0f} |"
                  for row in round_trips]
    print(header)
    print("\n".join(table))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    info = machine()
    (RESULTS / f"layers-{stamp}.json").write_text(json.dumps(
        {"when": stamp, "machine": info, "settings": vars(args), "results": results,
         "round_trips": round_trips}, indent=2))
    (RESULTS / f"layers-{stamp}.md").write_text(
        f"# Layer costs {stamp}\n\nMachine: {info}\n\n{header}\n\n" + "\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
