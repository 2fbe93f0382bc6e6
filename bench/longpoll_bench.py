"""How many concurrent long polls (``GET /v1/agents/{ref}/events?wait=long``) a deployment
serves, and what they cost the other requests.

For each gunicorn configuration (``--configs``, ``class:workers:threads``) on a throwaway
PostgreSQL cluster on loopback, the benchmark:

1. measures plain requests (``GET /v1/auth/me`` from ``--clients`` threads) for a few seconds;
2. opens ``--polls`` long polls at once, one agent each, and counts how many wait and how many
   are answered at once (no free waiter slot: a sync worker, or all but one thread busy);
3. measures plain requests again while those polls wait, and counts the PostgreSQL backends
   in use (waiting polls hold no connection);
4. sends one message to every waiting agent and measures how long each poll takes to return
   with its event (the NOTIFY wake-up).

Run ``python bench/longpoll_bench.py`` (defaults: sync and gthread with 16, 64 and 256
threads, 2 workers, 300 polls).  Results land in ``bench/results/``.  All traffic is loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import RESULTS, Gunicorn, machine  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402


def _rss_mib(root: int) -> float:
    """Resident memory of ``root`` and its children (the gunicorn master and workers)."""
    total = 0
    pids = [root] + [int(p) for p in Path(f"/proc/{root}/task/{root}/children").read_text()
                     .split()]
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def plain_load(url: str, headers: dict, clients: int, seconds: float) -> dict:
    """Requests/s and latency of ``GET /v1/auth/me`` from ``clients`` threads."""
    latencies: list[float] = []
    errors = [0]
    end = time.monotonic() + seconds

    def run():
        with httpx.Client(base_url=url, headers=headers, timeout=30, trust_env=False) as http:
            while time.monotonic() < end:
                started = time.perf_counter()
                r = http.get("/v1/auth/me")
                latencies.append(time.perf_counter() - started)
                if r.status_code != 200:
                    errors[0] += 1

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    return {"rps": round(len(latencies) / seconds), "p50_ms": round(
        statistics.median(latencies) * 1000, 1), "p99_ms": round(
        latencies[int(len(latencies) * 0.99) - 1] * 1000, 1), "errors": errors[0]}


def pg_backends(cluster: PostgresCluster, dbname: str) -> dict:
    """Connections of the app: open (pooled or listening) and in use (a query or a
    transaction in progress; an idle pooled connection and a LISTEN one are not)."""
    import psycopg

    url = cluster.url("postgres").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT state, count(*) FROM pg_stat_activity WHERE datname = %s "
                            "AND pid <> pg_backend_pid() GROUP BY state", (dbname,)).fetchall()
    states = dict(rows)
    return {"open": sum(states.values()),
            "in_use": sum(n for state, n in states.items() if state != "idle")}


def run_config(cluster, db_url, dbname, env, config, polls, clients) -> dict:
    worker_class, workers, threads = config
    server = Gunicorn("wsgi:app", env, workers, worker_class, threads)
    try:
        http = httpx.Client(base_url=server.url, timeout=60, trust_env=False)
        key = http.post("/v1/auth/register",
                        json={"email": f"lp-{uuid.uuid4().hex[:8]}@example.com"}).json()[
            "api_key"]
        headers = {"Authorization": f"Bearer {key}"}
        sender = http.post("/v1/agents", headers=headers, json={"display_name": "S"}).json()
        with ThreadPoolExecutor(8) as pool:
            agents = list(pool.map(lambda i: http.post(
                "/v1/agents", headers=headers, json={"display_name": f"A{i}"}).json()["id"],
                range(polls)))
        before = plain_load(server.url, headers, clients, 3)
        results: dict[str, tuple[float, int]] = {}
        opened = time.monotonic()

        def poll(agent_id):
            with httpx.Client(base_url=server.url, headers=headers, timeout=60,
                              trust_env=False) as client:
                r = client.get(f"/v1/agents/{agent_id}/events", params={"wait": "long"})
                results[agent_id] = (time.monotonic(), len(r.json().get("events", [])))

        pollers = [threading.Thread(target=poll, args=(a,), daemon=True) for a in agents]
        for t in pollers:
            t.start()
        # Let every poll reach the server: wait until no more return at once.
        settled, seen = time.monotonic() + 30, -1
        while time.monotonic() < settled and len(results) != seen:
            seen = len(results)
            time.sleep(1.5)
        early = len(results)
        backends = pg_backends(cluster, dbname)
        rss = _rss_mib(server.process.pid)
        during = plain_load(server.url, headers, clients, 3)
        waiting = [a for a in agents if a not in results]
        sent_at: dict[str, float] = {}

        def send(agent_id):
            with httpx.Client(base_url=server.url, timeout=60, trust_env=False,
                              headers={**headers, "X-Cueapi-From-Agent": sender["id"]}) as c:
                sent_at[agent_id] = time.monotonic()
                c.post("/v1/messages", json={"to": agent_id, "body": "wake"})

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(send, waiting))
        for t in pollers:
            t.join(40)
        woken = [results[a][0] - sent_at[a] for a in waiting
                 if a in results and results[a][1] == 1]
        woken.sort()
        return {
            "config": f"{workers} x {worker_class}" + (f", {threads} threads"
                                                      if worker_class == "gthread" else ""),
            "polls": polls, "answered_at_once": early, "waited": len(waiting),
            "woken_with_event": len(woken),
            "wake_p50_ms": round(statistics.median(woken) * 1000, 1) if woken else None,
            "wake_p99_ms": round(woken[max(int(len(woken) * 0.99) - 1, 0)] * 1000, 1)
            if woken else None,
            "pg_connections_while_waiting": backends, "rss_mib_while_waiting": round(rss),
            "plain_before": before, "plain_during": during,
            "seconds": round(time.monotonic() - opened, 1),
        }
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="sync:2:1,gthread:2:16,gthread:2:64,gthread:2:256")
    parser.add_argument("--polls", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    configs = [(c.split(":")[0], int(c.split(":")[1]), int(c.split(":")[2]))
               for c in args.configs.split(",")]
    cluster = PostgresCluster().start()
    rows = []
    try:
        for i, config in enumerate(configs):
            dbname = f"longpoll_{i}"
            db_url = cluster.create_database(dbname)
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("FLASK_", "DATABASE_"))}
            env.update({"DATABASE_URL": db_url, "ENV": "production", "LOG_LEVEL": "WARNING",
                        "DISABLE_QUOTA_ENFORCEMENT": "true", "RATELIMIT_ENABLED": "false",
                        "EVENTS_LONG_POLL_MAX_WAITERS": "100000", "FLASK_APP": "wsgi"})
            import subprocess

            subprocess.run([str(Path(sys.executable).parent / "flask"), "db", "upgrade"],
                           cwd=ROOT, env=env, check=True, capture_output=True)
            row = run_config(cluster, db_url, dbname, env, config, args.polls, args.clients)
            rows.append(row)
            print(json.dumps(row))
    finally:
        cluster.cleanup()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"longpoll-{stamp}.json"
    out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
