"""Settings ``gunicorn wsgi:app`` reads when started from a checkout; command-line flags win.

One sync worker per core is the fastest configuration measured for Cueline: its requests are
CPU-bound in Python, so more processes per core only add switching (see "Benchmarks and
sizing" in docs/operations.md).  ``WEB_CONCURRENCY`` sets another count.
"""

import multiprocessing
import os

workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count())
worker_class = "sync"
