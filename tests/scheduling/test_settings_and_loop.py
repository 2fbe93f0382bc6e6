"""Scheduling settings validation, the JOBS table and the worker loop's mechanics."""

from __future__ import annotations

import threading
import time

import pytest

from app.worker import JOBS, Job
from app.worker.loop import DeliveryPool, Worker
from config import load_config, validate
from tests.helpers import key_headers, register
from tests.scheduling.conftest import cue_body


@pytest.mark.parametrize("overrides,fragment", [
    ({"EXECUTION_STALE_AFTER_SECONDS": 30, "WEBHOOK_TIMEOUT_SECONDS": 30},
     "EXECUTION_STALE_AFTER_SECONDS must be longer"),
    ({"POLLER_MAX_CATCH_UP_SLOTS": 0}, "POLLER_MAX_CATCH_UP_SLOTS"),
    ({"POLLER_INTERVAL_SECONDS": 0}, "POLLER_INTERVAL_SECONDS"),
    ({"WEBHOOK_TIMEOUT_SECONDS": -1}, "WEBHOOK_TIMEOUT_SECONDS"),
    ({"DELIVERY_CONCURRENCY": 0}, "DELIVERY_CONCURRENCY"),
    ({"WORKER_CLAIM_TIMEOUT_SECONDS": 0}, "WORKER_CLAIM_TIMEOUT_SECONDS"),
    ({"WORKER_SHUTDOWN_GRACE_SECONDS": -1}, "WORKER_SHUTDOWN_GRACE_SECONDS"),
])
def test_unsafe_scheduling_settings_are_refused(overrides, fragment):
    problems = validate(load_config({}, env_file=None, **overrides))
    assert any(fragment in p for p in problems), problems


def test_defaults_are_valid_and_typed():
    values = load_config({"ALLOW_PRIVATE_CALLBACK_URLS": "yes",
                          "POLLER_INTERVAL_SECONDS": "0.25"}, env_file=None)
    assert values["ALLOW_PRIVATE_CALLBACK_URLS"] is True
    assert values["POLLER_INTERVAL_SECONDS"] == 0.25
    assert validate(values) == []


def test_development_allows_http_callbacks(make_app):
    client = make_app(ENV="development").test_client()
    api_key, _ = register(client)
    # A global literal: saved, never called (no worker runs here).
    response = client.post("/v1/cues", json=cue_body(callback={"url": "http://93.184.216.34/x"}),
                           headers=key_headers(api_key))
    assert response.status_code == 201


def test_private_callbacks_need_the_setting(make_app):
    for allowed in (False, True):
        client = make_app(ALLOW_PRIVATE_CALLBACK_URLS=allowed).test_client()
        api_key, _ = register(client)
        response = client.post("/v1/cues", json=cue_body(
            callback={"url": "http://127.0.0.1:8080/hook"}), headers=key_headers(api_key))
        assert response.status_code == (201 if allowed else 400)


def test_job_table_flags_and_intervals():
    names = {job.name for job in JOBS}
    assert {"scheduler", "webhook_delivery", "execution_sweeps"} <= names
    config = {"DISABLE_CUE_PRIMITIVE": True, "POLLER_INTERVAL_SECONDS": 0.3, "X": False}
    scheduler = next(job for job in JOBS if job.name == "scheduler")
    assert not scheduler.enabled(config)
    assert scheduler.enabled({**config, "DISABLE_CUE_PRIMITIVE": False})
    assert scheduler.interval_seconds(config) == 0.3
    assert Job("j", "m:f", interval=7, requires="X").interval_seconds(config) == 7.0
    assert not Job("j", "m:f", requires="X").enabled(config)


calls: list[str] = []


def _counting_job(ctx) -> int:
    calls.append("run")
    return 1 if len(calls) < 3 else 0  # work twice, then idle


def _failing_job(ctx) -> int:
    raise RuntimeError("boom")


def test_loop_drains_backlog_and_survives_failing_jobs(make_app):
    app = make_app(POLLER_INTERVAL_SECONDS=30, DISABLE_CUE_PRIMITIVE=True)
    calls.clear()
    module = __name__
    worker = Worker(app, jobs=(Job("count", f"{module}:_counting_job"),
                               Job("fail", f"{module}:_failing_job"),
                               Job("off", f"{module}:_counting_job",
                                   disabled_by="DISABLE_CUE_PRIMITIVE")))
    assert [job.name for job, _, _ in worker.jobs] == ["count", "fail"]
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    worker.stop()
    thread.join(5)
    assert not thread.is_alive()
    # Work found → ran again at once; idle → waits the 30 s interval.
    assert len(calls) == 3


def test_delivery_pool_bounds_and_waits(app):
    pool = DeliveryPool(app, 2)
    gate = threading.Event()
    done = []
    for i in range(2):
        pool.submit(lambda i=i: (gate.wait(5), done.append(i)))
    time.sleep(0.05)
    assert pool.free_slots() == 0
    assert pool.wait_idle(0.1) is False
    gate.set()
    assert pool.wait_idle(5) is True and sorted(done) == [0, 1]
    assert pool.free_slots() == 2
    pool.submit(lambda: 1 / 0)  # a failing task neither kills the pool nor leaks a slot
    assert pool.wait_idle(5) and pool.free_slots() == 2
    pool.close()


def test_dispatch_registers_its_release_once(app):
    from app.scheduling.jobs import dispatch_webhooks
    from app.worker.loop import JobContext

    pool = DeliveryPool(app, 1)
    ctx = JobContext(app, pool, threading.Event())
    with app.app_context():
        for _ in range(3):
            dispatch_webhooks(ctx)
    assert len(ctx._releases) == 1
    pool.close()
