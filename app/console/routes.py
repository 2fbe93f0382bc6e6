"""The operator console's blueprint: HTML pages at ``/console`` (mounted by ``CONSOLE_ENABLED``).

A plain Flask blueprint, not part of the OpenAPI document.  Every view but the sign-in pages and
the static assets needs a live operator session (``before_request``); every POST also needs the
form's CSRF token, and every POST by an operator is written to the audit trail with the
operator as actor (``after_request``), whatever its outcome.  Errors under ``/console`` are HTML
pages (see :func:`app.errors.register_html_errors`); the views call the same services as the
API and the CLI.
"""

from __future__ import annotations

import secrets
import uuid

from flask import (
    Blueprint,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from app.auth.tokens import hash_secret
from app.console import auth, charts, queries
from app.db import utcnow
from app.errors import AppError, Conflict, NotFound, register_html_errors
from app.extensions import db
from app.ratelimit import client_address, limit

blp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
                static_folder="static", static_url_path="/static")

#: Views that answer without a session (they carry their own CSRF binding).
PUBLIC_ENDPOINTS = frozenset({"console.static", "console.login", "console.login_submit",
                              "console.login_link", "console.login_link_submit"})
#: Lifetime of the cookie that binds the sign-in forms' CSRF tokens.
PRE_SESSION_SECONDS = 3600
#: Notices shown after an action's redirect (never text from the query string itself).
NOTICES = {
    "deactivated": "The user is deactivated: every credential is refused, cues stopped.",
    "reactivated": "The user is active again.",
    "retired": "The key is retired: it is refused from the next request on.",
    "revoked": "The service principal is revoked: every key of it is refused.",
    "paused": "The cue is paused.",
    "resumed": "The cue is active again.",
    "fired": "A manual execution was queued; it appears in the timeline below.",
    "signed_out": "You are signed out.",
}


# -- app wiring -------------------------------------------------------------------------------


@blp.record_once
def _wire(state) -> None:
    """On registration: HTML errors under /console.  (The API's limiter never counts /console
    paths: its sign-in forms carry their own limits; signed-in operators are not throttled.)"""
    register_html_errors(state.app, "/console", render_error)


def _secure() -> bool:
    return current_app.config["ENV"] not in ("development", "test")


def _headers(response, *, cache: bool = False):
    """Security headers of every console response: no framing, no inline code, no caching."""
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if not cache:
        response.headers["Cache-Control"] = "no-store"
    return response


def _csrf() -> str:
    """The CSRF token for forms on the page being rendered."""
    secret = current_app.config["SESSION_SECRET"]
    session = g.get("console_session")
    if session is not None:
        return auth.csrf_token(secret, session.token_hash)
    return auth.csrf_token(secret, _pre_session_binding())


def _pre_session_binding() -> str:
    """The pre-sign-in cookie's value (a fresh one is set on the response when missing)."""
    value = g.get("console_pre") or request.cookies.get(auth.PRE_SESSION_COOKIE)
    if not value or len(value) != 64:
        value = secrets.token_hex(32)
        g.console_pre_new = value
    g.console_pre = value
    return value


def page(template: str, http_status: int = 200, /, **context):
    """Render a console page with the operator, the CSRF token and the security headers."""
    config = current_app.config
    html = render_template(template, operator=g.get("console_session"), csrf_token=_csrf(),
                           cues_enabled=not config["DISABLE_CUE_PRIMITIVE"],
                           notice=NOTICES.get(request.args.get("notice", "")), **context)
    response = make_response(html, http_status)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    return _headers(response)


def render_error(error: AppError):
    """The HTML page of an error under /console (status, message, code and request id)."""
    response = page("console/error.html", error.status, error=error,
                    request_id=g.get("request_id", ""))
    for name, value in error.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    _set_pre_cookie(response)
    return response


def _set_pre_cookie(response) -> None:
    value = g.pop("console_pre_new", None)
    if value:
        response.set_cookie(auth.PRE_SESSION_COOKIE, value, max_age=PRE_SESSION_SECONDS,
                            path="/console", secure=_secure(), httponly=True, samesite="Lax")


# -- authentication, CSRF, audit --------------------------------------------------------------


