"""What request metrics cost: ``GET /v1/auth/me`` by key, in-process, metrics on and off.

The WSGI app is called directly through Flask's test client (no server), on a SQLite file, in
alternating rounds so drift on a shared machine hits both sides alike; the figure is CPU time
(``time.process_time``) per request.  Run: ``.venv/bin/python bench/metrics_bench.py``.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from app import create_app  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "6"))
REQUESTS = int(os.environ.get("REQUESTS", "3000"))


def _app(url: str, metrics: bool):
    app = create_app({"ENV": "test", "DATABASE_URL": url, "RATELIMIT_ENABLED": False,
                      "LOG_LEVEL": "WARNING", "METRICS_ENABLED": metrics})
    return app


def main() -> None:
    logging.disable(logging.CRITICAL)
    directory = tempfile.mkdtemp()
    url = f"sqlite:///{directory}/bench.db"
    setup = _app(url, False)
    with setup.app_context():
        from flask_migrate import upgrade

        upgrade()
    key = setup.test_client().post("/v1/auth/register",
                                   json={"email": "bench@example.com"}).get_json()["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    clients = {False: _app(url, False).test_client(), True: _app(url, True).test_client()}
    per_request: dict[bool, list[float]] = {False: [], True: []}
    for client in clients.values():  # warm up: statement caches, labelled children
        for _ in range(200):
            assert client.get("/v1/auth/me", headers=headers).status_code == 200
    for _ in range(ROUNDS):
        for metrics in (False, True):
            client = clients[metrics]
            started = time.process_time()
            for _ in range(REQUESTS):
                client.get("/v1/auth/me", headers=headers)
            per_request[metrics].append((time.process_time() - started) / REQUESTS * 1e6)
    off, on = statistics.median(per_request[False]), statistics.median(per_request[True])
    print(f"GET /v1/auth/me in-process, {ROUNDS} alternating rounds of {REQUESTS} requests")
    print(f"  metrics off: {off:.1f} µs/request (rounds: "
          f"{', '.join(f'{v:.0f}' for v in per_request[False])})")
    print(f"  metrics on:  {on:.1f} µs/request (rounds: "
          f"{', '.join(f'{v:.0f}' for v in per_request[True])})")
    print(f"  difference: {on - off:.1f} µs/request (median of rounds; the noise of this "
          "machine is larger than the hook)")
    print(f"  the hook alone: {_hook_cost(clients[True].application):.2f} µs/request")


def _hook_cost(app, calls: int = 200_000) -> float:
    """CPU time of the metrics ``after_request`` hook itself, per call, inside a request."""
    from flask import Response, g

    from app.metrics import _record_request

    response = Response(status=200)
    with app.test_request_context("/v1/auth/me"):
        app.url_map.bind("localhost").match("/v1/auth/me")
        from flask import request

        request.url_rule = next(r for r in app.url_map.iter_rules() if r.rule == "/v1/auth/me")
        g.request_started = time.perf_counter()
        started = time.process_time()
        for _ in range(calls):
            _record_request(response)
        return (time.process_time() - started) / calls * 1e6


if __name__ == "__main__":
    main()
