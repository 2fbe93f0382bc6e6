"""Settings ``gunicorn wsgi:app`` reads when started from a checkout; command-line flags win.

One sync worker per core is the fastest configuration measured for Cueline: its requests are
CPU-bound in Python, so more processes per core only add switching (see "Benchmarks and
sizing" in docs/operations.md).  ``WEB_CONCURRENCY`` sets another count.  Requests gunicorn
refuses itself (header and request-line limits) are answered with the JSON error envelope.
"""

import multiprocessing
import os

workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count())
worker_class = "sync"


def post_worker_init(worker):
    """Answer requests gunicorn itself refuses (header and request-line limits, unparsable
    requests) with the JSON error envelope instead of an HTML page (app/gunicorn_errors.py)."""
    from app.gunicorn_errors import install_json_errors

    install_json_errors(worker.cfg)
