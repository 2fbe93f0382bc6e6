"""Scheduler benchmark: N cues due at one instant, fired and delivered by 1 and by 3 workers.

For each worker count it starts a throwaway PostgreSQL database, inserts N webhook cues whose
``next_run`` is the same instant a few seconds ahead, starts the worker processes
(``flask worker run``) before that instant, and records when each delivery reaches a receiver
on 127.0.0.1.  Reported: lateness of execution creation (scheduled → row visible) and of
delivery (scheduled → received), p50 / p99 / max, and the time until all N were delivered.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import RESULTS, machine  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402


class Receiver(http.server.BaseHTTPRequestHandler):
    """Records the arrival time of every delivery, keyed by execution id.

    HTTP/1.1 with keep-alive, like any production receiver: a worker reuses its connections
    instead of opening one (and a receiver thread) per delivery.  Each request is still read
    whole and timestamped on arrival.
    """

    protocol_version = "HTTP/1.1"
    #: Headers and body go out as separate writes: without TCP_NODELAY, Nagle's algorithm holds
    #: the body until the client's delayed ACK (~40 ms per request on a kept-alive connection).
    disable_nagle_algorithm = True
    arrivals: dict[str, float] = {}
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        now = time.time()
        with self.lock:
            self.arrivals.setdefault(self.headers.get("X-CueAPI-Execution-Id", "?"), now)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class ReceiverServer(http.server.ThreadingHTTPServer):
    """A receiver that does not refuse connections under a burst (the default backlog is 5)."""

    request_queue_size = 1024
    daemon_threads = True


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_once(cluster: PostgresCluster, count: int, workers: int, lead: float) -> dict:
    db_url = cluster.create_database(f"sched_{workers}_{uuid.uuid4().hex[:6]}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "DATABASE_"))}
    env.update({"DATABASE_URL": db_url, "ENV": "production", "LOG_LEVEL": "WARNING",
                "FLASK_APP": "wsgi", "ALLOW_PRIVATE_CALLBACK_URLS": "true",
                "DISABLE_QUOTA_ENFORCEMENT": "true",
                # The workers run this checkout's code even where the virtualenv has another
                # checkout installed in editable mode (its ``flask`` entry point wins otherwise).
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                            os.environ.get("PYTHONPATH")]))})
    flask = str(Path(sys.executable).parent / "flask")
    subprocess.run([flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)

    Receiver.arrivals = {}
    receiver = ReceiverServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()

    os.environ.update({k: env[k] for k in ("DATABASE_URL", "ENV", "ALLOW_PRIVATE_CALLBACK_URLS")})
    from sqlalchemy import func, insert, select

    from app import create_app
    from app.extensions import db
    from app.scheduling.models import Cue, Execution
    from app.users.services import upsert_internal_user

    app = create_app({k: env[k] for k in ("DATABASE_URL", "ENV", "ALLOW_PRIVATE_CALLBACK_URLS",
                                          "LOG_LEVEL")})
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead)
    with app.app_context():
        user, _ = upsert_internal_user(uuid.uuid4(), {"email": "sched@bench.example",
                                                      "slug": "sched"})
        now = datetime.now(UTC)
        callback = f"http://127.0.0.1:{receiver.server_port}/hook"
        db.session.execute(insert(Cue), [{
            "id": f"cue_{uuid.uuid4().hex[:12]}", "user_id": user.id, "name": f"due-{i}",
            "status": "active", "transport": "webhook", "schedule_type": "recurring",
            "schedule_cron": "0 0 1 1 *", "schedule_timezone": "UTC", "callback_url": callback,
            "callback_method": "POST", "callback_headers": {}, "payload": {"i": i},
            "retry_max_attempts": 3, "retry_backoff_minutes": [1], "next_run": due,
            "run_count": 0, "fired_count": 0, "created_at": now, "updated_at": now}
            for i in range(count)])
        db.session.commit()

    processes = [subprocess.Popen([flask, "worker", "run"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(workers)]
    try:
        deadline = due.timestamp() + 120
        while time.time() < deadline and len(Receiver.arrivals) < count:
            time.sleep(0.05)
        delivered = dict(Receiver.arrivals)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        receiver.shutdown()
    with app.app_context():
        created = [row[0].timestamp() for row in db.session.execute(select(Execution.created_at))]
        duplicates = db.session.scalar(select(func.count()).select_from(Execution)) - len(
            {row[0] for row in db.session.execute(select(Execution.cue_id))})
        db.engine.dispose()
    start = due.timestamp()
    creation = [max(t - start, 0.0) for t in created]
    delivery = [max(t - start, 0.0) for t in delivered.values()]
    return {
        "workers": workers, "cues": count, "delivered": len(delivered),
        "duplicate_executions": duplicates,
        "created_p50_s": percentile(creation, 0.5) if creation else None,
        "created_p99_s": percentile(creation, 0.99) if creation else None,
        "delivered_p50_s": percentile(delivery, 0.5) if delivery else None,
        "delivered_p99_s": percentile(delivery, 0.99) if delivery else None,
        "delivered_max_s": max(delivery) if delivery else None,
        "all_done_s": max(delivery) if len(delivery) == count else None,
        "mean_delivery_s": statistics.mean(delivery) if delivery else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cues", type=int, default=2000)
    parser.add_argument("--workers", default="1,3", help="comma-separated worker counts")
    parser.add_argument("--lead", type=float, default=6.0,
                        help="seconds between set-up and the due instant (workers warm up)")
    args = parser.parse_args(argv)
    rows = []
    with PostgresCluster() as cluster:
        for workers in (int(w) for w in args.workers.split(",")):
            row = run_once(cluster, args.cues, workers, args.lead)
            rows.append(row)
            print(f"  {workers} worker(s): {row}", file=sys.stderr)

    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    table = ["| workers | delivered | duplicates | created p50 / p99 s "
             "| delivered p50 / p99 / max s | all done s |",
             "|---:|---:|---:|---|---|---:|"]
    for row in rows:
        table.append(f"| {row['workers']} | {row['delivered']}/{row['cues']} | "
                     f"{row['duplicate_executions']} | {fmt(row['created_p50_s'])} / "
                     f"{fmt(row['created_p99_s'])} | {fmt(row['delivered_p50_s'])} / "
                     f"{fmt(row['delivered_p99_s'])} / {fmt(row['delivered_max_s'])} | "
                     f"{fmt(row['all_done_s'])} |")
    header = (f"Scheduler: {args.cues} webhook cues due at one instant, delivered to a receiver on "
              "127.0.0.1; lateness = time after the due instant; PostgreSQL 15 on loopback.")
    print(header)
    print("\n".join(table))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    info = machine()
    (RESULTS / f"scheduler-{stamp}.json").write_text(json.dumps(
        {"when": stamp, "machine": info, "settings": vars(args), "results": rows}, indent=2))
    (RESULTS / f"scheduler-{stamp}.md").write_text(
        f"# Scheduler benchmark {stamp}\n\nMachine: {info}\n\n{header}\n\n" + "\n".join(table)
        + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
