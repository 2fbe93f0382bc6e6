"""docs/clients.md works as written: its snippets are read from the page itself (so page and test
cannot drift) and run against a live server — the ``cueapi-worker`` YAML and handler with the
real daemon, the shell commands with the real ``cueapi`` CLI, both Python SDK examples.

Only the address (``http://127.0.0.1:8000`` → the test server) and the key (``cue_sk_…`` → a
real one) are replaced.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import key_headers, register

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "clients.md").read_text()
DOC_ADDRESS = "http://127.0.0.1:8000"
DOC_KEY = "cue_sk_…"
WORKER_BIN = Path(sys.executable).parent / "cueapi-worker"
CLI = os.environ.get("CUELINE_CUEAPI_CLI", "")


def snippet(name: str) -> str:
    """The fenced block following ``<!-- doc-test: name -->`` in docs/clients.md."""
    match = re.search(rf"<!-- doc-test: {re.escape(name)} -->\n```\w*\n(.*?)\n```", DOC, re.S)
    assert match, f"docs/clients.md has no doc-test block {name!r}"
    return match.group(1)


def _as_written(text: str, url: str, key: str) -> str:
    assert DOC_ADDRESS in text and DOC_KEY in text
    return text.replace(DOC_ADDRESS, url).replace(DOC_KEY, key)


@pytest.fixture
def served(make_app, live_server):
    app = make_app()
    server = live_server(app)
    key, _ = register(app.test_client(), "clients-doc@example.com")
    return server.url, key


def _clean_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUEAPI")}
    env.update({"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
                "PYTHONUNBUFFERED": "1"})
    return env


def test_every_client_section_warns_about_the_hosted_default():
    for section in ("The Python SDK", "The worker daemon", "The command line", "The MCP server"):
        body = DOC.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
        assert "hosted service" in body, section
    own = DOC.split("## Cueline's own SDK", 1)[1]
    assert "does not default to the\nhosted service" in own or "not default" in own


def test_sdk_snippet_runs(served, tmp_path):
    url, key = served
    code = _as_written(snippet("sdk"), url, key)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=_clean_env(tmp_path), timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "0" and lines[1].startswith("cue_")


def test_cueline_sdk_snippet_runs(served, tmp_path):
    url, key = served
    httpx.post(f"{url}/v1/cues", headers=key_headers(key), json={
        "name": "from-doc", "schedule": {"type": "recurring", "cron": "0 3 * * *"},
        "transport": "worker", "payload": {"task": "report"}})
    result = subprocess.run([sys.executable, "-c", _as_written(snippet("cueline-sdk"), url, key)],
                            capture_output=True, text=True, env=_clean_env(tmp_path), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["free", "['from-doc']"]


def test_worker_yaml_and_handler_run_with_the_real_daemon(served, tmp_path):
    url, key = served
    config_text = _as_written(snippet("worker-yaml"), url, key)
    config = yaml.safe_load(config_text)
    assert config["api_base"] == url and not config["api_base"].endswith("/v1")
    (tmp_path / "worker.yaml").write_text(config_text)
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "report.py").write_text(snippet("handler") + "\n")
    headers = key_headers(key)
    cues = {}
    for task, payload in (("report", {"task": "report", "day": "mon", "format": "pdf"}),
                          ("cleanup", {"task": "cleanup"}), ("other", {"task": "nobody"})):
        cues[task] = httpx.post(f"{url}/v1/cues", headers=headers, json={
            "name": f"doc-{task}", "schedule": {"type": "recurring", "cron": "0 3 * * *"},
            "transport": "worker", "payload": payload}).json()["id"]
    process = subprocess.Popen([str(WORKER_BIN), "start", "-c", "worker.yaml"], cwd=tmp_path,
                               env=_clean_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    fired = {task: httpx.post(f"{url}/v1/cues/{cue}/fire", headers=headers).json()["id"]
             for task, cue in cues.items()}
    results = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(results) < 2:
            for task in ("report", "cleanup"):
                execution = httpx.get(f"{url}/v1/executions/{fired[task]}",
                                      headers=headers).json()
                if execution["status"] in ("success", "failed"):
                    results[task] = execution
            time.sleep(0.3)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert set(results) == {"report", "cleanup"}, output[-3000:]
    report = results["report"]
    assert report["status"] == "success", report
    # routed on payload.task to "report": the {{ payload.* }} templates were filled in
    assert report["outcome"]["result"] == "report for mon (pdf)"
    assert results["cleanup"]["status"] == "success"
    # a task without a handler here is left alone
    other = httpx.get(f"{url}/v1/executions/{fired['other']}", headers=headers).json()
    assert other["status"] == "pending"
    workers = httpx.get(f"{url}/v1/workers", headers=headers).json()["workers"]
    assert workers[0]["worker_id"] == "reports-1"
    assert sorted(workers[0]["handlers"]) == ["cleanup", "report"]


def _shell_commands(text: str) -> list[str]:
    return [line[2:] for line in text.splitlines() if line.startswith("$ ")]


@pytest.mark.skipif(not (CLI and os.access(CLI, os.X_OK)),
                    reason="set CUELINE_CUEAPI_CLI to the cueapi executable (make test does)")
def test_cli_commands_run_as_written(served, tmp_path):
    url, key = served
    commands = _shell_commands(_as_written(snippet("cli"), url, key))
    assert commands[0] == f"export CUEAPI_API_BASE={url}/v1"
    env = _clean_env(tmp_path)
    env["PATH"] = f"{Path(CLI).parent}{os.pathsep}{env['PATH']}"
    outputs = []
    exports = ""
    for command in commands:
        if command.startswith("export "):
            exports += command + "\n"
            continue
        result = subprocess.run(["bash", "-ec", exports + command], capture_output=True,
                                text=True, env=env, timeout=60, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        assert "Failed" not in result.stdout and "Error" not in result.stdout, result.stdout
        outputs.append(result.stdout)
    whoami, created, listing, usage = outputs
    assert "clients-doc@example.com" in whoami
    assert created.startswith("\nCreated: cue_") and "nightly-report" in listing
    assert "Active cues:" in usage and "1 / 10" in usage
    cues = httpx.get(f"{url}/v1/cues", headers=key_headers(key)).json()["cues"]
    assert cues[0]["transport"] == "worker" and cues[0]["payload"] == {"task": "report",
                                                                        "day": "mon"}
    # and the pitfall the page warns about: the same address without /v1 answers 404
    no_v1 = subprocess.run(["bash", "-ec", f"export CUEAPI_API_BASE={url}\n"
                            f"export CUEAPI_API_KEY={shlex.quote(key)}\ncueapi list"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert no_v1.returncode == 1
    assert no_v1.stderr == "Error: Failed to list cues (HTTP 404)\n"
    assert no_v1.stderr.strip() in DOC


@pytest.mark.skipif(not (CLI and os.access(CLI, os.X_OK)),
                    reason="set CUELINE_CUEAPI_CLI to the cueapi executable (make test does)")
def test_cli_usage_reads_unlimited_quotas(make_app, live_server, tmp_path):
    """With DISABLE_QUOTA_ENFORCEMENT the real CLI still reads /v1/usage (limit 0 = none)."""
    app = make_app(DISABLE_QUOTA_ENFORCEMENT=True)
    server = live_server(app)
    key, _ = register(app.test_client())
    env = _clean_env(tmp_path)
    env.update({"CUEAPI_API_BASE": f"{server.url}/v1", "CUEAPI_API_KEY": key})
    result = subprocess.run([CLI, "usage"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "Executions:" in result.stdout and "(0.0%)" in result.stdout
