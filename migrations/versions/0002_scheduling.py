"""scheduling: cues, executions (the delivery queue), workers, monthly execution usage

Revision ID: 0002_scheduling
Revises: 0001_users
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_scheduling"
down_revision = "0001_users"
branch_labels = None
depends_on = None


def _in(column, values):
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


CUE_STATUSES = ("active", "paused", "completed", "failed")
TRANSPORTS = ("webhook", "worker")
SCHEDULE_TYPES = ("recurring", "once")
CALLBACK_METHODS = ("POST", "GET", "PUT", "PATCH")
EXECUTION_STATUSES = ("pending", "delivering", "success", "failed", "retrying", "retry_ready",
                      "missed", "pending_outcome", "outcome_timeout")
TRIGGERS = ("scheduler", "manual_fire", "replay")


def upgrade():
    op.create_table(
        "cues",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("transport", sa.String(length=10), nullable=False),
        sa.Column("schedule_type", sa.String(length=10), nullable=False),
        sa.Column("schedule_cron", sa.String(length=255), nullable=True),
        sa.Column("schedule_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("schedule_timezone", sa.String(length=64), nullable=False),
        sa.Column("callback_url", sa.Text(), nullable=True),
        sa.Column("callback_method", sa.String(length=10), nullable=False),
        sa.Column("callback_headers", sa.JSON(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("retry_max_attempts", sa.Integer(), nullable=False),
        sa.Column("retry_backoff_minutes", sa.JSON(), nullable=False),
        sa.Column("on_failure", sa.JSON(), nullable=True),
        sa.Column("verification_mode", sa.String(length=32), nullable=True),
        sa.Column("next_run", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_count", sa.Integer(), nullable=False),
        sa.Column("fired_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(_in("status", CUE_STATUSES), name=op.f("ck_cues_status")),
        sa.CheckConstraint(_in("transport", TRANSPORTS), name=op.f("ck_cues_transport")),
        sa.CheckConstraint(_in("schedule_type", SCHEDULE_TYPES),
                           name=op.f("ck_cues_schedule_type")),
        sa.CheckConstraint(_in("callback_method", CALLBACK_METHODS),
                           name=op.f("ck_cues_callback_method")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_cues_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cues")),
        sa.UniqueConstraint("user_id", "name", name=op.f("uq_cues_user_id_name")),
    )
    op.create_index(op.f("ix_cues_user_id"), "cues", ["user_id"], unique=False)
    op.create_index(op.f("ix_cues_status_next_run"), "cues", ["status", "next_run"],
                    unique=False)

    op.create_table(
        "executions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("cue_id", sa.String(length=16), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("triggered_by", sa.String(length=20), nullable=False),
        sa.Column("replayed_from", sa.Uuid(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by_worker", sa.String(length=255), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.Column("outcome_state", sa.String(length=32), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(_in("status", EXECUTION_STATUSES),
                           name=op.f("ck_executions_status")),
        sa.CheckConstraint(_in("triggered_by", TRIGGERS),
                           name=op.f("ck_executions_triggered_by")),
        sa.ForeignKeyConstraint(["cue_id"], ["cues.id"],
                                name=op.f("fk_executions_cue_id_cues"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_executions")),
        sa.UniqueConstraint("cue_id", "scheduled_for",
                            name=op.f("uq_executions_cue_id_scheduled_for")),
    )
    op.create_index(op.f("ix_executions_cue_id"), "executions", ["cue_id"], unique=False)
    op.create_index(op.f("ix_executions_status_scheduled_for"), "executions",
                    ["status", "scheduled_for"], unique=False)
    op.create_index(op.f("ix_executions_status_next_retry_at"), "executions",
                    ["status", "next_retry_at"], unique=False)

    op.create_table(
        "workers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("worker_id", sa.String(length=255), nullable=False),
        sa.Column("handlers", sa.JSON(), nullable=True),
        sa.Column("last_heartbeat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_workers_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
        sa.UniqueConstraint("user_id", "worker_id", name=op.f("uq_workers_user_id_worker_id")),
    )
    op.create_index(op.f("ix_workers_user_id"), "workers", ["user_id"], unique=False)

    op.create_table(
        "execution_usage",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("executions", sa.Integer(), nullable=False),
        sa.Column("limit_reached_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_execution_usage_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "month", name=op.f("pk_execution_usage")),
    )


def downgrade():
    op.drop_table("execution_usage")
    op.drop_index(op.f("ix_workers_user_id"), table_name="workers")
    op.drop_table("workers")
    op.drop_index(op.f("ix_executions_status_next_retry_at"), table_name="executions")
    op.drop_index(op.f("ix_executions_status_scheduled_for"), table_name="executions")
    op.drop_index(op.f("ix_executions_cue_id"), table_name="executions")
    op.drop_table("executions")
    op.drop_index(op.f("ix_cues_status_next_run"), table_name="cues")
    op.drop_index(op.f("ix_cues_user_id"), table_name="cues")
    op.drop_table("cues")
