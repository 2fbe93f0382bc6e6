"""Do list endpoints keep their speed at scale?  (PostgreSQL, in-process.)

Seeds, with plain SQL, one user with ``--cues`` cues (100,000) and one cue of another user with
``--executions`` executions (1,000,000), plus a small user (20 cues, one cue with 20
executions) as the reference, then times ``GET /v1/cues?limit=20`` (by key, by delegation,
and the last page) and ``GET /v1/executions?cue_id=…&limit=20`` (first and last page) for
each: wall time per request (median of ``--requests``), the WSGI app called directly.  Prints
each large figure's multiple of its small one, and PostgreSQL's plan (``EXPLAIN ANALYZE``) of
every statement the large first-page requests ran, captured as the app sent them.

Run ``python bench/scale_bench.py`` (a throwaway PostgreSQL cluster; a few minutes to seed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.http_bench import RESULTS, machine  # noqa: E402
from bench.request_costs import SERVICE_TOKEN, caller, quiet_stderr  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402


def make_user(client, label: str) -> tuple[str, str]:
    """A user with a key (through the API): ``(user_id, key)``."""
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    user_id = str(uuid.uuid4())
    assert client.put(f"/v1/internal/users/{user_id}", headers=service, json={
        "email": f"{label}@bench.example", "slug": label, "rate_limit_per_minute": 0,
        "active_cue_limit": 10_000_000}).status_code == 200
    key = client.post("/v1/auth/key/regenerate", headers={
        **service, "X-On-Behalf-Of": user_id, "X-Confirm-Destructive": "true"}
    ).get_json()["api_key"]
    return user_id, key


def seed_cues(connection, user_id: str, count: int, prefix: str) -> str:
    """``count`` cues for ``user_id`` in one statement; returns the id of the first."""
    connection.execute(
        "INSERT INTO cues (id, user_id, name, status, transport, schedule_type, schedule_cron,"
        " schedule_timezone, callback_method, callback_headers, payload, retry_max_attempts,"
        " retry_backoff_minutes, run_count, fired_count, created_at, updated_at) "
        "SELECT %s || lpad(i::text, 10, '0'), %s, 'cue-' || i, 'active', 'worker', 'recurring',"
        " '0 0 1 1 *', 'UTC', 'POST', '{}', json_build_object('i', i), 3, '[1, 5, 15]', 0, 0,"
        " now() - i * interval '1 second', now() FROM generate_series(1, %s) AS i",
        (prefix, user_id, count))
    return f"{prefix}{1:010d}"


def seed_executions(connection, cue_id: str, count: int) -> None:
    connection.execute(
        "INSERT INTO executions (id, cue_id, scheduled_for, status, triggered_by, attempts,"
        " created_at, updated_at) "
        "SELECT gen_random_uuid(), %s, now() - i * interval '1 minute', 'success', 'scheduler',"
        " 1, now() - i * interval '1 minute', now() FROM generate_series(1, %s) AS i",
        (cue_id, count))


def wall_per_request(call, requests: int) -> float:
    for _ in range(3):
        call()
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1e3)
    return statistics.median(samples)


def explain_statements(app, call) -> list[str]:
    """``EXPLAIN ANALYZE`` of each statement one ``call()`` sends, with its parameters."""
    from sqlalchemy import event

    from app.extensions import db

    with app.app_context():
        engine = db.engine
    sent = []

    def record(_conn, _cursor, statement, parameters, _context, _many):
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    lines = []
    with engine.connect() as connection:
        for statement, parameters in sent:
            lines.append(statement.replace("\n", " "))
            lines += [row[0] for row in connection.exec_driver_sql(
                f"EXPLAIN ANALYZE {statement}", parameters)]
            lines.append("")
        connection.rollback()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cues", type=int, default=100_000)
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args(argv)

    cluster = PostgresCluster().start()
    rows, plans = [], {}
    try:
        db_url = cluster.create_database("cueline_scale")
        from flask_migrate import upgrade

        from app import create_app

        app = create_app({"ENV": "test", "DATABASE_URL": db_url, "RATELIMIT_ENABLED": False,
                          "LOG_LEVEL": "WARNING", "EXTERNAL_AUTH_BACKEND": True,
                          "INTERNAL_AUTH_TOKEN": SERVICE_TOKEN})
        with app.app_context():
            upgrade()
        client = app.test_client()
        raw_url = db_url.replace("postgresql+psycopg://", "postgresql://")
        with quiet_stderr():
            small_user, small_key = make_user(client, "small")
            big_user, big_key = make_user(client, "big")
            runner_user, runner_key = make_user(client, "runner")
        started = time.monotonic()
        with psycopg.connect(raw_url, autocommit=True) as connection:
            small_cue = seed_cues(connection, small_user, 20, "cue_s")
            seed_cues(connection, big_user, args.cues, "cue_b")
            big_cue = seed_cues(connection, runner_user, 1, "cue_r")
            seed_executions(connection, small_cue, 20)
            seed_executions(connection, big_cue, args.executions)
            connection.execute("VACUUM ANALYZE")  # what autovacuum does to a table at rest
        print(f"  seeded in {time.monotonic() - started:.0f} s", file=sys.stderr)

        def headers_for(key):
            if key.startswith("delegate:"):
                return {"Authorization": f"Bearer {SERVICE_TOKEN}",
                        "X-On-Behalf-Of": key.split(":", 1)[1]}
            return {"Authorization": f"Bearer {key}"}

        def measure(label, key, path, query, explain=False):
            call = caller(app, {"path": path, "query_string": query,
                                "headers": headers_for(key)})
            with quiet_stderr():
                ms = wall_per_request(call, args.requests)
                if explain:
                    plans[label] = explain_statements(app, call)
            rows.append({"request": label, "ms": ms})
            print(f"  {label}: {ms:.2f} ms", file=sys.stderr)
            return ms

        def last_page(n):
            return f"limit=20&offset={n - 20}"

        pairs = [
            ("GET /v1/cues?limit=20", "/v1/cues", lambda _n, _cue: "limit=20",
             (small_key, 20, small_cue), (big_key, args.cues, None), True),
            ("GET /v1/cues?limit=20 (delegated)", "/v1/cues", lambda _n, _cue: "limit=20",
             (f"delegate:{small_user}", 20, small_cue), (f"delegate:{big_user}", args.cues,
                                                          None), True),
            ("GET /v1/cues?limit=20&offset=…(last page)", "/v1/cues",
             lambda n, _cue: last_page(n),
             (small_key, 20, small_cue), (big_key, args.cues, None), False),
            ("GET /v1/executions?cue_id=…&limit=20", "/v1/executions",
             lambda _n, cue: f"cue_id={cue}&limit=20",
             (small_key, 20, small_cue), (runner_key, args.executions, big_cue), True),
            ("GET /v1/executions?cue_id=…&limit=20&offset=…(last page)", "/v1/executions",
             lambda n, cue: f"cue_id={cue}&{last_page(n)}",
             (small_key, 20, small_cue), (runner_key, args.executions, big_cue), False),
        ]
        table = ["| Request | small (20) ms | large ms | large ÷ small |", "|---|---:|---:|---:|"]
        for label, path, query, (key_s, n_s, cue_s), (key_l, n_l, cue_l), explain in pairs:
            small = measure(f"{label} small", key_s, path, query(n_s, cue_s))
            large = measure(f"{label} large ({n_l:,})", key_l, path, query(n_l, cue_l),
                            explain=explain)
            table.append(f"| {label} | {small:.2f} | {large:.2f} | {large / small:.1f}× |")
    finally:
        cluster.cleanup()

    header = (f"In-process wall time per request (median of {args.requests}), PostgreSQL 15 "
              "on loopback, rate limiting off.")
    print(header)
    print("\n".join(table))
    for name, plan in plans.items():
        print(f"\n{name}:\n" + "\n".join(plan))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"scale-{stamp}.json").write_text(json.dumps(
        {"when": stamp, "machine": machine(), "settings": vars(args), "results": rows,
         "plans": plans}, indent=2))
    (RESULTS / f"scale-{stamp}.md").write_text(
        f"# Scale check {stamp}\n\n{header}\n\n" + "\n".join(table) + "\n\n" + "\n\n".join(
            f"{name}:\n\n```\n" + "\n".join(plan) + "\n```" for name, plan in plans.items())
        + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
