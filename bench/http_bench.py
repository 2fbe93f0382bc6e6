"""HTTP load benchmark: Cueline endpoints against a bare-Flask ceiling, same gunicorn setup.

One command (``make bench`` or ``python bench/http_bench.py``) starts a throwaway PostgreSQL
cluster on loopback, migrates it, starts Cueline and a bare Flask app under the same gunicorn
configuration, seeds data through the public API, drives a fixed load at each endpoint with
``wrk`` (from Debian) and prints one table: requests/s, p50, p99, errors, each endpoint's
ratio to the bare-Flask ceiling measured in the same run with the same workers (in slices: each
slice of an endpoint is followed by as long a slice of the ceiling, and the ratio is the median
slice's, so the drift of a shared machine's speed cancels out), and the CPU
time per request spent in the app's processes, in PostgreSQL's, in Redis and on the whole
machine.  Results (with the machine description) are written to ``bench/results/``.

``--profile production`` (the default) is the production configuration: PostgreSQL, the
Redis rate limiter (``RATELIMIT_STORAGE_URI=redis://…`` on a throwaway ``redis-server``),
gunicorn with one sync worker per core and the JSON request log on (``LOG_LEVEL=INFO``).
``--profile one-worker`` is the same with one worker, so a per-process cost shows without
scheduler noise.  ``--profile memory`` is the earlier configuration (``memory://`` counters,
request log off).  ``--baseline DIR`` also serves Cueline from another checkout (say, the
commit before a change) beside this one, alternating endpoint by endpoint: before and after
in the same run.

All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pg import PostgresCluster  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

SERVICE_TOKEN = "bench-service-token-" + uuid.uuid4().hex
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        memory = "unknown"
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "memory": memory,
            "python": platform.python_version(), "platform": platform.platform()}


_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int | None) -> float:
    """CPU seconds used so far by process ``root`` and all its descendants (Linux ``/proc``).

    Descendants that have exited and been reaped count through their parents' ``cutime`` and
    ``cstime``.
    """
    if root is None:
        return 0.0
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        times[pid] = sum(int(value) for value in fields[11:15]) / _TICKS
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(children.get(pid, ()))
    return total


def tree_rss_mib(root: int) -> list[float]:
    """Resident memory (MiB) of process ``root``'s children (gunicorn's workers)."""
    sizes = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        parent = re.search(r"^PPid:\s+(\d+)", status, flags=re.M)
        rss = re.search(r"^VmRSS:\s+(\d+) kB", status, flags=re.M)
        if parent and rss and int(parent.group(1)) == root:
            sizes.append(int(rss.group(1)) / 1024)
    return sorted(sizes)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting on I/O)."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / _TICKS


class Gunicorn:
    """A gunicorn process serving ``target`` on a loopback port."""

    def __init__(self, target: str, env: dict, workers: int, worker_class: str, threads: int,
                 cwd: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [str(Path(sys.executable).parent / "gunicorn"), "--bind",
                f"127.0.0.1:{self.port}", "--workers", str(workers),
                "--worker-class", worker_class, "--log-level", "warning"]
        if worker_class == "gthread":
            args += ["--threads", str(threads)]
        self.log = tempfile.NamedTemporaryFile(prefix="bench-gunicorn-", suffix=".log",
                                               delete=False)
        if cwd != ROOT:  # another checkout: its own code first on the path
            env = {**env, "PYTHONPATH": str(cwd)}
        self.process = subprocess.Popen(args + [target], cwd=cwd, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn {target} did not start; see {self.log.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


LUA_UUID = """
local function uuid4()
  local t = 'xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx'
  return (string.gsub(t, '[xy]', function (c)
    local v = (c == 'x') and math.random(0, 0xf) or math.random(8, 0xb)
    return string.format('%x', v)
  end))
