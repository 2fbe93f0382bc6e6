"""Prometheus metrics: the one place that knows metric names, and ``GET /metrics``.

Every metric Cueline exports is defined here, and other modules record through the small
functions below (``count_deliveries``, ``observe_lateness`` …), so a metric's name, labels and
help text live in one file.  Add new metrics here the same way.

* ``GET /metrics`` is mounted only with ``METRICS_ENABLED=true`` (the ``metrics`` row of
  ``MODULES``); with ``METRICS_TOKEN`` set it also needs ``Authorization: Bearer <token>``.
* Request metrics are recorded by one ``after_request`` hook installed only when metrics are
  on; with them off a request pays nothing.  The hook keeps the labelled children it has
  used in a dict, because ``labels()`` itself costs more than the increment.
* Under gunicorn every worker is a process of its own: set ``PROMETHEUS_MULTIPROC_DIR`` to an
  empty directory writable by all of them (and by ``flask worker run`` on the same machine),
  and ``/metrics`` adds up every process's files.  ``gunicorn.conf.py`` empties it at start
  and drops dead workers' live gauges (``child_exit``).
* Queue depths are read from the database when ``/metrics`` is scraped, so they are right
  whichever process answers.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable
from time import perf_counter
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask.views import MethodView
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter,
                               Histogram, disable_created_metrics, generate_latest,
                               multiprocess)
from prometheus_client.core import GaugeMetricFamily

from app.api import Blueprint
from app.auth import public
from app.errors import Unauthorized

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_ENV):
    # In multiprocess mode a metric without labels opens its file as soon as it is defined
    # (below): the directory must exist first, whichever process imports this module.
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)
# No ``*_created`` series: they double the exposition and no alert uses them.
disable_created_metrics()

#: Latency buckets (seconds) for requests: most answer in 1-20 ms, a slow page in 100+ ms.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: How late the scheduler fires (seconds): well under a second when it keeps up.
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0)

HTTP_REQUESTS = Counter(
    "cueline_http_requests", "HTTP requests answered, by route (the URL rule), method and "
    "status.", ["method", "route", "status"])
HTTP_REQUEST_SECONDS = Histogram(
    "cueline_http_request_duration_seconds", "Time to answer an HTTP request inside the app, "
    "by route (the URL rule), method and status.", ["method", "route", "status"],
    buckets=REQUEST_BUCKETS)
SCHEDULER_LATENESS = Histogram(
    "cueline_scheduler_lateness_seconds", "How long after its scheduled time each execution "
    "was created by the scheduler.", buckets=LATENESS_BUCKETS)
DELIVERIES = Counter(
    "cueline_deliveries", "Delivery attempts by kind (cue_webhook, message_push) and outcome "
    "(success, retry, failed; queued/skipped for pushes that were not sent).",
    ["kind", "outcome"])
RATE_LIMIT_REFUSALS = Counter(
    "cueline_rate_limit_refusals", "Requests refused with 429 by a request rate limit, by "
    "bucket scope (user, address, service, or an endpoint limit's name).", ["scope"])
DELEGATED_REQUESTS = Counter(
    "cueline_delegated_requests", "Requests made through delegation (Path 2), by service "
    "principal.", ["principal"])
QUEUE_DEPTH = "cueline_queue_depth"

#: Webhook result statuses as delivery outcomes.
_WEBHOOK_OUTCOMES = {"success": "success", "retrying": "retry", "failed": "failed"}
_PUSH_OUTCOMES = {"delivered": "success", "retry_ready": "retry", "failed": "failed"}


# --- recording (called by the domains) -------------------------------------------------------

def observe_lateness(seconds: Iterable[float]) -> None:
    """Record how late the scheduler created executions (negative values count as 0)."""
    for value in seconds:
        SCHEDULER_LATENESS.observe(max(value, 0.0))


def count_webhook_results(statuses: Iterable[str]) -> None:
    """Count finished cue webhook attempts by their new execution status."""
    for status in statuses:
        outcome = _WEBHOOK_OUTCOMES.get(status)
        if outcome:
            DELIVERIES.labels("cue_webhook", outcome).inc()


def count_push_result(result: str) -> None:
    """Count one message push attempt by what ``deliver_push`` returned."""
    DELIVERIES.labels("message_push", _PUSH_OUTCOMES.get(result, result)).inc()


def count_rate_limit_refusal(scope: str) -> None:
    """Count one 429 from a request rate limit."""
    RATE_LIMIT_REFUSALS.labels(scope).inc()


# --- the request hook ------------------------------------------------------------------------

#: ``(method, route, status)`` → the two labelled children: ``labels()`` costs more than
#: ``inc()`` and ``observe()`` together.  Routes are URL rules, so the key space is bounded.
_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_delegated_children: dict[str, Any] = {}
UNMATCHED_ROUTE = "unmatched"


def _record_request(response):
    """``after_request``: count the request and its latency by URL rule, method and status."""
    rule = request.url_rule
    key = (request.method, rule.rule if rule is not None else UNMATCHED_ROUTE,
           response.status_code)
    children = _request_children.get(key)
    if children is None:
        labels = (key[0], key[1], str(key[2]))
        children = (HTTP_REQUESTS.labels(*labels), HTTP_REQUEST_SECONDS.labels(*labels))
        _request_children[key] = children
    children[0].inc()
    started = g.get("request_started")  # set by app.logs for every request
    if started is not None:
        children[1].observe(perf_counter() - started)
    identity = g.get("identity")
    if identity is not None and identity.principal is not None and identity.user is not None:
        name = identity.principal.name
        child = _delegated_children.get(name)
        if child is None:
            child = _delegated_children[name] = DELEGATED_REQUESTS.labels(name)
        child.inc()
    return response


def init_metrics(app: Flask) -> None:
    """Install the request hook when ``METRICS_ENABLED`` (nothing at all otherwise)."""
    if app.config["METRICS_ENABLED"]:
        app.after_request(_record_request)


# --- exposition --------------------------------------------------------------------------------

class QueueCollector:
    """``cueline_queue_depth{queue=…}``, read from the database at scrape time."""

    def __init__(self, app: Flask):
        self.app = app

    def describe(self):
        return []

    def collect(self):
        family = GaugeMetricFamily(QUEUE_DEPTH, "Work waiting in the queues right now (from "
                                   "the database at scrape time).", labels=["queue"])
        for name, value in queue_depths(self.app).items():
            family.add_metric([name], value)
        yield family


def queue_depths(app: Flask) -> dict[str, int]:
    """Due deliveries and pushes, stale deliveries, waiting retries, unclaimed worker jobs."""
    from sqlalchemy import func, select

    from app.db import utcnow
    from app.extensions import db
    from app.messaging.models import Message
    from app.messaging.services.delivery import _due

    now = utcnow()
    depths: dict[str, int] = {}
    try:
        if not app.config["DISABLE_CUE_PRIMITIVE"]:
            from app.scheduling.health import queue_summary

            depths.update(queue_summary(now))
        depths["message_pushes_due"] = int(db.session.scalar(
            select(func.count()).select_from(Message).where(_due(now))) or 0)
    except Exception as exc:  # noqa: BLE001 - a scrape must answer even without the database
        app.logger.warning("metrics: queue depths unavailable: %s", type(exc).__name__)
    finally:
        db.session.rollback()
    return depths


def exposition(app: Flask) -> bytes:
    """The Prometheus text exposition of this process (or of every process, in multiprocess
    mode) plus the queue depths."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)
        collectors = []
    else:
        collectors = [REGISTRY]
    registry.register(QueueCollector(app))
    output = generate_latest(registry)
    for collector in collectors:
        output = generate_latest(collector) + output
    return output


