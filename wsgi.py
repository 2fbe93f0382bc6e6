"""WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi …``.

An unusable configuration prints its list of problems (no traceback) and exits with status 4,
which a gunicorn master treats as "App failed to load" and stops on at once.
"""

from app import create_app
from config import exit_on_config_error

with exit_on_config_error():
    app = create_app()
