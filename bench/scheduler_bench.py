"""Scheduler benchmark: cues falling due, fired and delivered by 1 and by 3 workers.

For each worker count it starts a throwaway PostgreSQL database and seeds, with plain SQL,
``--due`` webhook cues (2,000) falling due a few seconds ahead — all at one instant, or spread
evenly over ``--spread`` seconds — and, with ``--active N``, enough other active recurring cues
(daily schedules whose ``next_run`` lies after the measured window) that N cues are active in
all: the scheduler's due query has to pass them by.  The worker processes (``flask worker
run``) are started first; once each holds its database connection, the due cues are inserted,
the first due ``--lead`` seconds later, and the time each delivery reaches a receiver on
127.0.0.1 is recorded.

Reported, per worker count: lateness of each execution's creation (its ``created_at``, the
clock of the scheduler pass that fired it) and of its delivery (arrival at the receiver), both
measured from the cue's own due instant, p50 / p99 / max; duplicate and missed deliveries; and
each worker process's peak and final resident memory (``VmHWM`` / ``VmRSS`` from
``/proc/<pid>/status``, its child processes included) and CPU time.

The issue-16 scale check: ``--active 100000 --due 10000 --spread 60 --workers 3``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
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

import psycopg  # noqa: E402

from bench.http_bench import (  # noqa: E402
    RESULTS,
    machine,
    machine_busy_seconds,
    tree_cpu_seconds,
)
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
    #: Requests received in all (more than ``len(arrivals)``: something arrived twice).
    requests = 0
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        now = time.time()
        with self.lock:
            Receiver.requests += 1
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


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (``/proc/<pid>/task/<tid>/children``)."""
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                stack.extend(int(child) for child in
                             Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except OSError:
            continue
    return pids


def _memory_kib(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of one process in KiB (zeros once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, flags=re.M))
    return int(values.get("VmRSS", 0)), int(values.get("VmHWM", 0))


class MemorySampler(threading.Thread):
    """Samples each worker's resident memory, its child processes included, every
    ``interval`` s and keeps the largest total.

    A child counts once it has been seen in two samples in a row: a worker does not fork, but a
    library it imports runs ``ldconfig`` at start-up (``ctypes.util.find_library``), and until
    that ``vfork``'d child calls ``exec`` it shares — and reports — all of its parent's memory.
    """

    def __init__(self, pids: list[int], interval: float = 0.25):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.peak = {pid: 0.0 for pid in pids}
        self._children: dict[int, set[int]] = {pid: set() for pid in pids}
        self.lock = threading.Lock()
        self.done = threading.Event()

    def measure(self, root: int) -> tuple[float, float]:
        """``(VmRSS, VmHWM)`` in MiB of ``root`` plus its lasting descendants; updates the
        peak."""
        with self.lock:
            children = set(_descendants(root)) - {root}
            lasting = children & self._children[root]
            self._children[root] = children
            rss, hwm = _memory_kib(root)
            for child in lasting:
                child_rss, child_hwm = _memory_kib(child)
                rss, hwm = rss + child_rss, hwm + child_hwm
            self.peak[root] = max(self.peak[root], rss / 1024)
            return rss / 1024, hwm / 1024

    def run(self) -> None:
        while not self.done.is_set():
            for pid in self.pids:
                self.measure(pid)
            self.done.wait(self.interval)


def load_average() -> list[float]:
    return [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]


#: The columns every seeded cue shares (a webhook cue, as the API creates one).
_CUE_COLUMNS = ("id, user_id, name, status, transport, schedule_type, schedule_cron,"
                " schedule_timezone, callback_url, callback_method, callback_headers, payload,"
                " retry_max_attempts, retry_backoff_minutes, next_run, run_count, fired_count,"
                " created_at, updated_at")


def seed_idle_cues(connection, users: list[str], count: int, after: datetime,
                   callback: str) -> None:
    """``count`` active daily cues (``M H * * *``, minutes of the day in turn) whose
    ``next_run`` is their next slot after ``after``: active, but not due in the window."""
    connection.execute(
        f"INSERT INTO cues ({_CUE_COLUMNS}) "
        "SELECT 'cue_a' || lpad(i::text, 11, '0'), (%(users)s::uuid[])[1 + i %% %(n)s],"
        " 'idle-' || i, 'active', 'webhook', 'recurring',"
        " ((i %% 1440) %% 60)::text || ' ' || ((i %% 1440) / 60)::text || ' * * *', 'UTC',"
        " %(callback)s, 'POST', '{}', json_build_object('i', i), 3, '[1]',"
        " CASE WHEN slot > %(after)s THEN slot ELSE slot + interval '1 day' END, 0, 0,"
        " now(), now()"
        " FROM generate_series(1, %(count)s) AS i,"
        " LATERAL (SELECT date_trunc('day', %(after)s AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        "                 + (i %% 1440) * interval '1 minute' AS slot) AS s",
        {"users": users, "n": len(users), "count": count, "after": after,
         "callback": callback})


