"""The real ``cueapi`` CLI logs in against a live server.

The ``cueapi`` distribution installs a top-level ``cueapi`` package that clashes with
``cueapi-sdk``'s, so it lives in its own virtualenv: ``make test`` builds ``.venv-cli`` and
points ``CUELINE_CUEAPI_CLI`` at it.  By hand::

    python -m venv .venv-cli && .venv-cli/bin/pip install cueapi==0.2.0
    CUELINE_CUEAPI_CLI=.venv-cli/bin/cueapi .venv/bin/python -m pytest tests/auth/test_cli_login.py
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

CLI = os.environ.get("CUELINE_CUEAPI_CLI", "")

pytestmark = pytest.mark.skipif(
    not (CLI and os.access(CLI, os.X_OK)),
    reason="set CUELINE_CUEAPI_CLI to a cueapi executable installed in a separate virtualenv")


def _read_until(proc: subprocess.Popen, marker: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return line
    proc.kill()
    raise AssertionError(f"CLI never printed {marker!r}: {''.join(seen)}")


def test_cueapi_login_and_whoami(make_app, live_server, mail_log, tmp_path):
    app = make_app()
    server = live_server(app)
    app.config["BASE_URL"] = server.url  # links must reach this server (port known only now)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "BROWSER": "true",
           "CUEAPI_API_BASE": f"{server.url}/v1"}
    proc = subprocess.Popen([CLI, "login"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    try:
        line = _read_until(proc, "visit: ")
        url = line.split("visit: ", 1)[1].strip()
        assert url.startswith(f"{server.url}/auth/device?code=")
        code = parse_qs(urlsplit(url).query)["code"][0]
        with httpx.Client(timeout=10) as http:
            page = http.get(url)
            assert page.status_code == 200 and code in page.text
            sent = http.post(f"{server.url}/v1/auth/device-code/submit-email",
                             json={"device_code": code, "email": "cli@example.com"})
            assert sent.status_code == 200, sent.text
            [link] = mail_log.links()
            assert http.get(link).status_code == 200
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Authenticated as cli@example.com" in output, output
    credentials = json.loads((tmp_path / "config" / "cueapi" / "credentials.json").read_text())
    saved = credentials["default"]
    assert saved["email"] == "cli@example.com" and saved["api_key"] in output
    with httpx.Client(timeout=10) as http:
        me = http.get(f"{server.url}/v1/auth/me",
                      headers={"Authorization": f"Bearer {saved['api_key']}"})
    assert me.status_code == 200 and me.json()["email"] == "cli@example.com"

    whoami = subprocess.run([CLI, "whoami"], capture_output=True, text=True, env=env,
                            timeout=30, check=True)
    assert "cli@example.com" in whoami.stdout, whoami.stdout + whoami.stderr
