"""Real clients against a real server: ``cueapi-sdk`` 0.1.3 and the ``cueapi-worker`` 0.3.0
daemon, talking HTTP to the app on 127.0.0.1, and a webhook delivered by the real worker loop
to a local receiver and verified with the SDK's ``verify_webhook``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cueapi import CueAPI, CueNotFoundError, InvalidScheduleError, verify_webhook

from app.extensions import db
from app.users.models import User
from app.worker.loop import Worker
from tests.helpers import register

WORKER_BIN = Path(sys.executable).parent / "cueapi-worker"


@pytest.fixture
def server_app(make_app):
    return make_app(ALLOW_PRIVATE_CALLBACK_URLS=True, POLLER_INTERVAL_SECONDS=0.2)


@pytest.fixture
def sdk(server_app, live_server):
    server = live_server(server_app)
    api_key, _ = register(server_app.test_client())
    client = CueAPI(api_key, base_url=server.url, timeout=10)
    client.url, client.key = server.url, api_key
    yield client
    client.close()


def test_sdk_cue_lifecycle(sdk):
    at = datetime.now(UTC) + timedelta(hours=1)
    once = sdk.cues.create("one-off", at=at, callback="https://192.0.2.10/hook",
                           payload={"a": 1}, retry={"max_attempts": 2, "backoff_minutes": [1]},
                           on_failure={"email": False, "pause": False})
    assert once.id.startswith("cue_") and once.schedule.type == "once"
    assert abs(once.schedule.at - at) < timedelta(seconds=1)
    assert once.retry.max_attempts == 2 and once.on_failure.email is False
    recurring = sdk.cues.create("daily", cron="0 9 * * *", timezone="Europe/Paris",
                                callback="https://192.0.2.10/hook",
                                callback_headers={"X-Team": "ops"})
    assert recurring.callback.headers == {"X-Team": "ops"} and recurring.next_run is not None

    listing = sdk.cues.list()
    assert listing.total == 2 and {c.id for c in listing.cues} == {once.id, recurring.id}
    assert sdk.cues.get(recurring.id).schedule.timezone == "Europe/Paris"

    updated = sdk.cues.update(recurring.id, name="daily-renamed",
                              callback="https://192.0.2.11/hook")
    assert updated.name == "daily-renamed"
    assert updated.callback.url == "https://192.0.2.11/hook" and updated.callback.headers == {}
    paused = sdk.cues.pause(recurring.id)
    assert paused.status == "paused" and paused.next_run is None
    resumed = sdk.cues.resume(recurring.id)
    assert resumed.status == "active" and resumed.next_run is not None
    assert sdk.cues.list(status="paused").total == 0

    with pytest.raises(InvalidScheduleError) as info:
        sdk.cues.create("bad", cron="every day", callback="https://192.0.2.10/hook")
    assert info.value.code == "invalid_schedule"
    sdk.cues.delete(once.id)
    with pytest.raises(CueNotFoundError):
        sdk.cues.get(once.id)


def test_sdk_executions_and_outcomes(sdk):
    cue = sdk.cues.create("pull", cron="0 9 * * *", transport="worker",
                          payload={"task": "report"})
    fired = httpx.post(f"{sdk.url}/v1/cues/{cue.id}/fire",
                       headers={"Authorization": f"Bearer {sdk.key}"}).json()
    listing = sdk.executions.list(cue_id=cue.id, triggered_by="manual_fire")
    assert listing["total"] == 1 and listing["executions"][0]["id"] == fired["id"]
    assert sdk.executions.get(fired["id"])["status"] == "pending"
    with sdk.executions.handle(fired["id"], payload={"task": "report"}) as ctx:
        ctx.result = "42 rows"
    execution = sdk.executions.get(fired["id"])
    assert execution["outcome"]["success"] is True and execution["outcome"]["result"] == "42 rows"
    assert execution["status"] == "success"
    assert sdk.executions.mark_verification_pending(fired["id"])["outcome_state"] == \
        "verification_pending"
    assert sdk.executions.mark_verified(fired["id"])["outcome_state"] == "verified_success"
    second = httpx.post(f"{sdk.url}/v1/cues/{cue.id}/fire",
                        headers={"Authorization": f"Bearer {sdk.key}"}).json()
    result = sdk.executions.report_outcome(second["id"], success=False, error="disk full",
                                           metadata={"disk": "/"})
    assert result["outcome_state"] == "reported_failure"
    assert sdk.executions.list(status="failed")["total"] == 1


def test_real_worker_loop_delivers_a_webhook_the_sdk_verifies(server_app, sdk, receiver):
    cue = sdk.cues.create("every-second", cron="* * * * * *", callback=receiver.url,
                          payload={"greeting": "héllo"})
    worker = Worker(server_app)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while len(receiver.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(15)
    assert not thread.is_alive()
    assert len(receiver.requests) >= 2
    with server_app.app_context():
        secret = db.session.scalar(db.select(User.webhook_secret))
    for request in receiver.requests:
        headers = request["headers"]
        assert verify_webhook(request["body"], headers["X-CueAPI-Signature"], secret,
                              headers["X-CueAPI-Timestamp"])
        assert verify_webhook(json.loads(request["body"]), headers["X-CueAPI-Signature"],
                              secret, headers["X-CueAPI-Timestamp"])
        assert not verify_webhook(request["body"], headers["X-CueAPI-Signature"],
                                  "whsec_" + "0" * 64, headers["X-CueAPI-Timestamp"])
        assert json.loads(request["body"])["cue_id"] == cue.id
    # Nothing is left claimed after the loop stopped.
    listing = sdk.executions.list(cue_id=cue.id, status="delivering")
    assert listing["total"] == 0
    assert sdk.cues.get(cue.id).fired_count >= 2


def test_cueapi_worker_daemon_claims_and_reports(sdk, tmp_path):
    cue = sdk.cues.create("nightly-report", cron="0 3 * * *", transport="worker",
                          payload={"task": "report", "day": "mon"})
    marker = tmp_path / "ran.txt"
    config = tmp_path / "worker.yaml"
    worker_id = f"daemon-{uuid.uuid4().hex[:6]}"
    handler = (f"{sys.executable} -c \"import os, json; "
               f"open({str(marker)!r}, 'w').write(os.environ['CUEAPI_EXECUTION_ID']); "
               "json.dump({'success': True, 'result': 'report sent', 'external_id': 'R-1'}, "
               "open(os.environ['CUEAPI_OUTCOME_FILE'], 'w'))\"")
    config.write_text(json.dumps({
        "api_key": sdk.key, "api_base": sdk.url, "worker_id": worker_id, "poll_interval": 1,
        "heartbeat_interval": 1, "max_concurrent": 1, "handlers": {"report": {"cmd": handler}},
    }))  # JSON is valid YAML
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUEAPI")}
    env["HOME"] = str(tmp_path)  # no user-level service files or credentials
    process = subprocess.Popen([str(WORKER_BIN), "start", "-c", str(config)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        fired = httpx.post(f"{sdk.url}/v1/cues/{cue.id}/fire",
                           headers={"Authorization": f"Bearer {sdk.key}"}).json()
        deadline = time.monotonic() + 30
        execution = None
        while time.monotonic() < deadline:
            execution = sdk.executions.get(fired["id"])
            if execution["status"] == "success":
                break
            time.sleep(0.3)
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert execution and execution["status"] == "success", output[-3000:]
    assert marker.read_text() == fired["id"]
    assert execution["outcome"]["success"] is True
    assert execution["attempts"] == 1
    workers = httpx.get(f"{sdk.url}/v1/workers",
                        headers={"Authorization": f"Bearer {sdk.key}"}).json()["workers"]
    assert [w["worker_id"] for w in workers] == [worker_id]
    assert workers[0]["handlers"] == ["report"]
    listed = sdk.executions.list(cue_id=cue.id)
    assert listed["executions"][0]["status"] == "success"
