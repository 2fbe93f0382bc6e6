"""Alembic environment for Flask-Migrate: runs against the app's engine and model metadata.

SQLite gets batch mode (it cannot ALTER most things in place).  Logging is left to the host
process (no fileConfig), so running migrations inside the app or the tests keeps their loggers.
"""

import logging

from alembic import context
from flask import current_app

log = logging.getLogger("alembic.env")
target_db = current_app.extensions["migrate"].db


def _configure(**kwargs) -> None:
    options = {"compare_type": True,
               "render_as_batch": target_db.engine.dialect.name == "sqlite",
               **current_app.extensions["migrate"].configure_args, **kwargs}
    context.configure(target_metadata=target_db.metadata, **options)


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``flask db upgrade --sql``)."""
    url = target_db.engine.url.render_as_string(hide_password=False)
    _configure(url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply migrations on a live connection."""
    with target_db.engine.connect() as connection:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
