"""Bulk sync benchmark: 10,000 users through ``PUT /v1/internal/users`` in batches.

Starts a throwaway PostgreSQL cluster and Cueline under gunicorn (as ``http_bench``), then
syncs N new users in batches of up to 1,000 (the endpoint's maximum), then syncs the same users
again unchanged, and again with one field changed.  Reports wall time per pass.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import RESULTS, SERVICE_TOKEN, Gunicorn, machine  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402


def sync_pass(url: str, users: list[dict], batch: int) -> tuple[float, dict]:
    """Send every user in batches; return (seconds, summed summary)."""
    totals: dict[str, int] = {}
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=120,
                      headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}) as http:
        for i in range(0, len(users), batch):
            response = http.put("/v1/internal/users", json={"users": users[i:i + batch]})
            response.raise_for_status()
            for key, value in response.json()["summary"].items():
                totals[key] = totals.get(key, 0) + value
    return time.perf_counter() - started, totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    # One sync worker per core, as deployed (the batches are sent one after another).
    parser.add_argument("--workers", type=int,
                        default=int(os.environ.get("BENCH_WORKERS", os.cpu_count() or 2)))
    args = parser.parse_args(argv)
    users = [{"id": str(uuid.uuid4()), "email": f"user{i}@sync.example", "slug": f"sync-{i}",
              "plan": "free"} for i in range(args.users)]
    with PostgresCluster() as cluster:
        db_url = cluster.create_database("cueline_sync")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "DATABASE_"))}
        env.update({"DATABASE_URL": db_url, "ENV": "production", "LOG_LEVEL": "WARNING",
                    "EXTERNAL_AUTH_BACKEND": "true", "INTERNAL_AUTH_TOKEN": SERVICE_TOKEN,
                    "FLASK_APP": "wsgi"})
        subprocess.run([str(Path(sys.executable).parent / "flask"), "db", "upgrade"], cwd=ROOT,
                       env=env, check=True, capture_output=True)
        server = Gunicorn("wsgi:app", env, args.workers, "sync", 1)
        try:
            rows = []
            for label, payload in (
                    ("create", users),
                    ("unchanged", users),
                    ("update (plan changed)", [{**u, "plan": "pro"} for u in users])):
                seconds, summary = sync_pass(server.url, payload, args.batch)
                rows.append({"pass": label, "seconds": seconds, "summary": summary,
                             "users_per_second": args.users / seconds})
                print(f"  {label}: {seconds:.2f} s {summary}", file=sys.stderr)
        finally:
            server.stop()
    header = (f"Bulk sync: {args.users} users through PUT /v1/internal/users in batches of "
              f"{args.batch}; gunicorn {args.workers} × sync; PostgreSQL 15 on loopback.")
    table = ["| pass | seconds | users/s | summary |", "|---|---:|---:|---|"]
    for row in rows:
        table.append(f"| {row['pass']} | {row['seconds']:.2f} | {row['users_per_second']:.0f} | "
                     f"{row['summary']} |")
    print(header)
    print("\n".join(table))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    info = machine()
    (RESULTS / f"bulk-sync-{stamp}.json").write_text(json.dumps(
        {"when": stamp, "machine": info, "settings": vars(args), "results": rows}, indent=2))
    (RESULTS / f"bulk-sync-{stamp}.md").write_text(
        f"# Bulk sync benchmark {stamp}\n\nMachine: {info}\n\n{header}\n\n" + "\n".join(table)
        + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
