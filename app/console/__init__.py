"""The operator console: a server-rendered web UI at ``/console`` for the people who run Cueline.

Mounted only with ``CONSOLE_ENABLED=true`` (see ``MODULES``).  Operators named in
``CONSOLE_ADMINS`` sign in with a one-time link (e-mailed, or printed by ``flask console login``)
and get a server-side session; API credentials of any kind never open a console page.

* :mod:`.models` — login links and sessions (tokens stored only as SHA-256 hashes).
* :mod:`.auth` — sign-in, sessions, CSRF tokens, the operator's audit records.
* :mod:`.queries` — the read side of the pages (keyset pagination, chart series).
* :mod:`.charts` — server-side SVG charts, readable without JavaScript.
* :mod:`.routes` — the blueprint: thin views over the existing domain services.
"""
