"""Batched webhook delivery: the dispatcher job with its delivery pool, results recorded per
batch, and the scheduler waking at the next cue's ``next_run``."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.extensions import db
from app.quotas.cues import month_key
from app.scheduling import jobs
from app.scheduling.delivery import prepare_attempts, record_attempts, send_attempt
from app.scheduling.models import Cue, Execution, ExecutionUsage
from app.worker import Job
from app.worker.loop import DeliveryPool, JobContext, Worker
from tests.helpers import key_headers, register, user_id_of
from tests.scheduling.conftest import cue_body


@pytest.fixture
def app(make_app):
    return make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)


@pytest.fixture
def account(app, client):
    api_key, _ = register(client)
    return key_headers(api_key), uuid.UUID(user_id_of(client, api_key))


def _fired_cues(client, account, url: str, count: int) -> list[str]:
    """``count`` cues calling ``url``, each fired once by hand (one pending execution each)."""
    ids = []
    for i in range(count):
        response = client.post("/v1/cues", json=cue_body(name=f"cue-{i}", callback={"url": url}),
                               headers=account[0])
        assert response.status_code == 201, response.get_json()
        ids.append(response.get_json()["id"])
        assert client.post(f"/v1/cues/{ids[-1]}/fire", headers=account[0]).status_code in (
            200, 201, 202)
    return ids


def _statuses(app) -> dict[str, str]:
    with app.app_context():
        return {cue_id: status for cue_id, status in
                db.session.execute(db.select(Execution.cue_id, Execution.status))}


def test_a_batch_is_recorded_once_and_a_lost_claim_is_discarded(app, client, account, receiver):
    cue_ids = _fired_cues(client, account, receiver.url, 3)
    now = datetime.now(UTC)
    with app.app_context():
        claims = jobs.claim_webhook_executions(now, 10)
        attempts, outcomes = prepare_attempts(claims, now)
        assert len(attempts) == 3 and all(status is None for status in outcomes.values())
        results = [(attempt, send_attempt(attempt), now) for attempt in attempts]
        # Meanwhile one claim is lost (here: released, as a shutdown would).
        lost = attempts[0]
        assert jobs.release_webhook_claims([(lost.execution_id, lost.claimed_at)], now) == 1
        statuses = record_attempts(results)
    assert statuses[lost.execution_id] is None
    assert sorted(s for s in statuses.values() if s) == ["success", "success"]
    assert len(receiver.requests) == 3
    by_cue = _statuses(app)
    assert by_cue[lost.cue_id] == "retry_ready"
    with app.app_context():
        runs = dict(db.session.execute(db.select(Cue.id, Cue.run_count)).all())
        usage = db.session.get(ExecutionUsage, (account[1], month_key(now)))
    assert runs[lost.cue_id] == 0
    assert sorted(runs[cue_id] for cue_id in cue_ids if cue_id != lost.cue_id) == [1, 1]
    assert usage.executions == 2


def test_dispatch_job_delivers_a_backlog_through_the_pool(app, client, account, receiver):
    _fired_cues(client, account, receiver.url, 7)
    pool = DeliveryPool(app, 4)
    ctx = JobContext(app, pool, threading.Event())
    try:
        deadline = time.monotonic() + 20
        with app.app_context():
            while time.monotonic() < deadline:
                jobs.dispatch_webhooks(ctx)
                pool.wait_idle(5)
                if not ctx.state["webhooks_in_flight"]:
                    break
    finally:
        pool.close()
    assert set(_statuses(app).values()) == {"success"}
    ids = [request["headers"]["X-CueAPI-Execution-Id"] for request in receiver.requests]
    assert len(ids) == 7 and len(set(ids)) == 7  # each delivered exactly once


def test_shutdown_records_finished_deliveries_and_releases_the_rest(app, client, account,
                                                                    receiver):
    _fired_cues(client, account, receiver.url, 2)
    now = datetime.now(UTC)
    pool = DeliveryPool(app, 2)
    ctx = JobContext(app, pool, threading.Event())
    try:
        with app.app_context():
            claims = jobs.claim_webhook_executions(now, 10)
            attempts, _ = prepare_attempts(claims, now)
            ctx.state["webhooks_in_flight"] = set(claims)
            finished = attempts[0]
            ctx.state["webhook_results"] = jobs.deque(
                [(finished, send_attempt(finished), now)])
            ctx.stopping.set()
            jobs._release_on_shutdown(ctx)
    finally:
        pool.close()
    assert sorted(_statuses(app).values()) == ["retry_ready", "success"]
    assert _statuses(app)[finished.cue_id] == "success"
    assert not ctx.state["webhooks_in_flight"]


class _Ctx:
    def __init__(self, now):
        self._now, self.stopping, self.state, self.wake_in = now, threading.Event(), {}, None

    def now(self):
        return self._now

    def run_again_in(self, seconds):
        self.wake_in = seconds

    def wake(self, job_name):
        self.woken = {*getattr(self, "woken", ()), job_name}


def test_scheduler_wakes_for_a_cue_due_before_the_next_poll(app, client, account):
    response = client.post("/v1/cues", json=cue_body(), headers=account[0])
    cue_id = response.get_json()["id"]
    now = datetime.now(UTC)
    with app.app_context():
        db.session.get(Cue, cue_id).next_run = now + timedelta(seconds=0.2)
        db.session.commit()
        ctx = _Ctx(now)
        assert jobs.run_scheduler(ctx) == 0
        assert ctx.wake_in == pytest.approx(0.2, abs=0.01)
        ctx = _Ctx(now + timedelta(seconds=0.2))
        assert jobs.run_scheduler(ctx) == 1  # fired on time, not a poll interval later


wake_calls: list[float] = []


def _early_job(ctx) -> int:
    wake_calls.append(time.monotonic())
    ctx.run_again_in(0.05)
    return 0


def test_loop_runs_a_job_again_when_it_asks_to(make_app):
    app = make_app(POLLER_INTERVAL_SECONDS=30, DISABLE_CUE_PRIMITIVE=True)
    wake_calls.clear()
    worker = Worker(app, jobs=(Job("early", f"{__name__}:_early_job"),))
    thread = threading.Thread(target=worker.run)
    thread.start()
    time.sleep(0.5)
    worker.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert len(wake_calls) >= 3  # not once per 30 s interval


def test_pool_room_counts_the_queue_a_job_may_fill(app):
    pool = DeliveryPool(app, 2)
    gate = threading.Event()
    try:
        assert pool.room() == 2
        pool.queue_ahead = 2
        for _ in range(3):
            pool.submit(gate.wait, 5)
        assert pool.free_slots() == 0 and pool.room() == 1
        gate.set()
        assert pool.wait_idle(5) and pool.room() == 4
    finally:
        pool.close()


def _finish(pool: DeliveryPool, gate: threading.Event, busy: int) -> None:
    """Let one gated task finish and wait until the pool counts it done."""
    gate.set()
    deadline = time.monotonic() + 5
    while pool.room() - pool.queue_ahead != pool.size - busy and time.monotonic() < deadline:
        time.sleep(0.001)
    assert pool.room() - pool.queue_ahead == pool.size - busy


def test_pool_wakes_the_loop_when_there_is_something_to_do_not_on_every_finish(app):
    pool = DeliveryPool(app, 4)
    gates = [threading.Event() for _ in range(8)]
    try:
        # A roomy pool: one of two deliveries finishing is no reason to wake; both are.
        pool.submit(gates[0].wait, 5)
        pool.submit(gates[1].wait, 5)
        _finish(pool, gates[0], busy=1)
        assert not pool._slot_freed.is_set()
        _finish(pool, gates[1], busy=0)
        assert pool._slot_freed.is_set()
        pool.wait_for_slot(0)
        # A full pool: the first thread to come free wakes it (a job found none).
        for gate in gates[2:6]:
            pool.submit(gate.wait, 5)
        assert pool.free_slots() == 0
        _finish(pool, gates[2], busy=3)
        assert pool._slot_freed.is_set()
        pool.wait_for_slot(0)
        _finish(pool, gates[3], busy=2)
        assert not pool._slot_freed.is_set()
        # The room rising to the threshold wakes it.
        pool.wake_threshold = 3
        _finish(pool, gates[4], busy=1)
        assert pool._slot_freed.is_set()
    finally:
        for gate in gates:
            gate.set()
        pool.close()


loop_calls: dict[str, int] = {}


def _busy_job(ctx) -> int:
    loop_calls["busy"] = loop_calls.get("busy", 0) + 1
    if loop_calls["busy"] == 2:
        ctx.run_again_in(30)  # did work, yet asks not to run again at once
        ctx.wake("woken")
    return 1


def _woken_job(ctx) -> int:
    loop_calls["woken"] = loop_calls.get("woken", 0) + 1
    return 0


def test_loop_honours_run_again_in_after_work_and_runs_a_woken_job(make_app):
    app = make_app(POLLER_INTERVAL_SECONDS=30, DISABLE_CUE_PRIMITIVE=True)
    loop_calls.clear()
    worker = Worker(app, jobs=(Job("busy", f"{__name__}:_busy_job"),
                               Job("woken", f"{__name__}:_woken_job")))
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + 10
    while loop_calls.get("woken", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    thread.join(5)
    assert not thread.is_alive()
    # "woken" ran at the first turn and again when woken, not after its 30 s interval; "busy"
    # ran twice (work → at once), then waited as asked.
    assert loop_calls == {"busy": 2, "woken": 2}


def test_scheduler_paces_its_passes_while_cues_keep_falling_due(app, client, account):
    now = datetime.now(UTC)
    ids = []
    for i in range(3):
        response = client.post("/v1/cues", json=cue_body(name=f"pace-{i}"), headers=account[0])
        ids.append(response.get_json()["id"])
    pace = jobs.SCHEDULER_PACE_SECONDS
    with app.app_context():
        # Due now, 10 ms later, and alone a second later.
        for cue_id, offset in zip(ids, (0.0, 0.01, 1.0), strict=True):
            db.session.get(Cue, cue_id).next_run = now + timedelta(seconds=offset)
        db.session.commit()
        ctx = _Ctx(now)
        started = time.monotonic()
        assert jobs.run_scheduler(ctx) == 1
        took = time.monotonic() - started
        # The next cue is due in 10 ms, but the pass fired one: the next pass starts a pace
        # after this one began, not sooner.
        assert ctx.wake_in is not None and max(pace - took, 0.01) <= ctx.wake_in <= pace
        assert ctx.woken == {"webhook_delivery"} and ctx.state["webhooks_created"]
        ctx._now, ctx.wake_in = now + timedelta(seconds=pace), None
        assert jobs.run_scheduler(ctx) == 1  # the second, at most the pace late
        # The third is alone: it is woken for at its due instant.
        assert ctx.wake_in == pytest.approx(1.0 - pace, abs=1e-6)


def test_dispatcher_claims_again_before_the_poll_only_for_new_executions(make_app, receiver):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True, POLLER_INTERVAL_SECONDS=30)
    client = app.test_client()
    headers = key_headers(register(client)[0])
    account = (headers, None)
    _fired_cues(client, account, receiver.url, 1)
    pool = DeliveryPool(app, 4)
    ctx = JobContext(app, pool, threading.Event())
    try:
        with app.app_context():
            assert jobs.dispatch_webhooks(ctx) == 1  # claimed all there was: drained
            assert pool.wait_idle(5)
            assert jobs.dispatch_webhooks(ctx) == 1  # recorded it
            cue = client.post("/v1/cues", json=cue_body(name="late", callback={
                "url": receiver.url}), headers=headers).get_json()["id"]
            assert client.post(f"/v1/cues/{cue}/fire", headers=headers).status_code in (
                200, 201, 202)
            # Not claimed before the poll interval ends: nothing this process created.
            assert jobs.dispatch_webhooks(ctx) == 0
            assert sorted(_statuses(app).values()) == ["pending", "success"]
            ctx.state["webhooks_created"] = True  # as the scheduler says after firing
            assert jobs.dispatch_webhooks(ctx) == 1
            assert pool.wait_idle(5)
            jobs.dispatch_webhooks(ctx)
    finally:
        pool.close()
    assert sorted(_statuses(app).values()) == ["success", "success"]