end
"""


def lua_script(method: str, headers: dict, body: str | None = None,
               fresh_user_path: bool = False) -> str:
    """A wrk script sending ``method`` with ``headers`` (and a per-request user id if asked)."""
    lines = [f'wrk.method = "{method}"']
    for name, value in headers.items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(body)}")
    if fresh_user_path:
        lines.append(LUA_UUID)
        lines.append("math.randomseed(os.time() + math.floor(os.clock() * 1000000))")
        lines.append("request = function()\n  local id = uuid4()\n"
                     "  local body = '{\"email\": \"' .. id .. '@bench.example\", "
                     "\"slug\": \"b-' .. id .. '\"}'\n"
                     "  return wrk.format(nil, '/v1/internal/users/' .. id, nil, body)\nend")
    return "\n".join(lines) + "\n"


def run_wrk(url: str, script: str, connections: int, duration: int, threads: int,
            app_pid: int | None = None, db_pid: int | None = None,
            redis_pid: int | None = None) -> dict:
    """Run wrk once and parse requests/s, p50, p99 and errors.

    With ``app_pid`` / ``db_pid`` (the gunicorn master, the postmaster) it also reports the CPU
    time per request spent in the app's processes, in PostgreSQL's, and on the whole machine
    (the rest being wrk and the kernel): where each endpoint's cost goes.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        path = handle.name
    before = (tree_cpu_seconds(app_pid), tree_cpu_seconds(db_pid), tree_cpu_seconds(redis_pid),
              machine_busy_seconds())
    try:
        out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d",
                              f"{duration}s", "--latency", "-s", path, url],
                             capture_output=True, text=True, timeout=duration + 60).stdout
    finally:
        os.unlink(path)
    after = (tree_cpu_seconds(app_pid), tree_cpu_seconds(db_pid), tree_cpu_seconds(redis_pid),
             machine_busy_seconds())

    def latency(label: str) -> float | None:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, flags=re.M)
        if not match:
            return None
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    # Kept apart in the JSON: an HTTP error is the service's, a socket error may be the
    # connection handling's (a keep-alive connection closed as a request was sent).
    http_errors = int(non2xx.group(1)) if non2xx else 0
    sockets = {}
    if socket_errors:
        sockets = dict(zip(("connect", "read", "write", "timeout"),
                           (int(x) for x in socket_errors.groups()), strict=True))
    requests = int(total.group(1)) if total else 0
    app_us, db_us, redis_us, busy_us = ((end - start) / requests * 1e6 if requests else None
                                        for start, end in zip(before, after, strict=True))
    return {"rps": float(rps.group(1)) if rps else 0.0, "p50_ms": latency("50"),
            "p99_ms": latency("99"), "errors": http_errors + sum(sockets.values()),
            "non_2xx": http_errors, "socket_errors": sockets, "requests": requests,
            "cpu_us_per_request": {"app": app_us if app_pid else None,
                                   "postgres": db_us if db_pid else None,
                                   "redis": redis_us if redis_pid else None,
                                   "machine": busy_us},
            "raw": out}


def merge_slices(parts: list[dict]) -> dict:
    """One row from the slices of one endpoint: requests/s averaged over the slices, latency
    percentiles the median slice's, errors and requests summed, CPU per request weighted by
    each slice's requests."""
    requests = sum(part["requests"] for part in parts)
    cpu = {}
    for name in parts[0]["cpu_us_per_request"]:
        values = [(part["cpu_us_per_request"][name], part["requests"]) for part in parts]
        cpu[name] = (None if any(v is None for v, _ in values) or not requests
                     else sum(v * n for v, n in values) / requests)
    sockets: dict[str, int] = {}
    for part in parts:
        for kind, count in part["socket_errors"].items():
            sockets[kind] = sockets.get(kind, 0) + count

    def median_of(key: str) -> float | None:
        values = [part[key] for part in parts if part[key] is not None]
        return statistics.median(values) if values else None

    return {"rps": statistics.mean(part["rps"] for part in parts), "p50_ms": median_of("p50_ms"),
            "p99_ms": median_of("p99_ms"), "errors": sum(part["errors"] for part in parts),
            "non_2xx": sum(part["non_2xx"] for part in parts), "socket_errors": sockets,
            "requests": requests, "cpu_us_per_request": cpu,
            "slices_rps": [part["rps"] for part in parts]}


#: The body of the update benchmark (and of the user it updates).
UPSERT_BODY = {"email": "upsert@bench.example", "slug": "upsert", "plan": "scale",
               "rate_limit_per_minute": 1_000_000_000}
