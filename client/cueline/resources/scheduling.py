"""Cues, executions, workers and usage (``/v1/cues``, ``/v1/executions``, ``/v1/worker(s)``,
``/v1/usage``)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cueline._base import Call, compact
from cueline.resources._common import UNSET, Resource, given, seg

Callback = str | Mapping[str, Any] | None


def _schedule(cron: str | None, at: str | datetime | None,
              timezone: str | None) -> dict[str, Any]:
    if (cron is None) == (at is None):
        raise ValueError("Give exactly one of cron= (recurring) or at= (once)")
    schedule: dict[str, Any] = {"type": "recurring" if cron is not None else "once"}
    if cron is not None:
        schedule["cron"] = cron
    else:
        schedule["at"] = at.isoformat() if isinstance(at, datetime) else at
    if timezone is not None:
        schedule["timezone"] = timezone
    return schedule


def _callback(callback: Callback) -> dict[str, Any] | None:
    if callback is None:
        return None
    if isinstance(callback, str):
        return {"url": callback}
    return dict(callback)


class Cues(Resource):
    """``client.cues``."""

    def create(self, name: str, *, cron: str | None = None,
               at: str | datetime | None = None, timezone: str | None = None,
               callback: Callback = None, transport: str | None = None,
               payload: Mapping[str, Any] | None = None, description: str | None = None,
               retry: Mapping[str, Any] | None = None,
               on_failure: Mapping[str, Any] | None = None,
               verification: Mapping[str, Any] | None = None) -> Any:
        """``POST /v1/cues``.  ``cron`` for a recurring cue or ``at`` for a one-off;
        ``callback`` is a URL or ``{url, method, headers}``; ``transport`` ``"webhook"``
        (default) or ``"worker"``."""
        body = compact(name=name, schedule=_schedule(cron, at, timezone),
                       callback=_callback(callback), transport=transport, payload=payload,
                       description=description, retry=retry, on_failure=on_failure,
                       verification=verification)
        return self._call(Call("POST", "/v1/cues", json=body))

    def list(self, *, status: str | None = None, limit: int | None = None,
             offset: int | None = None) -> Any:
        """``GET /v1/cues`` → ``{cues, total, limit, offset}``."""
        return self._call(Call("GET", "/v1/cues",
                               params={"status": status, "limit": limit, "offset": offset}))

    def get(self, cue_id: str, *, execution_limit: int | None = None,
            execution_offset: int | None = None) -> Any:
        """``GET /v1/cues/{id}``: the cue with a page of its executions."""
        return self._call(Call("GET", f"/v1/cues/{seg(cue_id)}",
                               params={"execution_limit": execution_limit,
                                       "execution_offset": execution_offset}))

    def update(self, cue_id: str, *, name: Any = UNSET, description: Any = UNSET,
               status: Any = UNSET, schedule: Any = UNSET, callback: Any = UNSET,
               payload: Any = UNSET, retry: Any = UNSET, on_failure: Any = UNSET,
               verification: Any = UNSET) -> Any:
        """``PATCH /v1/cues/{id}`` with only the fields given (``None`` is sent as null)."""
        if isinstance(callback, str):
            callback = {"url": callback}
        body = given(name=name, description=description, status=status, schedule=schedule,
                     callback=callback, payload=payload, retry=retry, on_failure=on_failure,
                     verification=verification)
        if not body:
            raise ValueError("update() needs at least one field")
        return self._call(Call("PATCH", f"/v1/cues/{seg(cue_id)}", json=body))

    def pause(self, cue_id: str) -> Any:
        """Pause a cue (``PATCH {"status": "paused"}``)."""
        return self.update(cue_id, status="paused")

    def resume(self, cue_id: str) -> Any:
        """Resume a cue (``PATCH {"status": "active"}``)."""
        return self.update(cue_id, status="active")

    def delete(self, cue_id: str) -> Any:
        """``DELETE /v1/cues/{id}`` (executions go with it)."""
        return self._call(Call("DELETE", f"/v1/cues/{seg(cue_id)}"))

    def fire(self, cue_id: str, *, send_at: str | datetime | None = None) -> Any:
        """``POST /v1/cues/{id}/fire``: run now (or at ``send_at``) → the new execution."""
        return self._call(Call("POST", f"/v1/cues/{seg(cue_id)}/fire",
                               json=compact(send_at=send_at)))


class Executions(Resource):
    """``client.executions``: listing, worker claims, heartbeats, outcomes, verification."""

    def list(self, *, cue_id: str | None = None, status: str | None = None,
             status_in: Sequence[str] | None = None, worker_id: str | None = None,
             outcome_state: str | None = None, limit: int | None = None,
             offset: int | None = None) -> Any:
        """``GET /v1/executions`` (``status`` and ``status_in`` are mutually exclusive)."""
        return self._call(Call("GET", "/v1/executions", params={
            "cue_id": cue_id, "status": status, "status__in": status_in,
            "worker_id": worker_id, "outcome_state": outcome_state, "limit": limit,
            "offset": offset}))

    def get(self, execution_id: str) -> Any:
        """``GET /v1/executions/{id}``."""
        return self._call(Call("GET", f"/v1/executions/{seg(execution_id)}"))

    def claimable(self, *, task: str | None = None) -> Any:
        """``GET /v1/executions/claimable`` → ``{executions: [...]}`` for worker cues."""
        return self._call(Call("GET", "/v1/executions/claimable", params={"task": task}))

    def claim(self, execution_id: str, worker_id: str) -> Any:
        """``POST /v1/executions/{id}/claim`` → ``{claimed, execution_id, lease_seconds}``."""
        return self._call(Call("POST", f"/v1/executions/{seg(execution_id)}/claim",
                               json={"worker_id": worker_id}))

    def claim_next(self, worker_id: str) -> Any:
        """``POST /v1/executions/claim``: the oldest claimable execution (409 when none)."""
        return self._call(Call("POST", "/v1/executions/claim", json={"worker_id": worker_id}))

    def heartbeat(self, execution_id: str, *, worker_id: str | None = None) -> Any:
        """``POST /v1/executions/{id}/heartbeat``: extend the lease of a claimed execution."""
        headers = {"X-Worker-Id": worker_id} if worker_id else {}
        return self._call(Call("POST", f"/v1/executions/{seg(execution_id)}/heartbeat",
                               json={}, headers=headers))

    def report_outcome(self, execution_id: str, *, success: bool,
                       result: str | None = None, error: str | None = None,
                       metadata: Mapping[str, Any] | None = None,
                       external_id: str | None = None, result_url: str | None = None,
                       result_ref: str | None = None, result_type: str | None = None,
                       summary: str | None = None,
                       artifacts: builtins.list[Any] | None = None) -> Any:
        """``POST /v1/executions/{id}/outcome`` (write-once: a second report is 409)."""
        body = compact(success=success, result=result, error=error, metadata=metadata,
                       external_id=external_id, result_url=result_url, result_ref=result_ref,
                       result_type=result_type, summary=summary, artifacts=artifacts)
        return self._call(Call("POST", f"/v1/executions/{seg(execution_id)}/outcome",
                               json=body))

    def replay(self, execution_id: str) -> Any:
        """``POST /v1/executions/{id}/replay``: a fresh execution of a finished one."""
        return self._call(Call("POST", f"/v1/executions/{seg(execution_id)}/replay"))

    def verify(self, execution_id: str, *, valid: bool = True,
               reason: str | None = None) -> Any:
        """``POST /v1/executions/{id}/verify``: accept or reject a reported outcome."""
        return self._call(Call("POST", f"/v1/executions/{seg(execution_id)}/verify",
                               json=compact(valid=valid, reason=reason)))

    def mark_verification_pending(self, execution_id: str) -> Any:
        """``POST /v1/executions/{id}/verification-pending``."""
        return self._call(Call("POST",
                               f"/v1/executions/{seg(execution_id)}/verification-pending"))

    def update_evidence(self, execution_id: str, **evidence: Any) -> Any:
        """``PATCH /v1/executions/{id}/evidence`` (``external_id``, ``result_url``, …)."""
        return self._call(Call("PATCH", f"/v1/executions/{seg(execution_id)}/evidence",
                               json=compact(**evidence)))


class Workers(Resource):
    """``client.workers``: worker liveness."""

    def heartbeat(self, worker_id: str, *, handlers: Sequence[str] | None = None) -> Any:
        """``POST /v1/worker/heartbeat``: register/refresh a worker and the tasks it handles."""
        return self._call(Call("POST", "/v1/worker/heartbeat", json={
            "worker_id": worker_id, "handlers": list(handlers) if handlers is not None else None}))

    def list(self) -> Any:
        """``GET /v1/workers`` → ``{workers: [...]}``, most recent heartbeat first."""
        return self._call(Call("GET", "/v1/workers"))

    def delete(self, worker_id: str) -> Any:
        """``DELETE /v1/workers/{worker_id}``."""
        return self._call(Call("DELETE", f"/v1/workers/{seg(worker_id)}"))


class Usage(Resource):
    """``client.usage``."""

    def get(self) -> Any:
        """``GET /v1/usage``: plan, this month's cue/execution/outcome counts and limits."""
        return self._call(Call("GET", "/v1/usage"))