def seed_due_cues(connection, users: list[str], count: int, first: datetime, step: float,
                  callback: str) -> None:
    """``count`` active cues, the i-th due at ``first + i × step`` seconds (i from 0); their
    yearly schedule (``0 0 1 1 *``) fires each once in the window."""
    connection.execute(
        f"INSERT INTO cues ({_CUE_COLUMNS}) "
        "SELECT 'cue_d' || lpad(i::text, 11, '0'), (%(users)s::uuid[])[1 + i %% %(n)s],"
        " 'due-' || i, 'active', 'webhook', 'recurring', '0 0 1 1 *', 'UTC', %(callback)s,"
        " 'POST', '{}', json_build_object('i', i), 3, '[1]',"
        " %(first)s + i * %(step)s * interval '1 second', 0, 0, now(), now()"
        " FROM generate_series(0, %(count)s - 1) AS i",
        {"users": users, "n": len(users), "count": count, "first": first, "step": step,
         "callback": callback})


def run_once(cluster: PostgresCluster, args: argparse.Namespace, workers: int) -> dict:
    count, spread = args.due, args.spread
    idle = max(args.active - count, 0) if args.active else 0
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

    Receiver.arrivals, Receiver.requests = {}, 0
    receiver = ReceiverServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    callback = f"http://127.0.0.1:{receiver.server_port}/hook"

    os.environ.update({k: env[k] for k in ("DATABASE_URL", "ENV", "ALLOW_PRIVATE_CALLBACK_URLS")})
    from app import create_app
    from app.extensions import db
    from app.users.services import upsert_internal_user

    app = create_app({k: env[k] for k in ("DATABASE_URL", "ENV", "ALLOW_PRIVATE_CALLBACK_URLS",
                                          "LOG_LEVEL")})
    with app.app_context():
        users = [str(upsert_internal_user(uuid.uuid4(), {"email": f"sched{k}@bench.example",
                                                         "slug": f"sched{k}"})[0].id)
                 for k in range(args.users)]
        db.session.commit()
        db.engine.dispose()
    raw_url = db_url.replace("postgresql+psycopg://", "postgresql://")
    step = spread / count if count else 0.0
    load_before = load_average()
    busy_before = machine_busy_seconds()
    seeding = time.monotonic()
    connection = psycopg.connect(raw_url, autocommit=True)
    if idle:  # their next_run is after the window whatever it turns out to be
        seed_idle_cues(connection, users, idle,
                       datetime.now(UTC) + timedelta(seconds=args.lead + 600 + spread
                                                     + args.timeout + 60), callback)
    seeded_s = time.monotonic() - seeding
    processes = [subprocess.Popen([flask, "worker", "run"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(workers)]
    sampler = MemorySampler([process.pid for process in processes])
    sampler.start()
    memory: dict[int, dict] = {}
    try:
        # The workers are ready once each holds its database connection (a loaded machine
        # can take longer than ``--lead`` to start them); then the due cues are inserted.
        ready_by = time.monotonic() + 600
        while connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                ).fetchone()[0] < workers:
            if time.monotonic() > ready_by or any(p.poll() is not None for p in processes):
                raise RuntimeError("the workers did not start")
            time.sleep(0.1)
        started_s = time.monotonic() - seeding - seeded_s
        first = datetime.now(UTC) + timedelta(seconds=args.lead)
        last = first + timedelta(seconds=step * max(count - 1, 0))
        seeding = time.monotonic()
        seed_due_cues(connection, users, count, first, step, callback)
        connection.execute("ANALYZE")
        seeded_s += time.monotonic() - seeding
        due_plan = [row[0] for row in connection.execute(
            # The scheduler's due query (``_schedule_chunk``) at the first due instant.
            "EXPLAIN ANALYZE SELECT id, schedule_type, schedule_cron, schedule_timezone,"
            " next_run FROM cues WHERE status = 'active' AND next_run IS NOT NULL"
            " AND next_run <= %s AND user_id IN (SELECT id FROM users WHERE active)"
            " ORDER BY next_run LIMIT 100 FOR UPDATE SKIP LOCKED", (first,))]
        connection.close()
        if time.time() > first.timestamp():
            print("  warning: the due cues were inserted after the first was due "
                  "(raise --lead)", file=sys.stderr)
        while time.time() < first.timestamp():
            time.sleep(0.05)
        for process in processes:  # started and idle, nothing due yet
            memory[process.pid] = {"rss_start_mib": sampler.measure(process.pid)[0]}
        deadline = last.timestamp() + args.timeout
        while time.time() < deadline and len(Receiver.arrivals) < count:
            time.sleep(0.05)
        time.sleep(0.5)  # anything arriving twice shortly after
        delivered, requests = dict(Receiver.arrivals), Receiver.requests
        for process in processes:
            rss, hwm = sampler.measure(process.pid)
            memory[process.pid].update(rss_end_mib=rss, cpu_s=tree_cpu_seconds(process.pid),
                                       rss_peak_mib=max(hwm, sampler.peak[process.pid]))
    finally:
        connection.close()
        sampler.done.set()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        receiver.shutdown()
    load_after = load_average()
    busy_s = machine_busy_seconds() - busy_before

    with psycopg.connect(raw_url, autocommit=True) as connection:
        executions = connection.execute(
            "SELECT e.id::text, e.cue_id, e.scheduled_for, e.created_at FROM executions AS e"
            " WHERE e.triggered_by = 'scheduler'").fetchall()
    due_executions = [row for row in executions if row[1].startswith("cue_d")]
    early = len(executions) - len(due_executions)  # an idle cue fired: must not happen
    fired_cues = {row[1] for row in due_executions}
    duplicates = (len(due_executions) - len(fired_cues)) + (requests - len(delivered)) + early
    creation = [(created - scheduled).total_seconds()
                for _, _, scheduled, created in due_executions]
    scheduled_at = {execution_id: scheduled.timestamp()
                    for execution_id, _, scheduled, _ in due_executions}
    delivery = [at - scheduled_at[execution_id] for execution_id, at in delivered.items()
                if execution_id in scheduled_at]
    missed = count - len(delivery)

    def stat(values, q):
        return percentile(values, q) if values else None

    rss_peak = [m["rss_peak_mib"] for m in memory.values()]
    return {
        "workers": workers, "active": count + idle, "due": count, "spread_s": spread,
        "users": args.users, "seeded_s": round(seeded_s, 2),
        "workers_started_s": round(started_s, 2),
        "delivered": len(delivery), "missed": missed, "duplicates": duplicates,
        "early_fires": early,
        "created_p50_s": stat(creation, 0.5), "created_p99_s": stat(creation, 0.99),
        "created_max_s": max(creation) if creation else None,
        "delivered_p50_s": stat(delivery, 0.5), "delivered_p99_s": stat(delivery, 0.99),
        "delivered_max_s": max(delivery) if delivery else None,
        "mean_delivery_s": statistics.mean(delivery) if delivery else None,
        "all_done_s": (max(delivered.values()) - first.timestamp()) if missed == 0 else None,
        "worker_rss_peak_mib": max(rss_peak) if rss_peak else None,
        "worker_memory": list(memory.values()),
        "worker_cpu_s": sum(m["cpu_s"] for m in memory.values()),
        "machine_busy_s": busy_s,
        "load_before": load_before, "load_after": load_after,
        "due_query_plan": due_plan,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--due", "--cues", dest="due", type=int, default=2000,
                        help="cues falling due (default 2000)")
    parser.add_argument("--active", type=int, default=0,
                        help="active cues in all; those beyond --due are not due in the window "
                             "(default: only the due ones)")
    parser.add_argument("--spread", type=float, default=0.0,
                        help="seconds over which the due cues fall due, evenly (default 0: "
                             "all at one instant)")
    parser.add_argument("--users", type=int, default=1, help="owners the cues are spread over")
    parser.add_argument("--workers", default="1,3", help="comma-separated worker counts")
    parser.add_argument("--lead", type=float, default=6.0,
                        help="seconds between the workers being ready and the first due "
                             "instant")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds after the last due instant to wait for deliveries")
    args = parser.parse_args(argv)
    if args.active and args.active < args.due:
        parser.error("--active counts the due cues too: it must be at least --due")
    rows = []
    with PostgresCluster() as cluster:
        for workers in (int(w) for w in args.workers.split(",")):
            row = run_once(cluster, args, workers)
            rows.append(row)
            shown = {k: v for k, v in row.items() if k != "due_query_plan"}
            print(f"  {workers} worker(s): {shown}", file=sys.stderr)

    def fmt(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    table = ["| workers | active | due | spread s | delivered | duplicates | missed "
             "| created p50 / p99 s | delivered p50 / p99 / max s | worker RSS peak / end MiB "
             "| worker CPU s | load 1-min before / after |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---|"]
    for row in rows:
        peaks = ", ".join(f"{m['rss_peak_mib']:.0f} / {m['rss_end_mib']:.0f}"
                          for m in row["worker_memory"])
        table.append(
            f"| {row['workers']} | {row['active']:,} | {row['due']:,} | {row['spread_s']:g} | "
            f"{row['delivered']:,} | {row['duplicates']} | {row['missed']} | "
            f"{fmt(row['created_p50_s'])} / {fmt(row['created_p99_s'])} | "
            f"{fmt(row['delivered_p50_s'])} / {fmt(row['delivered_p99_s'])} / "
            f"{fmt(row['delivered_max_s'])} | {peaks} | {fmt(row['worker_cpu_s'], 1)} | "
            f"{row['load_before'][0]:.2f} / {row['load_after'][0]:.2f} |")
    when = ("at one instant" if not args.spread else
            f"spread evenly over {args.spread:g} s")
    header = (f"Scheduler: {args.due:,} webhook cues due {when}"
              + (f", among {max(args.active, args.due):,} active cues" if args.active else "")
              + f" ({args.users} owner(s)), delivered to a receiver on 127.0.0.1; lateness = "
              "time after each cue's due instant; PostgreSQL on loopback.")
    print(header)
    print("\n".join(table))
    print("\nDue query plan (first run):\n" + "\n".join(rows[0]["due_query_plan"]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    info = machine()
    (RESULTS / f"scheduler-{stamp}.json").write_text(json.dumps(
        {"when": stamp, "machine": info, "settings": vars(args), "results": rows}, indent=2))
    (RESULTS / f"scheduler-{stamp}.md").write_text(
        f"# Scheduler benchmark {stamp}\n\nMachine: {info}\n\n{header}\n\n" + "\n".join(table)
        + "\n\nWorker RSS: per worker process, peak (`VmHWM`, children included) / at the end "
        "of the run.\n\nThe scheduler's due query at the first due instant:\n\n```\n"
        + "\n".join(rows[0]["due_query_plan"]) + "\n```\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
