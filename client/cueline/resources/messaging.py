"""Agents and messages (``/v1/agents``, ``/v1/messages``)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from cueline._base import Call, compact
from cueline.errors import BodyVerifyMismatchError
from cueline.resources._common import UNSET, Resource, given, seg
from cueline.resources.account import CONFIRM

When = str | datetime | None


def _roster_result(response: httpx.Response, data: Any) -> Any:
    """Attach the ``ETag`` header to the roster body; ``None`` for 304 Not Modified."""
    if response.status_code == 304:
        return None
    if isinstance(data, dict) and "etag" not in data:
        data = {**data, "etag": response.headers.get("ETag")}
    return data


class Agents(Resource):
    """``client.agents``.  ``ref`` is an ``agt_…`` id or an ``agent_slug@user_slug`` address."""

    def create(self, display_name: str, *, slug: str | None = None,
               webhook_url: str | None = None,
               metadata: Mapping[str, Any] | None = None) -> Any:
        """``POST /v1/agents``.  With ``webhook_url`` the answer holds the signing secret once."""
        return self._call(Call("POST", "/v1/agents", json=compact(
            display_name=display_name, slug=slug, webhook_url=webhook_url, metadata=metadata)))

    def list(self, *, status: str | None = None, include_deleted: bool | None = None,
             limit: int | None = None, offset: int | None = None) -> Any:
        """``GET /v1/agents`` → ``{agents, total, limit, offset}``."""
        return self._call(Call("GET", "/v1/agents", params={
            "status": status, "include_deleted": include_deleted, "limit": limit,
            "offset": offset}))

    def roster(self, *, if_none_match: str | None = None) -> Any:
        """``GET /v1/agents/roster``; the body gets an ``etag`` key.  Pass a previous ``etag``
        as ``if_none_match`` to get ``None`` when nothing changed (304)."""
        headers = {"If-None-Match": if_none_match} if if_none_match else {}
        return self._call(Call("GET", "/v1/agents/roster", headers=headers,
                               transform=_roster_result, accept=(304,)))

    def get(self, ref: str, *, include_deleted: bool | None = None) -> Any:
        """``GET /v1/agents/{ref}``."""
        return self._call(Call("GET", f"/v1/agents/{seg(ref)}",
                               params={"include_deleted": include_deleted}))

    def update(self, ref: str, *, display_name: Any = UNSET, webhook_url: Any = UNSET,
               status: Any = UNSET, metadata: Any = UNSET) -> Any:
        """``PATCH /v1/agents/{ref}``; ``webhook_url=None`` clears the URL and its secret."""
        body = given(display_name=display_name, webhook_url=webhook_url, status=status,
                     metadata=metadata)
        if not body:
            raise ValueError("update() needs at least one field")
        return self._call(Call("PATCH", f"/v1/agents/{seg(ref)}", json=body))

    def delete(self, ref: str) -> Any:
        """``DELETE /v1/agents/{ref}`` (soft delete)."""
        return self._call(Call("DELETE", f"/v1/agents/{seg(ref)}"))

    def get_webhook_secret(self, ref: str) -> Any:
        """``GET /v1/agents/{ref}/webhook-secret``."""
        return self._call(Call("GET", f"/v1/agents/{seg(ref)}/webhook-secret"))

    def regenerate_webhook_secret(self, ref: str) -> Any:
        """``POST /v1/agents/{ref}/webhook-secret/regenerate``."""
        return self._call(Call("POST", f"/v1/agents/{seg(ref)}/webhook-secret/regenerate",
                               headers=dict(CONFIRM)))

    def inbox(self, ref: str, *, state: Sequence[str] | None = None, since: When = None,
              thread_id: str | None = None, counterpart: str | None = None,
              limit: int | None = None, offset: int | None = None,
              count_only: bool | None = None) -> Any:
        """``GET /v1/agents/{ref}/inbox``: fetching marks due queued messages delivered."""
        return self._call(Call("GET", f"/v1/agents/{seg(ref)}/inbox", params={
            "state": state, "since": since, "thread_id": thread_id,
            "counterpart": counterpart, "limit": limit, "offset": offset,
            "count_only": count_only}))

    def sent(self, ref: str, *, state: Sequence[str] | None = None, since: When = None,
             thread_id: str | None = None, counterpart: str | None = None,
             limit: int | None = None, offset: int | None = None,
             count_only: bool | None = None) -> Any:
        """``GET /v1/agents/{ref}/sent`` (no side effects)."""
        return self._call(Call("GET", f"/v1/agents/{seg(ref)}/sent", params={
            "state": state, "since": since, "thread_id": thread_id,
            "counterpart": counterpart, "limit": limit, "offset": offset,
            "count_only": count_only}))


def _echo_checker(sent: str):
    """Verify the server's ``body_received`` echo against the body that was sent."""
    expected_sha = hashlib.sha256(sent.encode("utf-8")).hexdigest()

    def check(response: httpx.Response, data: Any) -> Any:
        if isinstance(data, dict) and "body_received" in data:
            received = data["body_received"]
            if isinstance(received, dict):
                received = received.get("body")
            digest = data.get("body_received_sha256")
            if (isinstance(received, str) and received != sent) or (
                    isinstance(digest, str) and digest != expected_sha):
                raise BodyVerifyMismatchError(sent, data["body_received"],
                                              request_id=response.headers.get("X-Request-Id"))
        return data

    return check


class Messages(Resource):
    """``client.messages``."""

    def send(self, from_agent: str, to: str, body: str, *, subject: str | None = None,
             reply_to: str | None = None, priority: int | None = None,
             expects_reply: bool | None = None, reply_to_agent: str | None = None,
             metadata: Mapping[str, Any] | None = None,
             correlation_id: str | None = None, send_at: When = None,
             idempotency_key: str | None = None, verify: bool = True) -> Any:
        """``POST /v1/messages`` from the caller's agent ``from_agent`` to ``to``.

        With ``idempotency_key`` a repeat returns the original message (and the call may be
        retried on 429/503); without one it is never retried.  ``verify`` asks the server to
        echo the body and raises :class:`~cueline.BodyVerifyMismatchError` if it differs.
        """
        headers = {"X-Cueapi-From-Agent": from_agent}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if verify:
            headers["X-CueAPI-Verify-Echo"] = "true"
        payload = compact(to=to, body=body, subject=subject, reply_to=reply_to,
                          priority=priority, expects_reply=expects_reply,
                          reply_to_agent=reply_to_agent, metadata=metadata,
                          correlation_id=correlation_id, send_at=send_at)
        return self._call(Call("POST", "/v1/messages", json=payload, headers=headers,
                               transform=_echo_checker(body) if verify else None))

    def get(self, message_id: str) -> Any:
        """``GET /v1/messages/{id}`` (visible to the sender's and the recipient's owner)."""
        return self._call(Call("GET", f"/v1/messages/{seg(message_id)}"))

    def mark_read(self, message_id: str) -> Any:
        """``POST /v1/messages/{id}/read`` (idempotent on the server)."""
        return self._call(Call("POST", f"/v1/messages/{seg(message_id)}/read", json={}))

    def ack(self, message_id: str) -> Any:
        """``POST /v1/messages/{id}/ack`` (idempotent on the server)."""
        return self._call(Call("POST", f"/v1/messages/{seg(message_id)}/ack", json={}))
