"""What one request of each main endpoint costs in-process, on the production configuration.

PostgreSQL, the Redis rate limiter (a throwaway ``redis-server``) and the JSON request log on,
the WSGI app called directly with a prebuilt environ (no HTTP server, no load generator), so
the numbers are the app's own: for each endpoint the SQL statements and Redis round trips one
request makes, and its CPU µs (median of ``--rounds`` rounds of ``--requests`` calls).
``tests/test_request_costs.py`` pins the counts; this script adds the CPU time and can profile
one endpoint (``--profile LABEL`` writes a cProfile dump and prints the top functions).

Run ``python bench/request_costs.py`` (results land in ``bench/results/``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import event  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from bench.http_bench import RESULTS, machine  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

SERVICE_TOKEN = "request-costs-service-token-" + "x" * 20


class Counter:
    """Counts SQL statements (``before_cursor_execute``) and Redis round trips (one
    ``send_packed_command`` is one request written to the server: a command or a pipeline)."""

    def __init__(self, engine):
        import redis.connection

        self.sql: list[str] = []
        self.redis: list[bytes] = []
        self.active = False
        self.thread = 0
        event.listen(engine, "before_cursor_execute", self._on_sql)
        connection_class = redis.connection.AbstractConnection
        original = connection_class.send_packed_command
        counter = self

        def send_packed_command(conn, command, check_health=True):
            if counter.counts_here():
                packed = command if isinstance(command, bytes | str) else b"".join(command)
                counter.redis.append(packed if isinstance(packed, bytes) else packed.encode())
            return original(conn, command, check_health)

        connection_class.send_packed_command = send_packed_command

    def counts_here(self) -> bool:
        """Only the request's own thread counts: the audit trail's writer thread may flush
        its buffer meanwhile, and that statement is not the request's."""
        return self.active and threading.get_ident() == self.thread

    def _on_sql(self, _conn, _cursor, statement, _params, _context, _many):
        if self.counts_here():
            self.sql.append(statement)

    @contextmanager
    def counting(self):
        self.thread = threading.get_ident()
        self.sql, self.redis, self.active = [], [], True
        try:
            yield self
        finally:
            self.active = False


def build(db_url: str, redis_url: str, service_rate_limit: int = 0):
    """The production-like app: Redis limiter, JSON request log at INFO, delegation on."""
    from app import create_app

    return create_app({
        "ENV": "test", "DATABASE_URL": db_url, "RATELIMIT_ENABLED": True,
        "RATELIMIT_STORAGE_URI": redis_url, "LOG_LEVEL": "INFO",
        "EXTERNAL_AUTH_BACKEND": True, "INTERNAL_AUTH_TOKEN": SERVICE_TOKEN,
        "DISABLE_QUOTA_ENFORCEMENT": True, "SERVICE_RATE_LIMIT_PER_MINUTE": service_rate_limit,
        "SESSION_SECRET": "request-costs-session-secret-" + "y" * 20})


def seed(app) -> dict:
    """A user with a key, 20 cues and two agents; a second user for the upsert."""
    client = app.test_client()
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    user_id = str(uuid.uuid4())
    body = {"email": "costs@bench.example", "slug": "costs", "plan": "scale",
            "active_cue_limit": 1000, "rate_limit_per_minute": 1_000_000_000,
            "monthly_message_limit": 1_000_000_000}
    assert client.put(f"/v1/internal/users/{user_id}", json=body, headers=service
                      ).status_code == 200
    key = client.post("/v1/auth/key/regenerate", headers={
        **service, "X-On-Behalf-Of": user_id, "X-Confirm-Destructive": "true"}
    ).get_json()["api_key"]
    bearer = {"Authorization": f"Bearer {key}"}
    for i in range(20):
        response = client.post("/v1/cues", headers=bearer, json={
            "name": f"costs-{i}", "transport": "worker",
            "schedule": {"type": "recurring", "cron": "0 0 1 1 *"},
            "payload": {"task": "costs", "i": i}})
        assert response.status_code == 201, response.get_json()
    agents = []
    for slug in ("sender", "receiver"):
        response = client.post("/v1/agents", headers=bearer,
                               json={"display_name": slug, "slug": slug})
        assert response.status_code == 201, response.get_json()
        agents.append(response.get_json()["id"])
    upsert_id = str(uuid.uuid4())
    upsert_body = {"email": "costs-upsert@bench.example", "slug": "costs-upsert",
                   "plan": "scale", "rate_limit_per_minute": 1_000_000_000}
    assert client.put(f"/v1/internal/users/{upsert_id}", json=upsert_body, headers=service
                      ).status_code == 200
    # The upsert floor rewrites a user of its own.
    floor_upsert_id = str(uuid.uuid4())
    floor_upsert_body = {**upsert_body, "email": "costs-floor@bench.example",
                         "slug": "costs-floor"}
    assert client.put(f"/v1/internal/users/{floor_upsert_id}", json=floor_upsert_body,
                      headers=service).status_code == 200
    return {"user_id": user_id, "key": key, "sender": agents[0], "receiver": agents[1],
            "upsert_id": upsert_id, "upsert_body": upsert_body,
            "floor_upsert_id": floor_upsert_id, "floor_upsert_body": floor_upsert_body}


