"""The benchmark tools: CPU accounting over process trees, round-trip pricing, the floor app."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from bench.http_bench import machine_busy_seconds, tree_cpu_seconds

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

BUSY_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
                          "import time\\nend = time.process_time() + 0.4\\n"
                          "while time.process_time() < end: pass\\ntime.sleep(30)"])
time.sleep(30)
"""


def test_tree_cpu_counts_a_busy_grandchild():
    parent = subprocess.Popen([sys.executable, "-c", BUSY_CHILD], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while tree_cpu_seconds(parent.pid) < 0.4 and time.monotonic() < deadline:
            time.sleep(0.05)
        # The grandchild burnt 0.4 s of CPU; the two interpreters' start-up adds a little.
        assert 0.4 <= tree_cpu_seconds(parent.pid) < 5
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the grandchild too
        parent.wait()


def test_tree_cpu_of_no_process_is_zero():
    assert tree_cpu_seconds(None) == 0.0


def test_machine_busy_time_grows_while_working():
    before = machine_busy_seconds()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert machine_busy_seconds() - before >= 0.15


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to compare placements")
def test_round_trip_costs_price_both_placements_and_restore_affinity(pg_cluster):
    from bench.layers_bench import round_trip_costs

    url = pg_cluster.create_database("cueline_round_trips")
    before = os.sched_getaffinity(0)
    rows = round_trip_costs(url, queries=200)
    assert os.sched_getaffinity(0) == before
    if not rows:  # not allowed to pin the backend (not root): nothing measured, nothing pinned
        return
    assert [row["placement"] for row in rows] == ["same core", "different cores"]
    assert all(0 < row["client_cpu_us"] <= row["wall_us"] * 2 for row in rows)


def _floor_app(url: str):
    """A fresh instance of ``bench/floor_app.py`` on ``url`` (it reads DATABASE_URL on import)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "floor_app.py"
    spec = importlib.util.spec_from_file_location(f"floor_app_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    try:
        spec.loader.exec_module(module)
    finally:
        if previous is None:
            del os.environ["DATABASE_URL"]
        else:
            os.environ["DATABASE_URL"] = previous
    return module


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # PostgreSQL statements
def test_floor_routes_do_their_work(make_app):
    """The benchmark's floors read and write Cueline's tables as the endpoints they bound do."""
    from tests.helpers import key_headers, register

    cueline = make_app()
    client = cueline.test_client()
    key, _ = register(client)
    user = client.get("/v1/auth/me", headers=key_headers(key)).get_json()
    sender, receiver = (client.post("/v1/agents", headers=key_headers(key),
                                    json={"display_name": name}).get_json()["id"]
                        for name in ("Floor sender", "Floor receiver"))
    url = cueline.config["SQLALCHEMY_DATABASE_URI"]
    floor = _floor_app(url).app.test_client()

    read = floor.get("/floor", headers=key_headers(key))
    assert read.status_code == 200 and read.get_json()["id"] == user["id"]
    assert floor.get("/floor", headers=key_headers("cue_sk_" + "0" * 32)).status_code == 401

    for i in range(3):
        assert client.post("/v1/cues", headers=key_headers(key), json={
            "name": f"floor-{i}", "transport": "worker",
            "schedule": {"type": "recurring", "cron": "0 0 1 1 *"},
            "payload": {"i": i}}).status_code == 201
    page = floor.get("/floor-cues?limit=2&offset=1", headers=key_headers(key)).get_json()
    wire = client.get("/v1/cues?limit=2&offset=1", headers=key_headers(key)).get_json()
    # The same cues, in the same order, with the same total and the wire's fields.
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 1)
    assert [c["id"] for c in page["cues"]] == [c["id"] for c in wire["cues"]]
    assert set(page["cues"][0]) == set(wire["cues"][0])
    assert page["cues"][0]["payload"] == wire["cues"][0]["payload"]

    sent = floor.post("/floor-message", headers={**key_headers(key),
                                                 "X-Cueapi-From-Agent": sender},
                      json={"to": receiver, "body": "from the floor"})
    assert sent.status_code == 201, sent.get_json()
    inbox = client.get(f"/v1/agents/{receiver}/inbox", headers=key_headers(key)).get_json()
    assert [m["body"] for m in inbox["messages"]] == ["from the floor"]
    with cueline.app_context():  # with its event, as Cueline's send writes it
        from app.events.models import Event
        from app.extensions import db

        events = db.session.scalars(db.select(Event).where(
            Event.recipient_agent_id == receiver)).all()
        assert [e.payload["message_id"] for e in events] == [inbox["messages"][0]["id"]]
    stranger = floor.post("/floor-message", headers={**key_headers(key),
                                                     "X-Cueapi-From-Agent": "agt_000000000000"},
                          json={"to": receiver, "body": "x"})
    assert stranger.status_code == 404

    upserted = floor.put(f"/floor-upsert/{user['id']}",
                         json={"email": "floor@example.com", "slug": "floor", "plan": "pro"})
    assert upserted.status_code == 200, upserted.get_json()
    me = client.get("/v1/auth/me", headers=key_headers(key)).get_json()
    assert (me["email"], me["slug"], me["plan"]) == ("floor@example.com", "floor", "pro")


def test_slices_merge_into_one_row():
    """Slices of one endpoint: req/s averaged, CPU weighted by requests, errors summed."""
    from bench.http_bench import merge_slices

    def part(rps, requests, app_us, p99, timeouts=0):
        return {"rps": rps, "p50_ms": p99 / 2, "p99_ms": p99, "errors": timeouts, "non_2xx": 0,
                "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": timeouts},
                "requests": requests, "cpu_us_per_request": {
                    "app": app_us, "postgres": None, "redis": 10.0, "machine": app_us * 2}}

    row = merge_slices([part(100, 400, 1000.0, 30.0), part(300, 1200, 2000.0, 10.0, 2),
                        part(200, 800, 1000.0, 20.0)])
    assert row["rps"] == 200 and row["requests"] == 2400
    assert row["p99_ms"] == 20.0 and row["p50_ms"] == 10.0  # the median slice's
    assert row["errors"] == 2 and row["socket_errors"]["timeout"] == 2
    cpu = row["cpu_us_per_request"]
    assert cpu["app"] == pytest.approx((400 * 1000 + 1200 * 2000 + 800 * 1000) / 2400)
    assert cpu["postgres"] is None and cpu["redis"] == pytest.approx(10.0)
    assert row["slices_rps"] == [100, 300, 200]
