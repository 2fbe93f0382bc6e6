"""Service-only endpoints (``/v1/internal``): user mirroring and the audit log.

These need a service client (``Client(token, service=True)``); they send the service credential
alone, never ``X-On-Behalf-Of``, even from an ``as_user`` view.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from cueline._base import SERVICE, Call, compact, validate_user_id
from cueline.resources._common import Resource


def _user_record(user: Mapping[str, Any]) -> dict:
    record = {k: v for k, v in user.items() if v is not None}
    if "id" not in record:
        raise ValueError("every user in sync() needs an 'id'")
    record["id"] = validate_user_id(record["id"])
    return record


class InternalUsers(Resource):
    """``client.internal_users``: keep Cueline's users in step with the integrator's."""

    def upsert(self, user_id: Any, *, email: str, slug: str, plan: str | None = None,
               active_cue_limit: int | None = None,
               monthly_execution_limit: int | None = None,
               monthly_message_limit: int | None = None,
               rate_limit_per_minute: int | None = None,
               external_owner: str | None = None) -> Any:
        """``PUT /v1/internal/users/{id}``: create or update one user (idempotent;
        ``created`` in the answer says which).  Omitted limits keep their stored values."""
        body = compact(email=email, slug=slug, plan=plan, active_cue_limit=active_cue_limit,
                       monthly_execution_limit=monthly_execution_limit,
                       monthly_message_limit=monthly_message_limit,
                       rate_limit_per_minute=rate_limit_per_minute,
                       external_owner=external_owner)
        return self._call(Call("PUT", f"/v1/internal/users/{validate_user_id(user_id)}",
                               json=body, auth=SERVICE))

    def get(self, user_id: Any) -> Any:
        """``GET /v1/internal/users/{id}``: one mirrored user."""
        return self._call(Call("GET", f"/v1/internal/users/{validate_user_id(user_id)}",
                               auth=SERVICE))

    def sync(self, users: Iterable[Mapping[str, Any]]) -> Any:
        """``PUT /v1/internal/users`` with ``{"users": [...]}``: upsert many users at once
        (each a mapping with ``id``, ``email``, ``slug`` and optional limits).  The answer
        has a result per user; valid users are applied even when others are refused."""
        return self._call(Call("PUT", "/v1/internal/users",
                               json={"users": [_user_record(u) for u in users]}, auth=SERVICE))

    def deactivate(self, user_id: Any) -> Any:
        """``DELETE /v1/internal/users/{id}``: deactivate the user (every credential path is
        then refused and their cues pause; nothing is deleted)."""
        return self._call(Call("DELETE", f"/v1/internal/users/{validate_user_id(user_id)}",
                               auth=SERVICE))


class Audit(Resource):
    """``client.audit``: what services did on users' behalf."""

    def list(self, *, principal: str | None = None, user_id: Any = None,
             since: str | datetime | None = None, until: str | datetime | None = None,
             limit: int | None = None, offset: int | None = None) -> Any:
        """``GET /v1/internal/audit`` → ``{records, total, limit, offset}``, newest first:
        each service request (principal, key id, user, method, path, status, request id, at).
        ``since`` is inclusive, ``until`` exclusive."""
        params = {"principal": principal,
                  "user_id": validate_user_id(user_id) if user_id is not None else None,
                  "since": since, "until": until, "limit": limit, "offset": offset}
        return self._call(Call("GET", "/v1/internal/audit", params=params, auth=SERVICE))