#: The same update for the upsert floor's own user.
FLOOR_UPSERT_BODY = {**UPSERT_BODY, "email": "floor-upsert@bench.example",
                     "slug": "floor-upsert"}


def seed(url: str) -> dict:
    """Create the benchmark's users, key, cues and agents through the public API."""
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        user_id = str(uuid.uuid4())
        body = {"email": "bench@bench.example", "slug": "bench", "plan": "scale",
                "active_cue_limit": 1000, "rate_limit_per_minute": 1_000_000_000,
                "monthly_message_limit": 1_000_000_000}
        assert http.put(f"/v1/internal/users/{user_id}", json=body, headers=service
                        ).status_code == 200
        on_behalf = {**service, "X-On-Behalf-Of": user_id}
        key = http.post("/v1/auth/key/regenerate", headers={
            **on_behalf, "X-Confirm-Destructive": "true"}).json()["api_key"]
        bearer = {"Authorization": f"Bearer {key}"}
        for i in range(20):
            response = http.post("/v1/cues", headers=bearer, json={
                "name": f"bench-{i}", "transport": "worker",
                "schedule": {"type": "recurring", "cron": "0 0 1 1 *"},
                "payload": {"task": "bench", "i": i}})
            assert response.status_code == 201, response.text
        agents = []
        for slug in ("sender", "receiver"):
            response = http.post("/v1/agents", headers=bearer,
                                 json={"display_name": slug, "slug": slug})
            assert response.status_code == 201, response.text
            agents.append(response.json()["id"])
        # The update benchmark rewrites its own user: thousands of updates of the user whose key
        # the other endpoints look up would leave them reading a long chain of dead row versions
        # until autovacuum runs, making the later endpoints' numbers depend on its timing.
        upsert_user_id = str(uuid.uuid4())
        assert http.put(f"/v1/internal/users/{upsert_user_id}", json=UPSERT_BODY,
                        headers=service).status_code == 200
        # The upsert floor rewrites a user of its own, for the same reason.
        floor_upsert_user_id = str(uuid.uuid4())
        assert http.put(f"/v1/internal/users/{floor_upsert_user_id}", json=FLOOR_UPSERT_BODY,
                        headers=service).status_code == 200
    return {"user_id": user_id, "key": key, "sender": agents[0], "receiver": agents[1],
            "upsert_user_id": upsert_user_id, "floor_upsert_user_id": floor_upsert_user_id}


def endpoints(data: dict) -> list[tuple[str, str, str]]:
    """(label, path, wrk script) for every measured endpoint."""
    key = {"Authorization": f"Bearer {data['key']}"}
    delegated = {"Authorization": f"Bearer {SERVICE_TOKEN}", "X-On-Behalf-Of": data["user_id"]}
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"}
    update = json.dumps(UPSERT_BODY)
    message = json.dumps({"to": data["receiver"], "body": "benchmark message"})
    return [
        ("GET /health", "/health", lua_script("GET", {})),
        ("GET /v1/auth/me (key)", "/v1/auth/me", lua_script("GET", key)),
        ("GET /v1/cues?limit=20 (key)", "/v1/cues?limit=20", lua_script("GET", key)),
        ("GET /v1/cues?limit=20 (delegated)", "/v1/cues?limit=20", lua_script("GET", delegated)),
        ("PUT /v1/internal/users/{id} (update)", f"/v1/internal/users/{data['upsert_user_id']}",
         lua_script("PUT", service, update)),
        ("PUT /v1/internal/users/{id} (create)", "/v1/internal/users/x",
         lua_script("PUT", service, fresh_user_path=True)),
        ("POST /v1/messages", "/v1/messages",
         lua_script("POST", {**key, "Content-Type": "application/json",
                             "X-Cueapi-From-Agent": data["sender"]}, message)),
    ]


