"""Import benchmark: ``flask import-cueapi`` over a cueapi-core database of N executions.

For each N (default 20,000 and 100,000) it builds a throwaway cueapi-core database (the test
fixture's schema, the test generator's users, cues, agents and messages, then N executions
spread over the cues and 10,000 more messages), migrates an empty Cueline database, and runs the
import as its own process three times: the import itself, an idempotent re-run (nothing to do)
and a ``--since`` catch-up over the last five minutes.  Reported per run: wall time, rows per
second and the peak resident memory of the importing process (``wait4``'s ``ru_maxrss``) — the
two sizes show whether memory stays flat as the tables grow.

    python bench/import_bench.py                       # Cueline on PostgreSQL
    python bench/import_bench.py --target sqlite       # Cueline on SQLite
    python bench/import_bench.py --executions 1000000  # the issue's million
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import RESULTS, machine  # noqa: E402
from tests.importers.upstream import conninfo, create_schema, populate  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402

SESSION_SECRET = "bench-session-secret-" + "s" * 32
EXTRA_MESSAGES = 10_000


def build_source(cluster: PostgresCluster, executions: int) -> tuple[str, dict]:
    """A cueapi-core database with ``executions`` executions; returns its URL and row counts."""
    import psycopg

    url = cluster.create_database(f"cueapi_bench_{uuid.uuid4().hex[:8]}")
    create_schema(url)
    populate(url, users=100, session_secret=SESSION_SECRET)
    with psycopg.connect(conninfo(url)) as conn:
        cues = conn.execute("SELECT count(*) FROM cues").fetchone()[0]
        have = conn.execute("SELECT count(*) FROM executions").fetchone()[0]
        per_cue = max(1, -(-(executions - have) // cues))
        # Whole history per cue, one minute apart (the (cue, scheduled_for) key stays unique),
        # with outcomes and evidence on a share of them, as a busy deployment has.
        conn.execute(
            "INSERT INTO executions (cue_id, scheduled_for, status, http_status, attempts, "
            "started_at, delivered_at, last_attempt_at, created_at, updated_at, "
            "outcome_success, outcome_result, outcome_metadata, outcome_recorded_at, "
            "outcome_state, triggered_by, evidence_summary, response_body) "
            "SELECT c.id, now() - interval '30 days' - g * interval '1 minute', "
            "CASE WHEN g %% 10 = 0 THEN 'failed' ELSE 'success' END, "
            "CASE WHEN g %% 10 = 0 THEN 500 ELSE 200 END, 1 + g %% 3, "
            "now() - g * interval '1 minute', now() - g * interval '1 minute', "
            "now() - g * interval '1 minute', now() - interval '30 days', "
            "now() - interval '30 days', "
            "CASE WHEN g %% 3 = 0 THEN g %% 10 <> 0 END, "
            "CASE WHEN g %% 3 = 0 THEN 'synced ' || g END, "
            "CASE WHEN g %% 3 = 0 THEN jsonb_build_object('rows', g) END, "
            "CASE WHEN g %% 3 = 0 THEN now() - g * interval '1 minute' END, "
            "CASE WHEN g %% 3 = 0 THEN CASE WHEN g %% 10 <> 0 THEN 'reported_success' "
            "ELSE 'reported_failure' END END, "
            "CASE WHEN g %% 50 = 0 THEN 'manual_fire' END, "
            "CASE WHEN g %% 6 = 0 THEN 'batch ' || g || ' done' END, '{\"ok\": true}' "
            "FROM cues c CROSS JOIN generate_series(1, %(n)s) g "
            "ORDER BY c.id, g LIMIT %(limit)s",
            {"n": per_cue, "limit": executions - have})
        conn.execute(
            "INSERT INTO messages (id, user_id, from_agent_id, to_agent_id, thread_id, body, "
            "preview, priority, delivery_state, created_at, delivered_at, expires_at) "
            "SELECT 'msg_' || substr(md5(g::text), 1, 12), a.user_id, a.id, b.id, "
            "'msg_' || substr(md5(g::text), 1, 12), 'bulk message ' || g, 'bulk message ' || g, "
            "3, 'delivered', now() - g * interval '1 second', now() - g * interval '1 second', "
            "now() + interval '20 days' "
            "FROM generate_series(1, %(n)s) g "
            "JOIN LATERAL (SELECT id, user_id FROM agents WHERE deleted_at IS NULL "
            "ORDER BY id OFFSET (g %% 200) LIMIT 1) a ON true "
            "JOIN LATERAL (SELECT id FROM agents WHERE user_id = a.user_id AND id <> a.id "
            "AND deleted_at IS NULL ORDER BY id LIMIT 1) b ON true",
            {"n": EXTRA_MESSAGES})
        conn.commit()
        counts = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in ("users", "cues", "executions", "agents", "messages")}
    return url, counts


def timed_import(env: dict, args: list[str]) -> dict:
    """Run ``flask import-cueapi`` as a child process: wall time, peak RSS, its JSON report."""
    flask = str(Path(sys.executable).parent / "flask")
    with tempfile.NamedTemporaryFile(suffix=".json") as report_file:
        started = time.perf_counter()
        process = subprocess.Popen([flask, "import-cueapi", *args, "--report",
                                    report_file.name], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        if code not in (0, 2):
            raise SystemExit(f"import-cueapi exited with {code}")
        report = json.loads(Path(report_file.name).read_text())
    rows = sum(t["read"] for t in report["tables"].values())
    return {"seconds": round(elapsed, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "rows_read": rows, "rows_per_second": round(rows / elapsed),
            "changes": report["changes"], "conflicts": report["conflicts"],
            "user_cpu_seconds": round(usage.ru_utime, 2),
            "executions": report["tables"]["executions"]}


def bench(cluster: PostgresCluster, executions: int, target: str, tmp: Path) -> dict:
    source_url, counts = build_source(cluster, executions)
    if target == "sqlite":
        target_url = f"sqlite:///{tmp / f'cueline-{executions}.db'}"
    else:
        target_url = cluster.create_database(f"cueline_import_{uuid.uuid4().hex[:8]}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "DATABASE_"))}
    env.update({"DATABASE_URL": target_url, "ENV": "production", "LOG_LEVEL": "WARNING",
                "FLASK_APP": "wsgi", "SESSION_SECRET": SESSION_SECRET,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                            os.environ.get("PYTHONPATH")]))})
    flask = str(Path(sys.executable).parent / "flask")
    subprocess.run([flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    first = timed_import(env, ["--from", source_url])
    again = timed_import(env, ["--from", source_url])
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    catch_up = timed_import(env, ["--from", source_url, "--since", since])
    return {"executions": executions, "target": target, "source_rows": counts,
            "import": first, "rerun": again, "catch_up": catch_up}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", default="20000,100000",
                        help="comma-separated execution counts (default: 20000,100000)")
    parser.add_argument("--target", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args()
    sizes = [int(n) for n in args.executions.split(",")]
    results = []
    with PostgresCluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            result = bench(cluster, size, args.target, Path(tmp))
            results.append(result)
            for run in ("import", "rerun", "catch_up"):
                r = result[run]
                print(f"{size:>8} executions → Cueline on {args.target}, {run:8}: "
                      f"{r['seconds']:7.2f} s, {r['rows_per_second']:>6} rows/s read, "
                      f"peak RSS {r['peak_rss_mib']:6.1f} MiB, {r['changes']} changes",
                      flush=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "results": results}
    (RESULTS / f"import-{args.target}-{stamp}.json").write_text(json.dumps(payload, indent=2))
    lines = [f"# Import benchmark ({args.target} target), {stamp}", "",
             f"Machine: {payload['machine']}", "",
             "| executions | run | seconds | rows read/s | peak RSS (MiB) | changes |",
             "|---:|---|---:|---:|---:|---:|"]
    for result in results:
        for run in ("import", "rerun", "catch_up"):
            r = result[run]
            lines.append(f"| {result['executions']} | {run} | {r['seconds']} | "
                         f"{r['rows_per_second']} | {r['peak_rss_mib']} | {r['changes']} |")
    (RESULTS / f"import-{args.target}-{stamp}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
