"""Console benchmark: the failures list and one cue's execution timeline on 1,000,000 executions.

Starts a throwaway PostgreSQL cluster, migrates it, creates users and cues through the API, then
inserts ``--executions`` executions in SQL (one "hot" cue holds ``--hot-share`` of them, the rest
spread over the other cues; about 5 % failed or missed), runs ``ANALYZE`` and signs an operator
in.  Each page is then fetched ``--repeat`` times through the app (Flask's test client, so the
number is the app's own time: routing, queries, templates; no network) and the median and worst
are reported, for the first page and for a page deep in the table (reached by its cursor, which
is what keyset pagination makes cheap).  The SQL of each page's main query is captured and run
under ``EXPLAIN ANALYZE`` so the report shows which index served it.

Not a test: nothing is asserted.  Results go to ``bench/results/console-<stamp>.{json,md}``.
Run: ``make console-bench`` (or ``.venv/bin/python bench/console_bench.py --executions 100000``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import RESULTS, machine  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402

ADMIN = "ops@example.com"


def seed(app, client, executions: int, cues: int, hot_share: float) -> dict:
    """Users and cues through the API; executions in one SQL statement per cue group."""
    from sqlalchemy import text

    from app.extensions import db
    from tests.helpers import key_headers, register

    cue_ids = []
    users = max(1, cues // 20)
    for u in range(users):
        key, _ = register(client, f"user{u}@example.com")
        for c in range(cues // users):
            response = client.post("/v1/cues", headers=key_headers(key), json={
                "name": f"cue-{u}-{c}", "schedule": {"type": "recurring", "cron": "* * * * *"},
                "callback": {"url": "https://192.0.2.10/hook"}})
            assert response.status_code == 201, response.get_json()
            cue_ids.append(response.get_json()["id"])
    hot, rest = cue_ids[0], cue_ids[1:]
    hot_count = int(executions * hot_share)
    per_cue = (executions - hot_count) // max(1, len(rest))
    # One execution a minute going back from now; ~4 % failed, ~1 % missed, the rest success.
    insert = text("""
        INSERT INTO executions (id, cue_id, scheduled_for, status, triggered_by, attempts,
                                http_status, error_message, started_at, delivered_at,
                                created_at, updated_at)
        SELECT gen_random_uuid(), :cue, t, s,
               'scheduler', CASE WHEN s = 'missed' THEN 0 WHEN s = 'failed' THEN 3 ELSE 1 END,
               CASE s WHEN 'success' THEN 200 WHEN 'failed' THEN 503 END,
               CASE WHEN s = 'failed' THEN 'HTTP 503 from receiver after 3 attempts' END,
               CASE WHEN s <> 'missed' THEN t + interval '400 ms' END,
               CASE WHEN s = 'success' THEN t + interval '400 ms' END, t, t
        FROM (SELECT now() - g * interval '1 minute' AS t,
                     CASE WHEN g % 100 < 4 THEN 'failed' WHEN g % 100 = 4 THEN 'missed'
                          ELSE 'success' END AS s
              FROM generate_series(1, :n) AS g) AS rows
    """)
    started = time.perf_counter()
    with app.app_context():
        db.session.execute(insert, {"cue": hot, "n": hot_count})
        for i, cue in enumerate(rest):
            extra = executions - hot_count - per_cue * len(rest) if i == len(rest) - 1 else 0
            db.session.execute(insert, {"cue": cue, "n": per_cue + extra})
        db.session.commit()
        db.session.execute(text("ANALYZE"))
        db.session.commit()
        total = db.session.execute(text("SELECT count(*) FROM executions")).scalar_one()
        failures = db.session.execute(text(
            "SELECT count(*) FROM executions WHERE status IN ('failed', 'missed')")).scalar_one()
    return {"hot_cue": hot, "hot_executions": hot_count, "cues": len(cue_ids), "users": users,
            "executions": total, "failures": failures,
            "seed_seconds": round(time.perf_counter() - started, 1)}


class Statements:
    """Captures the SQL (with parameters) that touches ``executions`` during a request."""

    def __init__(self, engine):
        from sqlalchemy import event

        self.captured: list[tuple[str, object]] = []
        self.on = False
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        if self.on and "FROM executions" in statement and "LIMIT" in statement:
            self.captured.append((statement, parameters))


def explain(app, statement: str, parameters) -> list[str]:
    """``EXPLAIN ANALYZE`` of one captured statement (run through the raw DB-API cursor)."""
    from app.extensions import db

    with app.app_context():
        connection = db.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + statement, parameters)
            return [row[0] for row in cursor.fetchall()]
        finally:
            connection.close()


def time_page(client, path: str, repeat: int) -> dict:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return {"median_ms": round(statistics.median(timings), 1), "max_ms": round(max(timings), 1)}


def deep_cursor(client, path: str, pages: int) -> str:
    """The cursor ``pages`` pages in, following each page's "older" link."""
    import re

    link = re.compile(r'rel="next" href="([^"]+)"')
    current = path
    for _ in range(pages):
        body = client.get(current).get_data(as_text=True)
        match = link.search(body)
        if not match:
            break
        current = match.group(1).replace("&amp;", "&")
    return current


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--cues", type=int, default=100)
    parser.add_argument("--hot-share", type=float, default=0.4,
                        help="share of all executions that belong to the timed cue")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--deep-pages", type=int, default=1000,
                        help="how far in the deep page is (pages of the console's page size)")
    args = parser.parse_args(argv)

    from app import create_app
    from app.extensions import db
    from tests.console.conftest import sign_in
    from tests.conftest import _migrate

    with PostgresCluster() as cluster:
        url = cluster.create_database("console_bench")
        _migrate(url)
        app = create_app({"ENV": "test", "DATABASE_URL": url, "RATELIMIT_ENABLED": False,
                          "SESSION_SECRET": "bench-" + "x" * 40, "CONSOLE_ENABLED": True,
                          "CONSOLE_ADMINS": ADMIN, "DISABLE_QUOTA_ENFORCEMENT": True,
                          "LOG_LEVEL": "WARNING"})
        app.config["TESTING"] = True
        client = app.test_client()
        data = seed(app, client, args.executions, args.cues, args.hot_share)
        sign_in(client, app)
        with app.app_context():
            statements = Statements(db.engine)
        hot = data["hot_cue"]
        pages = {
            "failures, first page": "/console/failures",
            "failures, status=missed": "/console/failures?status=missed",
            "failures, deep page": deep_cursor(client, "/console/failures", args.deep_pages),
            "cue timeline, first page": f"/console/cues/{hot}",
            "cue timeline, deep page": deep_cursor(client, f"/console/cues/{hot}",
                                                   args.deep_pages),
            "overview (24 h charts)": "/console/",
            "users (usage this month)": "/console/users",
            "cues": "/console/cues",
        }
        rows = []
        for name, path in pages.items():
            time_page(client, path, 2)  # warm the caches
            statements.captured.clear()
            statements.on = True
            client.get(path)
            statements.on = False
            row = {"page": name, "path": path, **time_page(client, path, args.repeat)}
            if statements.captured:
                row["plan"] = explain(app, *statements.captured[0])
            rows.append(row)
            print(f"{name:28} {path[:60]:60} median {row['median_ms']:7.1f} ms   "
                  f"max {row['max_ms']:7.1f} ms")
        with app.app_context():
            db.session.remove()
            db.engine.dispose()

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    (RESULTS / f"console-{stamp}.json").write_text(json.dumps(
        {"when": stamp, "machine": info, "settings": vars(args), "data": data, "results": rows},
        indent=2))
    lines = [f"# Console pages on {data['executions']:,} executions ({stamp})", "",
             f"Machine: {info}. Data: {data}.", "",
             "| page | median ms | max ms | index used |", "| --- | ---: | ---: | --- |"]
    for row in rows:
        index = next((line.strip() for line in row.get("plan", []) if "Index" in line), "–")
        lines.append(f"| {row['page']} | {row['median_ms']} | {row['max_ms']} | `{index}` |")
    (RESULTS / f"console-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
