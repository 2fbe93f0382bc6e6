"""The loop behind ``flask worker run``: runs the enabled ``JOBS``, delivers in a bounded thread
pool, and shuts down gracefully on SIGTERM/SIGINT.

Shutdown: stop claiming at once; wait up to ``WORKER_SHUTDOWN_GRACE_SECONDS`` for in-flight
deliveries; then call every release function jobs registered (``ctx.on_shutdown``) so rows still
in flight go back to the queue — nothing is left claimed by a process that is gone.
"""

from __future__ import annotations

import importlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from flask import Flask

from app.db import utcnow
from app.worker import JOBS, Job

log = logging.getLogger("cueline.worker")

#: The loop never sleeps longer than this between checks, so shutdown is prompt.
MAX_NAP_SECONDS = 0.5


def _load(target: str) -> Callable[[JobContext], int]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class DeliveryPool:
    """A fixed set of daemon threads, each running submitted calls inside an app context.

    Daemon threads (not ``concurrent.futures``) so a delivery stuck past the shutdown grace
    cannot keep the process alive; its row is released to the queue instead.
    """

    def __init__(self, app: Flask, size: int):
        self.app = app
        self.size = size
        self._queue: queue.Queue = queue.Queue()
        self._busy = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._slot_freed = threading.Event()
        #: :meth:`wait_for_slot` returns once :meth:`room` rises to this (see :meth:`_run`).
        self.wake_threshold = 1
        #: Tasks a job may queue beyond the threads (see :meth:`room`); 0 unless a job sets it.
        self.queue_ahead = 0
        self._threads = [threading.Thread(target=self._run, name=f"delivery-{i}", daemon=True)
                         for i in range(size)]
        for thread in self._threads:
            thread.start()

    def free_slots(self) -> int:
        with self._lock:
            return max(self.size - self._busy, 0)

    def room(self) -> int:
        """Tasks that may still be submitted: free threads plus ``queue_ahead`` queued ones."""
        with self._lock:
            return max(self.size + self.queue_ahead - self._busy, 0)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            self._busy += 1
        self._queue.put((fn, args))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            try:
                with self.app.app_context():
                    fn(*args)
            except Exception:
                log.exception("delivery task %s failed", getattr(fn, "__name__", fn))
            finally:
                with self._lock:
                    self._busy -= 1
                    self._idle.notify_all()
                    room = self.size + self.queue_ahead - self._busy
                    # Wake the loop when it has something to do, not on every finish: when
                    # the pool went idle (record the whole batch), when a thread came free
                    # in a full pool (a job found none), or when the room rose to the
                    # threshold (a batch worth claiming).  While a few deliveries trickle
                    # through a roomy pool, waking on each cost a round of statements each.
                    wake = (self._busy == 0 or self._busy == self.size - 1
                            or room == max(self.wake_threshold, 1))
                if wake:
                    self._slot_freed.set()

    def wait_for_slot(self, timeout: float) -> None:
        """Sleep until a delivery finishes and the pool went idle, a thread came free in a full
        pool, or :meth:`room` rose to ``wake_threshold``; or until ``timeout`` passes."""
        self._slot_freed.wait(timeout)
        self._slot_freed.clear()

    def wake(self) -> None:
        """Interrupt :meth:`wait_for_slot` (shutdown)."""
        self._slot_freed.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no task is running or queued; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)


class JobContext:
    """What a job receives: the clock, the delivery pool, and the shutdown flag."""

    def __init__(self, app: Flask, pool: DeliveryPool, stopping: threading.Event,
                 clock: Callable[[], datetime] = utcnow):
        self.app = app
        self.pool = pool
        self.stopping = stopping
        self._clock = clock
        self._releases: list[Callable[[], Any]] = []
        #: Per-process state jobs may keep between runs (e.g. the rows they have in flight).
        self.state: dict[str, Any] = {}
        #: Set when a job found every delivery thread busy: it runs again as soon as one frees.
        self.saturated = False
        #: Seconds after which the job that just ran wants to run again (see
        #: :meth:`run_again_in`).
        self.wake_in: float | None = None
        #: Jobs to run at the loop's next turn, whenever they were due (see :meth:`wake`).
        self.woken: set[str] = set()

    def now(self) -> datetime:
        return self._clock()

    def free_slots(self) -> int:
        if self.stopping.is_set():
            return 0
        slots = self.pool.free_slots()
        if slots == 0:
            self.saturated = True
        return slots

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.pool.submit(fn, *args)

    def run_again_in(self, seconds: float) -> None:
        """Ask for the running job to run again after ``seconds``: sooner than its interval
        (the scheduler, when the next cue falls due before the next poll), or — when it did
        work, which would make it run again at once — not before then (the scheduler, which
        has fired everything due and paces its passes while cues keep falling due).  Never
        later than its interval."""
        seconds = max(float(seconds), 0.0)
        self.wake_in = seconds if self.wake_in is None else min(self.wake_in, seconds)

    def wake(self, job_name: str) -> None:
        """Have job ``job_name`` run at the loop's next turn rather than when its interval
        ends (the scheduler wakes the webhook dispatcher when it created executions)."""
        self.woken.add(job_name)

    def on_shutdown(self, release: Callable[[], Any]) -> None:
        if release not in self._releases:
            self._releases.append(release)

    def release_all(self) -> None:
        for release in self._releases:
            try:
                with self.app.app_context():
                    release()
            except Exception:
                log.exception("release on shutdown failed")


