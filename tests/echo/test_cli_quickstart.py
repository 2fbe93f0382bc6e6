"""The real ``cueapi`` CLI 0.2.0's ``quickstart`` against a live Cueline with its worker running.

The CLI creates a ``once`` cue 15 s ahead whose callback is ``<api base>/echo/qs-<16 hex>``,
polls ``GET /echo/<token>`` until the delivery shows up, prints the payload and deletes the cue.
The callback is a loopback ``http`` URL, so the server runs with
``ALLOW_PRIVATE_CALLBACK_URLS=true`` (``ENV=test`` otherwise accepts only public ``https``
callbacks).  Needs ``CUELINE_CUEAPI_CLI`` (see tests/auth/test_cli_login.py).
"""

from __future__ import annotations

import os
import subprocess
import threading

import httpx
import pytest

from app.worker import Job
from app.worker.loop import Worker
from tests.helpers import key_headers, register

CLI = os.environ.get("CUELINE_CUEAPI_CLI", "")

pytestmark = pytest.mark.skipif(
    not (CLI and os.access(CLI, os.X_OK)),
    reason="set CUELINE_CUEAPI_CLI to a cueapi executable installed in a separate virtualenv")

#: The two jobs a cue webhook needs: the scheduler fires the cue, the dispatcher delivers it.
JOBS = (Job("scheduler", "app.scheduling.jobs:run_scheduler"),
        Job("webhook_delivery", "app.scheduling.jobs:dispatch_webhooks"))


def test_cueapi_quickstart_end_to_end(make_app, live_server, tmp_path):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True, POLLER_INTERVAL_SECONDS=0.2)
    server = live_server(app)
    api_key, _ = register(app.test_client())
    worker = Worker(app, jobs=JOBS)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "CUEAPI_API_KEY": api_key,
           "CUEAPI_API_BASE": f"{server.url}/v1"}
    try:
        result = subprocess.run([CLI, "quickstart"], capture_output=True, text=True, env=env,
                                timeout=120)
    finally:
        worker.stop()
        thread.join(30)
    output = result.stdout + result.stderr
    assert "Callback delivered!" in output, output
    assert "Your first cue! CueAPI is working." in output  # the cue's payload, echoed back
    assert "Deleted." in output and "Timed out" not in output, output
    with httpx.Client(timeout=10) as http:
        cues = http.get(f"{server.url}/v1/cues", headers=key_headers(api_key)).json()
    assert cues["total"] == 0  # the quickstart cleaned up after itself
