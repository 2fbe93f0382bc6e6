"""Cueline's tables as an import writes them: the columns it sets and the unique keys it must
not break (besides primary keys).

Columns that only Cueline keeps (``users.active``, ``execution_usage.limit_reached_at``,
``alerts.delivery_state``, ``subscriptions.claimed_until``, ``events.tx``, …) are not listed: an
import leaves them at their defaults on insert and never touches them after.

``legacy_columns`` are the column lists of the first version of the import (before alert
webhooks and live claims came along), so a ledger it wrote is still understood.
"""

from __future__ import annotations

from app.importers.engine import TargetTable, UniqueKey

_USERS_V1 = ("id", "email", "slug", "plan", "active_cue_limit", "monthly_execution_limit",
             "monthly_message_limit", "rate_limit_per_minute", "api_key_hash",
             "api_key_prefix", "api_key_encrypted", "webhook_secret", "external_owner",
             "created_at", "updated_at")

USERS = TargetTable(
    "users",
    _USERS_V1 + ("alert_webhook_url", "alert_webhook_secret"),
    (UniqueKey(("email",), "email_taken", "this email"),
     UniqueKey(("slug",), "slug_taken", "this slug"),
     UniqueKey(("api_key_hash",), "api_key_taken", "this API key")),
    legacy_columns=(_USERS_V1,),
)

CUES = TargetTable(
    "cues",
    ("id", "user_id", "name", "description", "status", "transport", "schedule_type",
     "schedule_cron", "schedule_at", "schedule_timezone", "callback_url", "callback_method",
     "callback_headers", "payload", "retry_max_attempts", "retry_backoff_minutes", "on_failure",
     "verification_mode", "next_run", "last_run", "run_count", "fired_count", "created_at",
     "updated_at"),
    (UniqueKey(("user_id", "name"), "cue_name_taken", "this user's cue name"),),
)

_EXECUTIONS_V1 = ("id", "cue_id", "scheduled_for", "status", "triggered_by", "replayed_from",
                  "http_status", "attempts", "error_message", "response_body", "started_at",
                  "delivered_at", "last_attempt_at", "next_retry_at", "claimed_by_worker",
                  "claimed_at", "last_heartbeat_at", "outcome", "outcome_state", "evidence",
                  "created_at", "updated_at")

EXECUTIONS = TargetTable(
    "executions",
    _EXECUTIONS_V1 + ("live_claim_session_token", "live_claimed_at"),
    (UniqueKey(("cue_id", "scheduled_for"), "execution_slot_taken",
               "this cue's scheduled time"),),
    legacy_columns=(_EXECUTIONS_V1,),
)

WORKERS = TargetTable(
    "workers",
    ("id", "user_id", "worker_id", "handlers", "last_heartbeat", "created_at"),
    (UniqueKey(("user_id", "worker_id"), "worker_id_taken", "this user's worker id"),),
)

AGENTS = TargetTable(
    "agents",
    ("id", "user_id", "slug", "display_name", "webhook_url", "webhook_secret", "metadata",
     "status", "last_seen_at", "deleted_at", "created_at", "updated_at"),
    (UniqueKey(("user_id", "slug"), "agent_slug_taken", "this user's live agent slug",
               live_column="deleted_at"),),
)

MESSAGES = TargetTable(
    "messages",
    ("id", "user_id", "to_user_id", "from_agent_id", "to_agent_id", "thread_id", "reply_to",
     "subject", "body", "priority", "requested_priority", "expects_reply", "reply_to_agent_id",
     "delivery_state", "metadata", "idempotency_key", "correlation_id",
     "dispatch_priority_bucket", "message_dispatch_error", "created_at", "delivered_at",
     "read_at", "acked_at", "failed_at", "send_at", "expires_at", "push_attempts",
     "next_attempt_at", "claimed_at"),
)

MESSAGE_IDEMPOTENCY_KEYS = TargetTable(
    "message_idempotency_keys",
    ("user_id", "key", "message_id", "fingerprint", "created_at"),
)

EXECUTION_USAGE = TargetTable("execution_usage", ("user_id", "month", "executions"),
                              counter="executions")

MESSAGE_MONTHLY_COUNTS = TargetTable("message_monthly_counts", ("user_id", "month", "count"),
                                     counter="count")

ALERTS = TargetTable(
    "alerts",
    ("id", "user_id", "cue_id", "execution_id", "alert_type", "severity", "message", "metadata",
     "acknowledged", "created_at"),
)

SUBSCRIPTIONS = TargetTable(
    "subscriptions",
    ("id", "subscriber_agent_id", "event_type", "delivery_target", "webhook_url",
     "webhook_secret", "inline_body", "last_dispatched_event_id", "last_dispatched_at",
     "last_acked_event_id", "consecutive_failures", "paused_until", "created_at",
     "detached_at"),
    (UniqueKey(("subscriber_agent_id", "event_type", "delivery_target"), "subscription_exists",
               "this agent's active subscription to this event type and target",
               live_column="detached_at"),),
)

EVENTS = TargetTable(
    "events",
    ("id", "event_type", "recipient_agent_id", "payload", "emitted_at", "idempotency_key",
     "priority", "digested_at"),
    (UniqueKey(("event_type", "idempotency_key"), "event_idempotency_key_taken",
               "this event type's idempotency key"),),
)

LIVE_SESSIONS = TargetTable(
    "agent_live_sessions",
    ("id", "agent_id", "label", "cue_id", "task_name", "is_default", "transport",
     "monitor_version", "session_token", "daemon_id", "ipc_session_token", "attached_at",
     "detached_at", "last_heartbeat", "last_claim_at", "last_reconciled_at", "created_at"),
    (UniqueKey(("agent_id", "label"), "live_label_taken",
               "this agent's active session label", live_column="detached_at"),
     UniqueKey(("cue_id",), "live_cue_id_taken", "this active session cue id",
               live_column="detached_at"),
     UniqueKey(("agent_id",), "live_default_taken", "this agent's default active session",
               live_column="detached_at", flag_column="is_default")),
)