def requests_for(data: dict) -> list[tuple[str, dict]]:
    """(label, EnvironBuilder arguments) of every measured endpoint."""
    key = {"Authorization": f"Bearer {data['key']}"}
    delegated = {"Authorization": f"Bearer {SERVICE_TOKEN}", "X-On-Behalf-Of": data["user_id"]}
    return [
        ("GET /v1/auth/me (key)", {"path": "/v1/auth/me", "headers": key}),
        ("GET /v1/cues?limit=20 (key)", {"path": "/v1/cues", "query_string": "limit=20",
                                         "headers": key}),
        ("GET /v1/cues?limit=20 (delegated)", {"path": "/v1/cues", "query_string": "limit=20",
                                               "headers": delegated}),
        ("PUT /v1/internal/users/{id} (update)", {
            "path": f"/v1/internal/users/{data['upsert_id']}", "method": "PUT",
            "headers": {"Authorization": f"Bearer {SERVICE_TOKEN}"},
            "json": data["upsert_body"]}),
        ("POST /v1/messages", {
            "path": "/v1/messages", "method": "POST",
            "headers": {**key, "X-Cueapi-From-Agent": data["sender"]},
            "json": {"to": data["receiver"], "body": "costs message"}}),
    ]


def caller(app, arguments: dict):
    """A function answering one request to ``app`` (asserting a 2xx)."""
    environ = EnvironBuilder(**arguments).get_environ()
    body = environ["wsgi.input"].read()

    def start_response(status, _headers, _exc_info=None):
        assert status[0] == "2", status

    def call():
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(body)
        result = app.wsgi_app(env, start_response)
        b"".join(result)
        if hasattr(result, "close"):
            result.close()

    return call


@contextmanager
def quiet_stderr():
    """The request log still formats and writes every line, to /dev/null."""
    saved = sys.stderr
    with open(os.devnull, "w") as devnull:
        sys.stderr = devnull
        try:
            yield
        finally:
            sys.stderr = saved


def _bare_call():
    """One request to a bare Flask JSON route: the yardstick each round is divided by."""
    from flask import Flask

    bare = Flask("bare")
    bare.get("/bare")(lambda: {"status": "ok", "service": "bare", "n": 1})
    return caller(bare, {"path": "/bare"})


#: Calls of each kind per block: the endpoint and the bare route alternate in blocks this short.
BLOCK = 5


