"""Settings ``gunicorn wsgi:app`` reads when started from a checkout; command-line flags win.

One sync worker per core is the fastest configuration measured for Cueline: its requests are
CPU-bound in Python, so more processes per core only add switching (see "Sizing" in
docs/operations.md).  ``WEB_CONCURRENCY`` sets another count.  Requests gunicorn
refuses itself (header and request-line limits) are answered with the JSON error envelope.

Long polls (``GET /v1/agents/{ref}/events?wait=long``) wait only in threaded workers
(``--worker-class gthread --threads N``); each worker tells the app its thread count so that
waiting polls always leave one thread for other requests (see "Long polls" in
docs/operations.md).

The configuration is validated here, in the master, before any worker is forked: a bad setting
prints one list of problems and gunicorn exits at once with status 4.  The hooks below keep
Prometheus' multiprocess files in step with the workers (docs/operations.md, "Metrics").
"""

import multiprocessing
import os

from config import check_environment, exit_on_config_error

with exit_on_config_error():
    check_environment()

workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count())
worker_class = "sync"


def post_worker_init(worker):
    """Tell the app how many requests this worker serves at once (long polls need a spare)."""
    from app.events import waiting

    threaded = worker.cfg.worker_class_str == "gthread" or worker.cfg.threads > 1
    waiting.set_thread_capacity(worker.cfg.threads if threaded else 1)

    from app.gunicorn_errors import install_json_errors

    install_json_errors(worker.cfg)


def on_starting(server):
    """Empty ``PROMETHEUS_MULTIPROC_DIR`` of a previous run's files before workers start."""
    from app.metrics import prepare_multiprocess_dir

    prepare_multiprocess_dir()


def child_exit(server, worker):
    """Drop a dead worker's live gauges from the multiprocess files."""
    from app.metrics import mark_process_dead

    mark_process_dead(worker.pid)
