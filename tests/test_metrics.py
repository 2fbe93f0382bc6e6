"""``GET /metrics``: off by default, behind a token when one is set, and the exposition parsed
with ``prometheus_client``'s own parser — in-process and from a multi-worker gunicorn."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.extensions import db
from app.scheduling import jobs
from app.scheduling.delivery import deliver_webhook
from app.scheduling.models import Cue
from tests.helpers import SERVICE_TOKEN, key_headers, register, service_headers, user_id_of
from tests.scheduling.conftest import cue_body
from tests.scheduling.conftest import receiver as _receiver_fixture

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-token-" + "m" * 20


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of an exposition, via the official parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")
    return samples(response.get_data(as_text=True))


def value(data, name, **labels) -> float:
    return data.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_off_by_default(app, client):
    from app.metrics import _record_request

    assert client.get("/metrics").status_code == 404
    assert "metrics" not in app.extensions["cueline_modules"]
    assert _record_request not in app.after_request_funcs.get(None, [])
    assert "/metrics" not in client.get("/openapi.json").get_json()["paths"]


def test_token_is_required_when_set(make_app):
    client = make_app(METRICS_ENABLED=True, METRICS_TOKEN=TOKEN).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "invalid_metrics_token"
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_requests_by_url_rule_method_and_status(make_app):
    app = make_app(METRICS_ENABLED=True)
    client = app.test_client()
    api_key, _ = register(client)
    headers = key_headers(api_key)
    cue = client.post("/v1/cues", json=cue_body(), headers=headers).get_json()
    before = scrape(client)
    for _ in range(3):
        assert client.get(f"/v1/cues/{cue['id']}", headers=headers).status_code == 200
    assert client.get("/v1/cues/cue_doesnotexist", headers=headers).status_code == 404
    assert client.get(f"/no/such/{uuid.uuid4()}").status_code == 404
    after = scrape(client)
    rule = "/v1/cues/<cue_id>"
    ok = {"method": "GET", "route": rule, "status": "200"}
    assert value(after, "cueline_http_requests_total", **ok) - \
        value(before, "cueline_http_requests_total", **ok) == 3
    missing = {**ok, "status": "404"}
    assert value(after, "cueline_http_requests_total", **missing) - \
        value(before, "cueline_http_requests_total", **missing) == 1
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "cueline_http_requests_total", **unmatched) - \
        value(before, "cueline_http_requests_total", **unmatched) == 1
    # the histogram counts the same requests, and no raw path ever becomes a label
    assert value(after, "cueline_http_request_duration_seconds_count", **ok) - \
        value(before, "cueline_http_request_duration_seconds_count", **ok) == 3
    assert value(after, "cueline_http_request_duration_seconds_bucket", le="+Inf", **ok) == \
        value(after, "cueline_http_request_duration_seconds_count", **ok)
    assert not any(cue["id"] in str(labels) for _, labels in after)


def test_rate_limit_refusals_and_delegated_requests(make_app):
    app = make_app(METRICS_ENABLED=True, RATELIMIT_ENABLED=True,
                   RATE_LIMIT_ANONYMOUS_PER_MINUTE=2, EXTERNAL_AUTH_BACKEND=True,
                   INTERNAL_AUTH_TOKEN=SERVICE_TOKEN)
    client = app.test_client()
    before = scrape(client)
    statuses = [client.get("/v1/auth/me").status_code for _ in range(3)]
    assert statuses[-1] == 429
    api_key, _ = register(make_app().test_client())
    user_id = user_id_of(client, api_key)
    assert client.get("/v1/auth/me", headers=service_headers(user_id)).status_code == 200
    after = scrape(client)
    assert value(after, "cueline_rate_limit_refusals_total", scope="address") - \
        value(before, "cueline_rate_limit_refusals_total", scope="address") >= 1
    assert value(after, "cueline_delegated_requests_total", principal="env") - \
        value(before, "cueline_delegated_requests_total", principal="env") == 1


receiver = _receiver_fixture  # the scheduling tests' webhook receiver


def test_deliveries_lateness_and_queue_depths(make_app, receiver):
    app = make_app(METRICS_ENABLED=True, ALLOW_PRIVATE_CALLBACK_URLS=True)
    client = app.test_client()
    api_key, _ = register(client)
    headers = key_headers(api_key)
    worker_cue = client.post("/v1/cues", json=cue_body(name="w", transport="worker",
                                                       callback=None), headers=headers)
    client.post(f"/v1/cues/{worker_cue.get_json()['id']}/fire", headers=headers)
    hook = client.post("/v1/cues", json=cue_body(callback={"url": receiver.url}),
                       headers=headers).get_json()
    before = scrape(client)
    assert value(before, "cueline_queue_depth", queue="pending_worker_claims") == 1
    with app.app_context():
        from app.db import utcnow

        now = utcnow()
        cue = db.session.get(Cue, hook["id"])
        cue.next_run = now - timedelta(seconds=3)
        db.session.commit()
        assert jobs.schedule_due_cues(now) == 1
        claims = jobs.claim_webhook_executions(now, 10)
        assert [deliver_webhook(e, c) for e, c in claims] == ["success"]
    after = scrape(client)
    delivered = {"kind": "cue_webhook", "outcome": "success"}
    assert value(after, "cueline_deliveries_total", **delivered) - \
        value(before, "cueline_deliveries_total", **delivered) == 1
    lateness = "cueline_scheduler_lateness_seconds"
    assert value(after, f"{lateness}_count") - value(before, f"{lateness}_count") == 1
    # three seconds late: in the 5 s bucket, not in the 2.5 s one
    assert value(after, f"{lateness}_bucket", le="5.0") - \
        value(before, f"{lateness}_bucket", le="5.0") == 1
    assert value(after, f"{lateness}_bucket", le="2.5") == \
        value(before, f"{lateness}_bucket", le="2.5")
    assert value(after, "cueline_queue_depth", queue="pending_outbox") == 0
    assert ("cueline_queue_depth", (("queue", "message_pushes_due"),)) in after


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gunicorn_workers_are_added_up_in_multiprocess_mode(db_url, tmp_path):
    """Two gunicorn workers, one PROMETHEUS_MULTIPROC_DIR: a scrape (answered by either
    worker) counts every request; files left from an earlier run are cleared at start."""
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    (multiproc / "counter_99999.db").write_bytes(b"stale file of an earlier run")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "DATABASE_"))}
    env.update({"ENV": "test", "DATABASE_URL": db_url, "METRICS_ENABLED": "true",
                "METRICS_TOKEN": TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
                "LOG_LEVEL": "WARNING", "RATELIMIT_ENABLED": "false"})
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}",
         "--workers", "2", "wsgi:app"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/status", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert not (multiproc / "counter_99999.db").exists()
        def writers() -> set[str]:
            return {p.name.split("_")[-1] for p in multiproc.glob("counter_*.db")}

        sent = 0
        with httpx.Client(timeout=10) as http:
            # New connections until both workers have answered some (the second may still be
            # booting when the first answers /status on a loaded machine).
            deadline = time.monotonic() + 30
            while sent < 40 or (len(writers()) < 2 and time.monotonic() < deadline):
                response = http.get(f"{url}/health", headers={"Connection": "close"})
                assert response.status_code == 200
                sent += 1
            assert len(writers()) >= 2, writers()  # more than one process wrote counts
            for _ in range(6):  # whichever worker answers the scrape adds up every file
                data = samples(http.get(f"{url}/metrics", headers=auth).text)
                assert value(data, "cueline_http_requests_total", method="GET",
                             route="/health", status="200") == sent
                assert value(data, "cueline_http_request_duration_seconds_count",
                             method="GET", route="/health", status="200") == sent
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_documented_scrape_config_and_alert_rules_name_real_metrics(make_app):
    """docs/operations.md's Prometheus examples are valid YAML and use only metric names the
    exposition has (histograms by their _bucket series)."""
    import re

    import yaml

    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    scrape, rules = (yaml.safe_load(block) for block in blocks)
    assert scrape["scrape_configs"][0]["metrics_path"] == "/metrics"
    alerts = rules["groups"][0]["rules"]
    assert len(alerts) == 3 and all(rule["alert"] and rule["expr"] for rule in alerts)
    app = make_app(METRICS_ENABLED=True)
    client = app.test_client()
    client.get("/health")
    exposed = {name for name, _ in scrape_names(client)}
    for rule in alerts:
        for name in re.findall(r"cueline_\w+", rule["expr"]):
            assert name in exposed or name.removesuffix("_bucket") + "_count" in exposed, name
    documented = set(re.findall(r"^\| `(cueline_\w+)`", section, re.M))
    families = {f.name for f in text_string_to_metric_families(
        client.get("/metrics").get_data(as_text=True))}
    # (the parser names a counter's family without its _total suffix)
    assert {name.removesuffix("_total") for name in documented} <= families
    assert len(documented) == 7


def scrape_names(client):
    return samples(client.get("/metrics").get_data(as_text=True))
