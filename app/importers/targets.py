"""Cueline's tables as an import writes them: the columns it sets and the unique keys it must
not break (besides primary keys).

Columns that only Cueline keeps (``users.active``, ``execution_usage.limit_reached_at``) are
not listed: an import leaves them at their defaults on insert and never touches them after.
"""

from __future__ import annotations

from app.importers.engine import TargetTable, UniqueKey

USERS = TargetTable(
    "users",
    ("id", "email", "slug", "plan", "active_cue_limit", "monthly_execution_limit",
     "monthly_message_limit", "rate_limit_per_minute", "api_key_hash", "api_key_prefix",
     "api_key_encrypted", "webhook_secret", "external_owner", "created_at", "updated_at"),
    (UniqueKey(("email",), "email_taken", "this email"),
     UniqueKey(("slug",), "slug_taken", "this slug"),
     UniqueKey(("api_key_hash",), "api_key_taken", "this API key")),
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

EXECUTIONS = TargetTable(
    "executions",
    ("id", "cue_id", "scheduled_for", "status", "triggered_by", "replayed_from", "http_status",
     "attempts", "error_message", "response_body", "started_at", "delivered_at",
     "last_attempt_at", "next_retry_at", "claimed_by_worker", "claimed_at", "last_heartbeat_at",
     "outcome", "outcome_state", "evidence", "created_at", "updated_at"),
    (UniqueKey(("cue_id", "scheduled_for"), "execution_slot_taken",
               "this cue's scheduled time"),),
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