def cpu_per_request(call, requests: int, rounds: int, reference=None) -> tuple[float, float]:
    """Median CPU µs per request over ``rounds``, and the median ratio to ``reference`` (a bare
    route measured in the same rounds).

    The two alternate in blocks of :data:`BLOCK` calls, each block timed on this thread's CPU
    clock: a core of this shared machine changes speed by up to 2× from one second to the next,
    so a ratio of two runs a second apart says more about the machine than about the code;
    blocks of a few milliseconds see the same speed.  The request's own thread only: the audit
    writer's flushes are not the request's.
    """
    reference = reference or _bare_call()
    clock = time.thread_time
    for _ in range(max(requests // 10, 1)):
        call()
        reference()
    samples, ratios = [], []
    for _ in range(rounds):
        bare = spent = 0.0
        for _ in range(max(requests // BLOCK, 1)):
            started = clock()
            for _ in range(BLOCK):
                reference()
            middle = clock()
            for _ in range(BLOCK):
                call()
            bare += middle - started
            spent += clock() - middle
        count = max(requests // BLOCK, 1) * BLOCK
        samples.append(spent / count * 1e6)
        ratios.append(spent / bare if bare else 0.0)
    return statistics.median(samples), statistics.median(ratios)


def floor_requests(data: dict) -> list[tuple[str, dict]]:
    """(label, EnvironBuilder arguments) of the floors (``bench/floor_app.py``) that bound the
    endpoints of :func:`requests_for`."""
    key = {"Authorization": f"Bearer {data['key']}"}
    return [
        ("floor: ORM key lookup + the rate limiter", {"path": "/floor", "headers": key}),
        ("floor: key lookup with a 20-cue page + the rate limiter + the page as JSON", {
            "path": "/floor-cues", "query_string": "limit=20", "headers": key}),
        ("floor: the user upsert statement alone", {
            "path": f"/floor-upsert/{data['floor_upsert_id']}", "method": "PUT",
            "json": data["floor_upsert_body"]}),
        ("floor: key lookup with the agents + the rate limiter + the message write", {
            "path": "/floor-message", "method": "POST",
            "headers": {**key, "X-Cueapi-From-Agent": data["sender"]},
            "json": {"to": data["receiver"], "body": "floor message"}}),
    ]


def measure_floors(db_url: str, redis_url: str, data: dict, args) -> list[dict]:
    """CPU per request of the floors, in-process like the endpoints (no SQL or Redis counts:
    the floor app has its own engine)."""
    import importlib.util

    saved = {name: os.environ.get(name) for name in ("DATABASE_URL", "RATELIMIT_STORAGE_URI")}
    os.environ.update(DATABASE_URL=db_url, RATELIMIT_STORAGE_URI=redis_url)
    try:
        spec = importlib.util.spec_from_file_location("floor_app", ROOT / "bench" / "floor_app.py")
        floor = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(floor)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    rows = []
    for label, arguments in floor_requests(data):
        if args.only and args.only not in label:
            continue
        call = caller(floor.app, arguments)
        call()
        micros, ratio = cpu_per_request(call, args.requests, args.rounds)
        rows.append({"endpoint": label, "cpu_us": micros, "bare_ratio": ratio})
        print(f"  {label}: {micros:.0f} µs ({ratio:.1f}× a bare route)", file=sys.__stderr__)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="", help="substring filter on endpoint labels")
    parser.add_argument("--profile", default="", help="cProfile the endpoint with this label "
                        "substring and print its top functions")
    parser.add_argument("--spin", type=float, default=0.0, help="after measuring, keep calling "
                        "the endpoints for this many seconds each (for an outside profiler: "
                        "py-spy record -- python bench/request_costs.py --only … --spin 30)")
    parser.add_argument("--no-floors", action="store_true",
                        help="skip the floors of bench/floor_app.py")
    args = parser.parse_args(argv)

    cluster = PostgresCluster().start()
    redis_server = RedisServer().start()
    results = []
    try:
        db_url = cluster.create_database("cueline_costs")
        from flask_migrate import upgrade

        app = build(db_url, redis_server.url)
        with app.app_context():
            upgrade()
        from app.extensions import db

        with app.app_context():
            counter = Counter(db.engine)
        data = seed(app)
        with quiet_stderr():
            for label, arguments in requests_for(data):
                if args.only and args.only not in label:
                    continue
                call = caller(app, arguments)
                call()  # warm: statements built, scripts loaded
                with counter.counting():
                    call()
                sql, redis_calls = list(counter.sql), list(counter.redis)
                micros, ratio = cpu_per_request(call, args.requests, args.rounds)
                results.append({"endpoint": label, "sql": len(sql), "redis": len(redis_calls),
                                "cpu_us": micros, "bare_ratio": ratio, "statements": sql,
                                "redis_calls": [c[:120].decode(errors="replace")
                                                for c in redis_calls]})
                print(f"  {label}: {len(sql)} SQL, {len(redis_calls)} Redis, {micros:.0f} µs "
                      f"({ratio:.1f}× a bare route)",
                      file=sys.__stderr__)
                deadline = time.monotonic() + args.spin
                while time.monotonic() < deadline:
                    call()
                if args.profile and args.profile in label:
                    profiler = cProfile.Profile()
                    profiler.enable()
                    for _ in range(args.requests):
                        call()
                    profiler.disable()
                    out = io.StringIO()
                    stats = pstats.Stats(profiler, stream=out)
                    stats.sort_stats("cumulative").print_stats(60)
                    stats.sort_stats("tottime").print_stats(40)
                    print(out.getvalue(), file=sys.__stderr__)
            if not args.no_floors:
                results += measure_floors(db_url, redis_server.url, data, args)
    finally:
        redis_server.stop()
        cluster.cleanup()

    header = ("In-process, PostgreSQL 15 + Redis limiter + JSON request log (INFO): SQL "
              "statements and Redis round trips per request, CPU µs per request (median of "
              f"{args.rounds} rounds of {args.requests}) and its multiple of a bare Flask route's "
              "CPU measured in the same rounds.")
    table = ["| Endpoint | SQL statements | Redis round trips | CPU µs/request | × bare route |",
             "|---|---:|---:|---:|---:|"]
    table += [f"| {r['endpoint']} | {r.get('sql', '–')} | {r.get('redis', '–')} | "
              f"{r['cpu_us']:.0f} | {r['bare_ratio']:.1f} |" for r in results]
    print(header)
    print("\n".join(table))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"costs-{stamp}.json").write_text(json.dumps(
        {"when": stamp, "machine": machine(), "settings": vars(args), "results": results},
        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