def prepare_multiprocess_dir() -> None:
    """Create ``PROMETHEUS_MULTIPROC_DIR`` and remove the files of processes that are gone (a
    previous run's), before a server's workers start or a worker process records anything.

    Files of live processes stay: the web server and ``flask worker run`` on one machine share
    the directory and may start in either order.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        pid = name.rsplit(".", 1)[0].rsplit("_", 1)[-1]
        if name.endswith(".db") and pid.isdigit() and not _alive(int(pid)):
            try:
                os.unlink(os.path.join(path, name))
            except FileNotFoundError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve_worker_metrics(bind: str) -> None:
    """``flask worker run --metrics-bind HOST:PORT``: this process's metrics (scheduler
    lateness, delivery outcomes, and the queue depths) on a plain HTTP port of its own, for a
    worker that shares no ``PROMETHEUS_MULTIPROC_DIR`` with a web server (another machine or
    container).  No token: bind it to an address only Prometheus reaches."""
    from prometheus_client import start_http_server

    host, _, port = bind.rpartition(":")
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)


def mark_process_dead(pid: int) -> None:
    """gunicorn ``child_exit``: drop a dead worker's live gauges (its counters stay counted)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


blp = Blueprint("metrics", __name__, description="Prometheus metrics (METRICS_ENABLED).")


@blp.route("/metrics")
class Metrics(MethodView):
    @public
    @blp.doc(responses={200: {"description": "Prometheus text exposition format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                        401: {"description": "METRICS_TOKEN is set and was not sent"}})
    def get(self):
        """Metrics in the Prometheus text format (Bearer METRICS_TOKEN when one is set)."""
        token = current_app.config["METRICS_TOKEN"]
        if token:
            header = request.headers.get("Authorization", "")
            scheme, _, sent = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    sent.strip().encode(), token.encode()):
                raise Unauthorized("invalid_metrics_token",
                                   "Send the metrics token: Authorization: Bearer "
                                   "<METRICS_TOKEN>")
        return Response(exposition(current_app._get_current_object()),
                        content_type=CONTENT_TYPE_LATEST)