@blp.before_request
def _authenticate():
    """Resolve the operator from the console cookie (never from API credentials), send
    strangers to the sign-in page, and refuse a POST without its form's CSRF token."""
    config = current_app.config
    g.console_session = None
    if request.endpoint in PUBLIC_ENDPOINTS:
        if request.method == "POST" and not auth.csrf_valid(
                config["SESSION_SECRET"], request.cookies.get(auth.PRE_SESSION_COOKIE),
                request.form.get("csrf_token")):
            raise AppError("csrf_failed", "The form has expired or did not come from this "
                                          "console; reload the page and try again", 403)
        return None
    session = auth.current_session(request.cookies.get(auth.SESSION_COOKIE),
                                   config["CONSOLE_ADMINS"])
    db.session.rollback()  # the look-up must not hold a transaction open through the view
    if session is None:
        return redirect(url_for("console.login"), 303)
    g.console_session = session
    if request.method == "POST" and not auth.csrf_valid(
            config["SESSION_SECRET"], session.token_hash, request.form.get("csrf_token")):
        raise AppError("csrf_failed", "The form has expired or did not come from this "
                                      "console; reload the page and try again", 403)
    return None


@blp.after_request
def _finish(response):
    """Audit every POST of an operator (at once: they are rare and must not be lost), set the
    pre-sign-in cookie when one was minted, and add the security headers."""
    session = g.get("console_session")
    if session is not None and request.method == "POST":
        from app.auth.audit import record_actor_request

        record_actor_request(auth.actor(session), str(session.id), g.get("console_subject"),
                             response.status_code, durable=True)
    _set_pre_cookie(response)
    return _headers(response, cache=request.endpoint == "console.static")


def _back(endpoint: str, notice: str, **values):
    return redirect(url_for(endpoint, notice=notice, **values), 303)


def _email_key() -> str:
    value = (request.form.get("email") or "").strip().lower()
    return f"email:{hash_secret(value)}"


# -- sign-in ----------------------------------------------------------------------------------


@blp.get("/login")
def login():
    """Sign-in form: an operator's address gets a one-time link by e-mail."""
    current = auth.current_session(request.cookies.get(auth.SESSION_COOKIE),
                                   current_app.config["CONSOLE_ADMINS"])
    db.session.rollback()
    if current is not None:
        return redirect(url_for("console.overview"), 303)
    return page("console/login.html")


@blp.post("/login")
@limit("10/hour", key=client_address, scope="console-login-addr")
@limit("5/hour", key=_email_key, scope="console-login-email")
def login_submit():
    """Send a sign-in link (the answer is the same whether the address is an operator's)."""
    config = current_app.config
    email = (request.form.get("email") or "").strip()
    if not 3 <= len(email) <= 254 or "@" not in email:
        return page("console/login.html", 422, error="Enter your e-mail address.", email=email)
    auth.request_login_link(email, config["CONSOLE_ADMINS"], config["BASE_URL"])
    return page("console/login_sent.html")


@blp.get("/login/link")
def login_link():
    """A sign-in link asks to confirm: a GET never signs in (mail scanners open links)."""
    link = auth.pending_link((request.args.get("token") or "").strip())
    if link is None:
        raise AppError("invalid_link", "This sign-in link is invalid, expired or already "
                                       "used; ask for a new one", 400)
    response = page("console/login_link.html", email=link.email,
                    token=request.args.get("token", "").strip())
    response.headers["Referrer-Policy"] = "no-referrer"  # the URL holds the token
    return response


@blp.post("/login/link")
@limit("30/hour", key=client_address, scope="console-link-addr")
def login_link_submit():
    """Spend a sign-in link and open the operator's session."""
    config = current_app.config
    new = auth.spend_login_link((request.form.get("token") or "").strip(),
                                config["CONSOLE_ADMINS"], config["CONSOLE_SESSION_HOURS"])
    g.console_session = new.session  # audited as the operator's first action
    response = redirect(url_for("console.overview"), 303)
    response.set_cookie(auth.SESSION_COOKIE, new.token,
                        max_age=config["CONSOLE_SESSION_HOURS"] * 3600, path="/console",
                        secure=_secure(), httponly=True, samesite="Lax")
    response.delete_cookie(auth.PRE_SESSION_COOKIE, path="/console")
    return response