class Worker:
    """Runs the enabled jobs until :meth:`stop` (or a signal) asks it to finish."""

    def __init__(self, app: Flask, jobs: Iterable[Job] = JOBS,
                 clock: Callable[[], datetime] = utcnow):
        self.app = app
        self.stopping = threading.Event()
        config = app.config
        self.jobs: list[tuple[Job, Callable[[JobContext], int], float]] = []
        for job in jobs:
            if not job.enabled(config):
                flag = job.disabled_by or job.requires
                log.info("job %s skipped: disabled by %s", job.name, flag)
                continue
            self.jobs.append((job, _load(job.target), job.interval_seconds(config)))
        self.pool = DeliveryPool(app, config["DELIVERY_CONCURRENCY"])
        self.ctx = JobContext(app, self.pool, self.stopping, clock)
        self.cycles = 0

    def install_signal_handlers(self) -> None:
        def _handle(signum, _frame):
            log.info("received %s: finishing in-flight work", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, _handle)
        signal.signal(signal.SIGINT, _handle)

    def stop(self) -> None:
        self.stopping.set()
        self.pool.wake()

    def run_once(self) -> int:
        """Run every enabled job once; return the total work done."""
        total = 0
        for job, fn, _interval in self.jobs:
            total += self._run_job(job, fn)
        return total

    def _run_job(self, job: Job, fn: Callable[[JobContext], int]) -> int:
        try:
            with self.app.app_context():
                return int(fn(self.ctx) or 0)
        except Exception:
            log.exception("job %s failed", job.name)
            try:
                with self.app.app_context():
                    from app.extensions import db

                    db.session.rollback()
            except Exception:  # noqa: BLE001 - database unreachable: next cycle retries
                log.warning("job %s: rollback failed", job.name)
            return 0

    def run(self) -> None:
        """The main loop; returns after a graceful shutdown."""
        names = ", ".join(job.name for job, _, _ in self.jobs) or "none"
        log.info("worker started: jobs %s; %d delivery threads", names, self.pool.size)
        due = {job.name: 0.0 for job, _, _ in self.jobs}
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                waiting_for_slot = False
                for job, fn, interval in self.jobs:
                    if self.stopping.is_set():
                        break
                    if now < due[job.name]:
                        continue
                    self.ctx.saturated = False
                    self.ctx.wake_in = None
                    work = self._run_job(job, fn)
                    if self.ctx.saturated:
                        # Every delivery thread was busy: retry the moment one frees up
                        # rather than after a full poll interval.
                        waiting_for_slot = True
                        due[job.name] = 0.0
                    else:
                        wait = 0 if work > 0 else interval
                        if self.ctx.wake_in is not None:
                            wait = min(interval, self.ctx.wake_in)
                        due[job.name] = time.monotonic() + wait
                    if self.ctx.woken:
                        # Due at the turn's start: jobs later in this turn run in it.
                        for name in self.ctx.woken & due.keys():
                            due[name] = min(due[name], now)
                        self.ctx.woken.clear()
                self.cycles += 1
                others = [due[job.name] for job, _, _ in self.jobs if due[job.name] > 0]
                nap = min(others or [time.monotonic() + MAX_NAP_SECONDS])
                nap = min(max(nap - time.monotonic(), 0.0), MAX_NAP_SECONDS)
                if waiting_for_slot:
                    self.pool.wait_for_slot(nap)
                elif nap:
                    self.stopping.wait(nap)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop claiming, wait for in-flight work (bounded), release what is left."""
        self.stopping.set()
        grace = float(self.app.config["WORKER_SHUTDOWN_GRACE_SECONDS"])
        if not self.pool.wait_idle(grace):
            log.warning("deliveries still running after %.1fs; releasing them to the queue",
                        grace)
        self.ctx.release_all()
        self.pool.close()
        log.info("worker stopped")
