"""Settings ``gunicorn wsgi:app`` reads when started from a checkout; command-line flags win.

One sync worker per core is the fastest configuration measured for Cueline: its requests are
CPU-bound in Python, so more processes per core only add switching (see "Benchmarks and
sizing" in docs/operations.md).  ``WEB_CONCURRENCY`` sets another count.

Long polls (``GET /v1/agents/{ref}/events?wait=long``) wait only in threaded workers
(``--worker-class gthread --threads N``); each worker tells the app its thread count so that
waiting polls always leave one thread for other requests (see "Long polls" in
docs/operations.md).
"""

import multiprocessing
import os

workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count())
worker_class = "sync"


def post_worker_init(worker):
    """Tell the app how many requests this worker serves at once (long polls need a spare)."""
    from app.events import waiting

    threaded = worker.cfg.worker_class_str == "gthread" or worker.cfg.threads > 1
    waiting.set_thread_capacity(worker.cfg.threads if threaded else 1)
