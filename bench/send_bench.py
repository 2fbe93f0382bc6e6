"""What one ``POST /v1/messages`` costs in-process: CPU, wall time and database statements.

The WSGI app is called directly (no HTTP server), with a prebuilt request, on a throwaway
PostgreSQL cluster on loopback and on a SQLite file.  For each backend it reports the median
over ``--rounds`` rounds of ``--sends`` sends of: client CPU µs per send (Flask, SQLAlchemy,
the driver), wall µs per send (CPU plus waiting for the database) and the statements sent to
the database per send (round trips; ``BEGIN``/``COMMIT`` count where a transaction is used).

Run it on two commits to price a change to the send path:
``python bench/send_bench.py --rounds 5 --sends 400``.  Results land in ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import event  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from app import create_app  # noqa: E402
from bench.http_bench import RESULTS, machine  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402


def _app(url: str, notify: bool = True):
    from flask_migrate import upgrade
    from sqlalchemy import text

    app = create_app({"ENV": "test", "DATABASE_URL": url, "RATELIMIT_ENABLED": False,
                      "DISABLE_QUOTA_ENFORCEMENT": True, "LOG_LEVEL": "WARNING"})
    with app.app_context():
        upgrade()
        if not notify:  # price the long-poll notification on its own
            from app.extensions import db

            db.session.execute(text("ALTER TABLE events DISABLE TRIGGER events_notify"))
            db.session.commit()
    return app


def _setup(app) -> tuple[dict, str, str]:
    client = app.test_client()
    key = client.post("/v1/auth/register", json={"email": "bench@example.com"}).get_json()[
        "api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    sender = client.post("/v1/agents", headers=headers, json={"display_name": "S"}).get_json()
    recipient = client.post("/v1/agents", headers=headers, json={"display_name": "R"}).get_json()
    return headers, sender["id"], recipient["id"]


def measure(app, sends: int, rounds: int) -> dict:
    """Median CPU µs, wall µs and statements per send."""
    headers, sender, recipient = _setup(app)
    environ = EnvironBuilder(path="/v1/messages", method="POST",
                             headers={**headers, "X-Cueapi-From-Agent": sender},
                             json={"to": recipient, "body": "hello " * 20,
                                   "subject": "bench"}).get_environ()
    body = environ["wsgi.input"].read()
    statements = [0]
    with app.app_context():
        from app.extensions import db

        engine = db.engine

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_args):
        statements[0] += 1

    def start_response(status, _headers, _exc_info=None):
        assert status.startswith("201"), status

    def call():
        import io

        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(body)
        result = app.wsgi_app(env, start_response)
        b"".join(result)
        if hasattr(result, "close"):
            result.close()

    for _ in range(max(sends // 10, 5)):
        call()
    cpu, wall, counts = [], [], []
    for _ in range(rounds):
        statements[0] = 0
        started_cpu, started = time.process_time(), time.perf_counter()
        for _ in range(sends):
            call()
        cpu.append((time.process_time() - started_cpu) / sends * 1e6)
        wall.append((time.perf_counter() - started) / sends * 1e6)
        counts.append(statements[0] / sends)
    return {"cpu_us": round(statistics.median(cpu)), "wall_us": round(statistics.median(wall)),
            "statements": round(statistics.median(counts), 2),
            "cpu_range": [round(min(cpu)), round(max(cpu))]}


class _Done(Exception):
    """--postgresql-only: skip the SQLite run."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--label", default="")
    parser.add_argument("--no-notify", action="store_true",
                        help="PostgreSQL: disable the events NOTIFY trigger")
    parser.add_argument("--postgresql-only", action="store_true")
    args = parser.parse_args(argv)
    results = {}
    cluster = PostgresCluster()
    cluster.start()
    try:
        results["postgresql"] = measure(
            _app(cluster.create_database("send_bench"), notify=not args.no_notify),
            args.sends, args.rounds)
        with tempfile.TemporaryDirectory() as tmp:
            if args.postgresql_only:
                raise _Done
            results["sqlite"] = measure(_app(f"sqlite:///{tmp}/bench.db"), args.sends,
                                        args.rounds)
    except _Done:
        pass
    finally:
        cluster.cleanup()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"send-{stamp}.json"
    out.write_text(json.dumps({"label": args.label, "machine": machine(), "sends": args.sends,
                               "rounds": args.rounds, "results": results}, indent=2))
    for backend, row in results.items():
        print(f"{backend:10s} cpu {row['cpu_us']:>6} µs (range {row['cpu_range']})  "
              f"wall {row['wall_us']:>6} µs  statements/send {row['statements']}")
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
