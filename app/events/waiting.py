"""Long-poll waiting without a database connection: per-process waiters woken by notifications.

A long poll (``GET …/events?wait=long``) that finds nothing registers a waiter for its agent,
gives its database connection back to the pool, and sleeps on a ``threading.Event``.  It wakes
when an event for that agent is emitted:

* in this process: :func:`app.events.emission.events_emitted` after the send commits;
* anywhere (PostgreSQL): a trigger on ``events`` runs ``pg_notify('cueline_events',
  <agent id>)``; one listener thread per process holds one connection in ``LISTEN`` and wakes
  the waiters of that agent.

On SQLite, or while the listener is reconnecting, waiters re-check the database every
``EVENTS_LONG_POLL_RECHECK_SECONDS`` instead (a bounded poll; one short query per waiter).

A waiter needs a thread of its own: a long poll only waits when the server runs requests in
threads (``wsgi.multithread``, e.g. gunicorn's ``gthread`` workers) and fewer than
``EVENTS_LONG_POLL_MAX_WAITERS`` long polls already wait in this process.  Otherwise it answers
at once, as a plain poll (the wire protocol's wait is "up to" 30 s): a sync gunicorn worker
serves one request at a time, and a waiting poll would take that worker's whole capacity.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

CHANNEL = "cueline_events"
#: Seconds between reconnection attempts of the listener.
RECONNECT_SECONDS = 2.0


class Waiters:
    """The long polls of this process waiting for events, by agent id."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_agent: dict[str, set[threading.Event]] = {}
        self._count = 0
        self._pid = os.getpid()

    def _reset_after_fork(self) -> None:
        if self._pid != os.getpid():  # a forked child inherits nobody's waits
            self._by_agent, self._count, self._pid = {}, 0, os.getpid()

    def register(self, agent_id: str, limit: int) -> threading.Event | None:
        """A new waiter for ``agent_id``, or None when ``limit`` waiters already wait."""
        with self._lock:
            self._reset_after_fork()
            if self._count >= limit:
                return None
            waiter = threading.Event()
            self._by_agent.setdefault(agent_id, set()).add(waiter)
            self._count += 1
            return waiter

    def unregister(self, agent_id: str, waiter: threading.Event) -> None:
        with self._lock:
            group = self._by_agent.get(agent_id)
            if group is not None and waiter in group:
                group.discard(waiter)
                self._count -= 1
                if not group:
                    del self._by_agent[agent_id]

    def wake(self, agent_ids: Iterable[str]) -> None:
        """Wake every waiter of these agents."""
        with self._lock:
            if not self._by_agent:
                return
            for agent_id in agent_ids:
                for waiter in self._by_agent.get(agent_id, ()):
                    waiter.set()

    def wake_all(self) -> None:
        with self._lock:
            for group in self._by_agent.values():
                for waiter in group:
                    waiter.set()

    @property
    def count(self) -> int:
        with self._lock:
            return self._count


waiters = Waiters()

#: Request threads of this process when the server told us (gunicorn.conf.py does for its
#: workers); a long poll then leaves at least one thread for other requests.
thread_capacity: int | None = None


def set_thread_capacity(threads: int) -> None:
    """Record how many requests this process serves at once (called by gunicorn.conf.py)."""
    global thread_capacity
    thread_capacity = max(int(threads), 1)


def waiter_limit(configured: int) -> int:
    """Long polls that may wait at once in this process."""
    if thread_capacity is None:
        return configured
    return max(min(configured, thread_capacity - 1), 0)


class Listener:
    """One ``LISTEN`` connection per process (PostgreSQL), started by the first long poll."""

    def __init__(self):
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self.connected = threading.Event()

    def ensure_started(self, url: str) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and \
                    self._pid == os.getpid():
                return
            self.connected.clear()
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, args=(_libpq_url(url),),
                                            name="events-listener", daemon=True)
            self._thread.start()

    def _run(self, url: str) -> None:
        import psycopg

        while True:
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    # Events emitted while disconnected were not announced: everyone re-reads.
                    waiters.wake_all()
                    for notify in conn.notifies():
                        waiters.wake((notify.payload,))
            except Exception as exc:  # noqa: BLE001 - reconnect on anything
                log.warning("events listener disconnected (%s); reconnecting",
                            type(exc).__name__)
            self.connected.clear()
            waiters.wake_all()  # they fall back to re-checking
            time.sleep(RECONNECT_SECONDS)


listener = Listener()


def _libpq_url(url: str) -> str:
    """A SQLAlchemy URL as libpq understands it."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)
