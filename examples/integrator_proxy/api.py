"""The proxied API: each end user's cue and message calls, made in Cueline *as that user*.

Every view runs after :func:`~examples.integrator_proxy.auth.login_required` and does the same
three things: make sure the user is mirrored into Cueline (the internal upsert, on first sight
and whenever their plan changed), get an SDK view acting for them (``service.as_user(id)`` — one
shared connection pool for all users), and forward the call.  Ownership checks are Cueline's: the
proxy never sees another user's cues because it only ever asks as the logged-in user.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, current_app, g, request

from examples.integrator_proxy.auth import login_required
from examples.integrator_proxy.errors import ProxyError

bp = Blueprint("api", __name__, url_prefix="/api")

#: Fields of a cue the proxy lets its users set (anything else is dropped, not forwarded).
CUE_FIELDS = ("cron", "at", "timezone", "transport", "callback", "payload", "description",
              "retry", "on_failure")


def _slug_for(user) -> str:
    """A Cueline slug that is stable per user and cannot collide across users."""
    local = re.sub(r"[^a-z0-9]+", "-", user.email.split("@")[0].lower()).strip("-")[:40]
    return f"{local or 'user'}-{user.id.replace('-', '')[:12]}"


def _plan_cap(plan: str) -> int:
    caps = current_app.config["PLAN_CUE_CAPS"]
    return int(caps.get(plan, caps.get("free", 0)))


def cueline_for_user():
    """The SDK view acting for ``g.user``, mirroring the user into Cueline when needed."""
    service = current_app.extensions["cueline"]
    user = g.user
    if user.mirrored_plan != user.plan:
        # Idempotent, so two first requests racing here are harmless.  The proxy's cap is also
        # given to Cueline as the user's active_cue_limit: a second line of defence.
        service.internal_users.upsert(user.id, email=user.email, slug=_slug_for(user),
                                      plan=user.plan, active_cue_limit=_plan_cap(user.plan))
        current_app.extensions["proxy_store"].mark_mirrored(user.id, user.plan)
    return service.as_user(user.id)


def _json_object() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ProxyError(400, "invalid_json", "Send a JSON object")
    return body


def _page() -> dict:
    params = {}
    for name in ("limit", "offset"):
        raw = request.args.get(name)
        if raw is not None:
            if not raw.isdigit():
                raise ProxyError(422, "validation_error", f"{name} must be a whole number")
            params[name] = int(raw)
    return params


@bp.get("/me")
@login_required
def me():
    """The user's Cueline account (limits and usage)."""
    return cueline_for_user().auth.me()


# -- cues -------------------------------------------------------------------------------------
@bp.get("/cues")
@login_required
def list_cues():
    """The user's cues."""
    return cueline_for_user().cues.list(status=request.args.get("status"), **_page())


@bp.post("/cues")
@login_required
def create_cue():
    """Create a cue, within the plan's cap (enforced here, race-free)."""
    body = _json_object()
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ProxyError(422, "validation_error", "name is required")
    if ("cron" in body) == ("at" in body):
        raise ProxyError(422, "validation_error", "Give exactly one of cron or at")
    client = cueline_for_user()
    store, user = current_app.extensions["proxy_store"], g.user
    cap = _plan_cap(user.plan)
    if not store.reserve_cue_slot(user.id, cap):
        raise ProxyError(403, "cue_limit_reached",
                         f"Your {user.plan} plan allows {cap} cues; delete one or upgrade",
                         limit=cap)
    try:
        cue = client.cues.create(name, **{k: body[k] for k in CUE_FIELDS if k in body})
    except BaseException:
        # Not created (or not known to be): give the slot back.  Cueline's own
        # active_cue_limit still bounds the rare case of a lost success response.
        store.release_cue_slot(user.id)
        raise
    return cue, 201


@bp.get("/cues/<cue_id>")
@login_required
def get_cue(cue_id: str):
    """One of the user's cues."""
    return cueline_for_user().cues.get(cue_id)


@bp.delete("/cues/<cue_id>")
@login_required
def delete_cue(cue_id: str):
    """Delete a cue and free its slot."""
    cueline_for_user().cues.delete(cue_id)
    current_app.extensions["proxy_store"].release_cue_slot(g.user.id)
    return "", 204


@bp.post("/cues/<cue_id>/fire")
@login_required
def fire_cue(cue_id: str):
    """Run a cue now."""
    return cueline_for_user().cues.fire(cue_id)


# -- agents and messages ----------------------------------------------------------------------
@bp.get("/agents")
@login_required
def list_agents():
    """The user's agents."""
    return cueline_for_user().agents.list(**_page())


@bp.post("/agents")
@login_required
def create_agent():
    """Create an agent for the user."""
    body = _json_object()
    if not isinstance(body.get("display_name"), str):
        raise ProxyError(422, "validation_error", "display_name is required")
    return cueline_for_user().agents.create(
        body["display_name"], slug=body.get("slug"), metadata=body.get("metadata")), 201


@bp.get("/agents/<ref>/inbox")
@login_required
def inbox(ref: str):
    """Messages received by one of the user's agents."""
    return cueline_for_user().agents.inbox(ref, **_page())


@bp.post("/messages")
@login_required
def send_message():
    """Send a message from one of the user's agents (``Idempotency-Key`` is forwarded)."""
    body = _json_object()
    for field in ("from", "to", "body"):
        if not isinstance(body.get(field), str):
            raise ProxyError(422, "validation_error", f"{field} is required")
    extra: dict[str, Any] = {k: body[k] for k in ("subject", "reply_to", "priority",
                                                 "metadata") if k in body}
    message = cueline_for_user().messages.send(
        body["from"], body["to"], body["body"],
        idempotency_key=request.headers.get("Idempotency-Key"), **extra)
    message.pop("body_received", None)
    message.pop("body_received_sha256", None)
    return message, 201


@bp.get("/messages/<message_id>")
@login_required
def get_message(message_id: str):
    """A message the user sent or received."""
    return cueline_for_user().messages.get(message_id)
