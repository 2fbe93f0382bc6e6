"""The background worker (``flask worker run``) and the ``JOBS`` table it runs.

A job is one line in :data:`JOBS`, exactly like a blueprint in ``app.MODULES``::

    Job("message_push", "app.messaging.jobs:deliver_pushes", interval="POLLER_INTERVAL_SECONDS"),

* ``target`` — ``"module.path:function"``; imported only when the job is enabled.  The function
  is called as ``function(ctx)`` inside an app context with a :class:`app.worker.loop.JobContext`
  and returns how much work it did (an ``int``); a positive result makes the loop run the job
  again at once (drain a backlog), zero waits ``interval``.  A job that called
  ``ctx.run_again_in(seconds)`` runs again after that long instead (at most ``interval``),
  whatever it returned: the scheduler does, to run when the next cue falls due and to pace its
  passes while cues keep falling due.  ``ctx.wake(name)`` has another job run at the loop's
  next turn (the scheduler wakes the webhook dispatcher when it created executions).
* ``interval`` — seconds (a number) or the name of a numeric setting.
* ``disabled_by`` / ``requires`` — packaging flags, as in ``MODULES``.  A disabled job is
  skipped and the worker logs that it is.

Jobs that deliver over HTTP hand each delivery to ``ctx.submit(fn, *args)`` (a bounded pool of
``DELIVERY_CONCURRENCY`` threads with app contexts) and claim at most ``ctx.free_slots()`` rows,
so a slow receiver never stalls the scheduler.  (The webhook dispatcher also queues up to one
pool's worth beyond the free threads — ``ctx.pool.queue_ahead`` / ``ctx.pool.room()`` — so that
each of its rounds of statements carries a larger batch.)  When ``ctx.stopping`` is set, jobs
must stop claiming.  A job that claims rows should register a release function with
``ctx.on_shutdown(fn)`` so rows still in flight after the shutdown grace go back to the queue;
``ctx.state`` is a dict a job may use to remember such rows between runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Job:
    """A periodic job of the background worker (see the module docstring)."""

    name: str
    target: str
    interval: float | str = "POLLER_INTERVAL_SECONDS"
    disabled_by: str | None = None
    requires: str | None = None

    def enabled(self, config: Mapping[str, Any]) -> bool:
        if self.requires and not config[self.requires]:
            return False
        return not (self.disabled_by and config[self.disabled_by])

    def interval_seconds(self, config: Mapping[str, Any]) -> float:
        value = config[self.interval] if isinstance(self.interval, str) else self.interval
        return float(value)


JOBS: tuple[Job, ...] = (
    Job("scheduler", "app.scheduling.jobs:run_scheduler", disabled_by="DISABLE_CUE_PRIMITIVE"),
    Job("webhook_delivery", "app.scheduling.jobs:dispatch_webhooks",
        disabled_by="DISABLE_CUE_PRIMITIVE"),
    Job("execution_sweeps", "app.scheduling.jobs:sweep_executions", interval=5.0,
        disabled_by="DISABLE_CUE_PRIMITIVE"),
    Job("message_push", "app.messaging.jobs:deliver_pushes"),
    Job("message_push_recovery", "app.messaging.jobs:recover_stale_pushes", interval=5.0),
    Job("message_retention", "app.messaging.jobs:run_retention",
        interval="MESSAGE_RETENTION_INTERVAL_SECONDS"),
    Job("event_webhooks", "app.events.jobs:dispatch_webhooks"),
    Job("event_digests", "app.events.jobs:emit_digests", interval="DIGEST_PERIOD_SECONDS"),
    Job("event_retention", "app.events.jobs:prune_events", interval=3600.0),
    Job("audit_retention", "app.auth.audit:prune_audit",
        interval="AUDIT_RETENTION_INTERVAL_SECONDS"),
    Job("fire_key_retention", "app.scheduling.jobs:prune_fire_keys", interval=3600.0,
        disabled_by="DISABLE_CUE_PRIMITIVE"),
    Job("alert_webhooks", "app.alerts.jobs:deliver_alert_webhooks"),
)