@blp.route("/logout", methods=["POST"])
def logout():
    """Sign out: this session's cookie is refused from now on."""
    auth.end_session(g.console_session.id)
    response = redirect(url_for("console.login", notice="signed_out"), 303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/console")
    return response


# -- overview ---------------------------------------------------------------------------------


@blp.route("/")
def overview():
    """Health at a glance: database, Redis, workers, queues, lateness and outcomes (24 h)."""
    from app.system.services import health_report

    config = current_app.config
    now = utcnow()
    report = health_report()
    buckets, latest_start = queries.last_24_hours(now)
    oldest = queries.oldest_due_pending(now)
    backlog_seconds = (now - oldest).total_seconds() if oldest else 0.0
    behind_after = max(60.0, 10 * config["POLLER_INTERVAL_SECONDS"])
    context = {
        "report": report, "buckets": buckets, "latest_start": latest_start,
        "backlog_seconds": backlog_seconds, "worker_behind": backlog_seconds > behind_after,
        "message_backlog": queries.message_backlog(), "totals": queries.totals(),
        "redis": queries.redis_status(), "now": now,
        "outcomes_svg": charts.outcomes_chart(buckets),
        "lateness_svg": charts.lateness_chart(buckets),
        "outcome_groups": [name for name, _statuses in queries.OUTCOME_GROUPS],
        "format_seconds": charts.format_seconds,
        "heartbeat_timeout": config["WORKER_HEARTBEAT_TIMEOUT_SECONDS"],
    }
    db.session.rollback()
    return page("console/overview.html", **context)


# -- users ------------------------------------------------------------------------------------


def _user_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound("user_not_found", f"No user with id {raw[:40]!r}") from None


@blp.route("/users")
def users():
    """Users: search by id, e-mail or slug; plan, limits, usage this month, state."""
    search = request.args.get("q", "")
    state = request.args.get("state", "")
    result = queries.list_users(search, state, request.args.get("after"))
    return page("console/users.html", page_=result, q=search, state=state)


@blp.route("/users/<user_id>")
def user_detail(user_id):
    """One user: limits, usage, cues, and the deactivate / reactivate actions."""
    from app.quotas.messages import messages_this_month
    from app.users.services import account_summary, get_user

    user = get_user(_user_id(user_id))
    return page("console/user.html", user=user, summary=account_summary(user),
                messages_month=messages_this_month(user.id, utcnow()),
                cue_counts=queries.user_cue_counts(user.id))


@blp.route("/users/<user_id>/deactivate", methods=["POST"])
def user_deactivate(user_id):
    """Deactivate a user (every credential refused, cues stopped; nothing deleted)."""
    from app.users.services import deactivate_user

    g.console_subject = _user_id(user_id)
    deactivate_user(g.console_subject)
    return _back("console.user_detail", "deactivated", user_id=g.console_subject)


@blp.route("/users/<user_id>/reactivate", methods=["POST"])
def user_reactivate(user_id):
    """Reactivate a deactivated user."""
    from app.users.services import reactivate_user

    g.console_subject = _user_id(user_id)
    reactivate_user(g.console_subject)
    return _back("console.user_detail", "reactivated", user_id=g.console_subject)


# -- service principals -----------------------------------------------------------------------


@blp.route("/principals")
def principals():
    """Service principals and their keys, with last use; rotate, retire, revoke."""
    return page("console/principals.html", principals=queries.principals_with_keys(),
                delegation=current_app.config["EXTERNAL_AUTH_BACKEND"])


@blp.route("/principals/<name>/rotate", methods=["POST"])
def principal_rotate(name):
    """Add a second live key to a principal and show it once."""
    from app.auth.principals import rotate_key

    new = rotate_key(name)
    return page("console/principal_key.html", new=new)


@blp.route("/principals/<name>/keys/<key_id>/retire", methods=["POST"])
def principal_retire_key(name, key_id):
    """Retire one live key of a principal (the last live key cannot be retired)."""
    from app.auth.principals import retire_key

    retire_key(name, key_id)
    return _back("console.principals", "retired")


@blp.route("/principals/<name>/revoke", methods=["POST"])
def principal_revoke(name):
    """Revoke a principal: every key of it is refused from the next request on."""
    from app.auth.principals import revoke_principal

    revoke_principal(name)
    return _back("console.principals", "revoked")


# -- cues -------------------------------------------------------------------------------------


def _cues_enabled() -> None:
    if current_app.config["DISABLE_CUE_PRIMITIVE"]:
        raise NotFound("not_found", "Cues are disabled on this server (DISABLE_CUE_PRIMITIVE)")


def _cue_and_owner(cue_id: str):
    from app.scheduling.models import Cue
    from app.users.services import get_user

    _cues_enabled()
    cue = db.session.get(Cue, cue_id) if len(cue_id) <= 16 else None
    if cue is None:
        raise NotFound("cue_not_found", f"Cue {cue_id[:40]!r} not found")
    return cue, get_user(cue.user_id)


@blp.route("/cues")
def cues():
    """Cues of every user, filtered by user and status."""
    _cues_enabled()
    user_ref = request.args.get("user", "").strip()
    status = request.args.get("status", "")
    user = queries.find_user(user_ref)
    if user_ref and user is None:
        result = queries.Page(rows=[], next_cursor=None)
    else:
        result = queries.list_cues(user, status, request.args.get("after"))
    from app.scheduling.models import CUE_STATUSES

    return page("console/cues.html", page_=result, user_ref=user_ref, user=user, status=status,
                statuses=CUE_STATUSES, unknown_user=bool(user_ref and user is None))


@blp.route("/cues/<cue_id>")
def cue_detail(cue_id):
    """One cue and its execution timeline: attempts, response codes, errors."""
    cue, owner = _cue_and_owner(cue_id)
    timeline = queries.cue_timeline(cue, request.args.get("after"))
    return page("console/cue.html", cue=cue, owner=owner, page_=timeline)


@blp.route("/cues/<cue_id>/pause", methods=["POST"])
def cue_pause(cue_id):
    """Pause an active cue."""
    from app.scheduling.services.cues import update_cue

    cue, owner = _cue_and_owner(cue_id)
    g.console_subject = owner.id
    if cue.status != "active":
        raise Conflict("cue_not_active", f"Only an active cue can be paused (it is {cue.status})")
    update_cue(owner, cue.id, {"status": "paused"})
    return _back("console.cue_detail", "paused", cue_id=cue.id)


@blp.route("/cues/<cue_id>/resume", methods=["POST"])
def cue_resume(cue_id):
    """Resume a paused cue."""
    from app.scheduling.services.cues import update_cue

    cue, owner = _cue_and_owner(cue_id)
    g.console_subject = owner.id
    if cue.status != "paused":
        raise Conflict("cue_not_paused", f"Only a paused cue can be resumed (it is {cue.status})")
    update_cue(owner, cue.id, {"status": "active"})
    return _back("console.cue_detail", "resumed", cue_id=cue.id)


@blp.route("/cues/<cue_id>/fire", methods=["POST"])
def cue_fire(cue_id):
    """Queue a manual execution of a cue now."""
    from app.scheduling.services.cues import fire_cue

    cue, owner = _cue_and_owner(cue_id)
    g.console_subject = owner.id
    fire_cue(owner, cue.id, None)
    return _back("console.cue_detail", "fired", cue_id=cue.id)


@blp.route("/failures")
def failures():
    """Failed, missed and timed-out executions, newest first."""
    from app.scheduling.models import FAILURE_STATUSES

    _cues_enabled()
    status = request.args.get("status", "")
    result = queries.list_failures(status, request.args.get("after"))
    return page("console/failures.html", page_=result, status=status, statuses=FAILURE_STATUSES)


# -- messages and audit -----------------------------------------------------------------------


@blp.route("/messages")
def messages():
    """Messages by agent (received or sent) and delivery state."""
    from app.messaging.models import DELIVERY_STATES

    agent_ref = request.args.get("agent", "").strip()
    direction = request.args.get("direction", "to")
    state = request.args.get("state", "")
    agent = queries.find_agent(agent_ref)
    if agent_ref and agent is None:
        result = queries.Page(rows=[], next_cursor=None)
    else:
        result = queries.list_messages(agent, direction, state, request.args.get("after"))
    return page("console/messages.html", page_=result, agent_ref=agent_ref, agent=agent,
                direction=direction, state=state, states=DELIVERY_STATES,
                unknown_agent=bool(agent_ref and agent is None))


@blp.route("/audit")
def audit():
    """The audit trail: service principals' requests and operators' actions."""
    filters = queries.parse_audit_filters(request.args)
    result = queries.list_audit(filters, request.args.get("after"))
    return page("console/audit.html", page_=result, filters=filters,
                actor_prefix=auth.ACTOR_PREFIX)


@blp.app_template_filter("ago")
def _ago(value) -> str:
    """``3 min ago`` for a past timestamp (empty for None)."""
    if value is None:
        return "never"
    seconds = (utcnow() - value).total_seconds()
    if seconds < 0:
        return "in " + charts.format_seconds(-seconds)
    return charts.format_seconds(seconds) + " ago"


@blp.app_template_filter("utc")
def _utc(value) -> str:
    """A timestamp as ``2026-11-29 14:03:07 UTC``."""
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S} UTC"