#: name → (workers or None for one per core, Redis limiter, request log)
PROFILES = {"production": (None, True, True), "one-worker": (1, True, True),
            "memory": (None, False, False)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES),
                        default=os.environ.get("BENCH_PROFILE", "production"))
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=12, help="seconds measured per endpoint")
    parser.add_argument("--slices", type=int, default=3,
                        help="slices the measured seconds are cut into, each followed by as "
                        "long a slice of the bare ceiling (the ratio is the median slice's)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per endpoint")
    parser.add_argument("--wrk-threads", type=int, default=2)
    # One sync worker per core: the configuration docs/operations.md recommends (measured).
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", 0)),
                        help="gunicorn workers (default: the profile's)")
    parser.add_argument("--worker-class", default=os.environ.get("BENCH_WORKER_CLASS", "sync"))
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    parser.add_argument("--only", default="", help="substring filter on endpoint labels")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout of Cueline to serve and measure beside this one")
    args = parser.parse_args(argv)
    profile_workers, with_redis, request_log = PROFILES[args.profile]
    args.workers = args.workers or profile_workers or os.cpu_count() or 2

    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install wrk (make bench does this)", file=sys.stderr)
        return 2
    cluster = PostgresCluster().start()
    redis_server = RedisServer().start() if with_redis else None
    servers: list[Gunicorn] = []
    try:
        db_url = cluster.create_database("cueline_bench")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "DATABASE_"))}
        env.update({"DATABASE_URL": db_url, "ENV": "production",
                    "LOG_LEVEL": "INFO" if request_log else "WARNING",
                    "EXTERNAL_AUTH_BACKEND": "true", "INTERNAL_AUTH_TOKEN": SERVICE_TOKEN,
                    "DISABLE_QUOTA_ENFORCEMENT": "true", "FLASK_APP": "wsgi",
                    "RATELIMIT_STORAGE_URI": redis_server.url if redis_server else "memory://"})
        subprocess.run([str(Path(sys.executable).parent / "flask"), "db", "upgrade"], cwd=ROOT,
                       env=env, check=True, capture_output=True)
        gunicorn_config = (args.workers, args.worker_class, args.threads)
        cueline = Gunicorn("wsgi:app", env, *gunicorn_config)
        servers.append(cueline)
        baseline = None
        if args.baseline is not None:
            baseline = Gunicorn("wsgi:app", env, *gunicorn_config, cwd=args.baseline.resolve())
            servers.append(baseline)
        bare = Gunicorn("bench.bare_app:app", env, *gunicorn_config)
        servers.append(bare)
        floor = Gunicorn("bench.floor_app:app", env, *gunicorn_config)
        servers.append(floor)
        data = seed(cueline.url)
        pids = {server.url: server.process.pid for server in servers}

        targets = [("bare Flask JSON (ceiling)", bare.url, "/bare", lua_script("GET", {})),
                   ("bare Flask + 1 PostgreSQL query", bare.url, "/bare-db",
                    lua_script("GET", {})),
                   ("stack floor: ORM key lookup + the rate limiter", floor.url, "/floor",
                    lua_script("GET", {"Authorization": f"Bearer {data['key']}"})),
                   ("stack floor: key lookup with a 20-cue page + the rate limiter + the "
                    "page as JSON", floor.url, "/floor-cues?limit=20",
                    lua_script("GET", {"Authorization": f"Bearer {data['key']}"})),
                   ("stack floor: the user upsert statement alone", floor.url,
                    f"/floor-upsert/{data['floor_upsert_user_id']}",
                    lua_script("PUT", {"Content-Type": "application/json"},
                               json.dumps(FLOOR_UPSERT_BODY))),
                   ("stack floor: key lookup with the agents + the rate limiter + the message "
                    "write", floor.url, "/floor-message",
                    lua_script("POST", {"Authorization": f"Bearer {data['key']}",
                                        "Content-Type": "application/json",
                                        "X-Cueapi-From-Agent": data["sender"]},
                               json.dumps({"to": data["receiver"], "body": "floor message"})))]
        for label, path, script in endpoints(data):
            targets.append((label, cueline.url, path, script))
            if baseline is not None:
                targets.append((f"{label} [baseline]", baseline.url, path, script))
        results = []
        redis_pid = redis_server.process.pid if redis_server else None
        ceiling_url, ceiling_script = bare.url + "/bare", targets[0][3]
        per_slice = max(1, round(args.duration / args.slices))
        for label, base, path, script in targets:
            if (args.only and args.only not in label
                    and not label.startswith(("bare", "stack floor"))):
                continue
            run_wrk(base + path, script, args.connections, args.warmup, args.wrk_threads)
            # Slices of the endpoint, each followed by a slice of the bare ceiling: the speed of
            # a shared machine drifts from minute to minute, and a ratio to a ceiling measured
            # seconds later cancels most of that drift.
            parts, ceilings = [], []
            for _ in range(args.slices):
                part = run_wrk(base + path, script, args.connections, per_slice,
                               args.wrk_threads, app_pid=pids[base],
                               db_pid=cluster.postmaster_pid(), redis_pid=redis_pid)
                part.pop("raw")
                parts.append(part)
                if base + path != ceiling_url:
                    ceilings.append(run_wrk(ceiling_url, ceiling_script, args.connections,
                                            per_slice, args.wrk_threads)["rps"])
                else:
                    ceilings.append(part["rps"])
            measured = merge_slices(parts)
            measured["ceiling_rps"] = ceilings
            measured["ratio"] = statistics.median(
                part["rps"] / ceiling if ceiling else 0.0
                for part, ceiling in zip(parts, ceilings, strict=True))
            results.append({"endpoint": label, **measured})
            print(f"  measured {label}: {measured['rps']:.0f} req/s "
                  f"({measured['ratio']:.0%} of the ceiling beside it)", file=sys.stderr)
        worker_rss = tree_rss_mib(cueline.process.pid)  # after every endpoint has run
    finally:
        for server in servers:
            server.stop()
        if redis_server is not None:
            redis_server.stop()
        cluster.cleanup()

    header = (f"Profile {args.profile}: wrk, {args.connections} connections, "
              f"{args.wrk_threads} threads, {args.warmup} s warm-up + {args.slices} × "
              f"{per_slice} s measured per endpoint, each slice followed by the bare route's; "
              f"gunicorn {args.workers} × {args.worker_class}"
              f"{f' ({args.threads} threads)' if args.worker_class == 'gthread' else ''}; "
              "PostgreSQL 15 on loopback; rate limiter on "
              f"{'Redis (redis-server on loopback)' if with_redis else 'memory://'}; request log "
              f"{'on (JSON, LOG_LEVEL=INFO)' if request_log else 'off'}"
              f"{f'; [baseline] rows: {args.baseline}' if args.baseline else ''}.")
    table = ["| Endpoint | req/s | p50 ms | p99 ms | errors | vs bare Flask "
             "| CPU µs/req: app | PostgreSQL | Redis | machine |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def micros(value: float | None) -> str:
        return "–" if value is None else f"{value:.0f}"

    for row in results:
        cpu = row["cpu_us_per_request"]
        table.append(f"| {row['endpoint']} | {row['rps']:.0f} | {row['p50_ms'] or 0:.1f} | "
                     f"{row['p99_ms'] or 0:.1f} | {row['errors']} | {row['ratio']:.0%} | "
                     f"{micros(cpu['app'])} | {micros(cpu['postgres'])} | "
                     f"{micros(cpu['redis'])} | {micros(cpu['machine'])} |")
    notes = ("vs bare Flask: requests/s as a share of the bare Flask JSON route's, served in the "
             "same run by the same gunicorn configuration, measured in slices: each slice of an "
             f"endpoint ({per_slice} s) is followed by as long a slice of the bare route, and the "
             "ratio is the median of the slices' ratios (req/s is the slices' mean). CPU µs/req: "
             "CPU time per request of "
             "the serving gunicorn (master and workers), of PostgreSQL (all its processes), of "
             "redis-server, and of the whole machine (the rest is wrk and the kernel); the "
             "machine column is what bounds requests/s on a saturated host.")
    notes += (" Memory: each Cueline gunicorn worker's resident set after the run, "
              + ", ".join(f"{mib:.0f} MiB" for mib in worker_rss) + ".")
    print(header)
    print("\n".join(table))
    print(notes)

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    info = machine()
    settings = {**vars(args), "baseline": str(args.baseline) if args.baseline else None}
    (RESULTS / f"http-{stamp}.json").write_text(json.dumps(
        {"when": stamp, "machine": info, "settings": settings, "results": results,
         "worker_rss_mib": worker_rss}, indent=2))
    (RESULTS / f"http-{stamp}.md").write_text(
        f"# HTTP benchmark {stamp}\n\nMachine: {info}\n\n{header}\n\n" + "\n".join(table)
        + f"\n\n{notes}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
