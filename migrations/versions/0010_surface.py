"""surface: alerts, echoes, fire options (payload override, idempotency keys), live-claim
attestation, the users' alert webhook

Revision ID: 0010_surface
Revises: 0009_import
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_surface"
down_revision = "0009_import"
branch_labels = None
depends_on = None

ALERT_TYPES = ("outcome_timeout", "verification_failed", "consecutive_failures")
SEVERITIES = ("info", "warning", "critical")
DELIVERY_STATES = ("pending", "sending", "delivered", "failed")
MERGE_STRATEGIES = ("merge", "replace")


def _in(column, values):
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade():
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("alert_webhook_url", sa.String(length=2048), nullable=True))
        batch.add_column(sa.Column("alert_webhook_secret", sa.String(length=64), nullable=True))
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("payload_override", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("payload_merge_strategy", sa.String(length=10),
                                   nullable=True))
        batch.add_column(sa.Column("live_claim_session_token", sa.String(length=128),
                                   nullable=True))
        batch.add_column(sa.Column("live_claimed_at", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.create_check_constraint(op.f("ck_executions_payload_merge_strategy"),
                                      _in("payload_merge_strategy", MERGE_STRATEGIES))
    op.create_table(
        "fire_idempotency_keys",
        sa.Column("cue_id", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cue_id"], ["cues.id"], ondelete="CASCADE",
                                name=op.f("fk_fire_idempotency_keys_cue_id_cues")),
        sa.ForeignKeyConstraint(["execution_id"], ["executions.id"], ondelete="CASCADE",
                                name=op.f("fk_fire_idempotency_keys_execution_id_executions")),
        sa.PrimaryKeyConstraint("cue_id", "key", name=op.f("pk_fire_idempotency_keys")),
    )
    op.create_index(op.f("ix_fire_idempotency_keys_created_at"), "fire_idempotency_keys",
                    ["created_at"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("cue_id", sa.String(length=16), nullable=True),
        sa.Column("execution_id", sa.Uuid(), nullable=True),
        sa.Column("alert_type", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("acknowledged", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivery_state", sa.String(length=16), nullable=True),
        sa.Column("delivery_claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivery_error", sa.String(length=500), nullable=True),
        sa.CheckConstraint(_in("alert_type", ALERT_TYPES), name=op.f("ck_alerts_alert_type")),
        sa.CheckConstraint(_in("severity", SEVERITIES), name=op.f("ck_alerts_severity")),
        sa.CheckConstraint(_in("delivery_state", DELIVERY_STATES),
                           name=op.f("ck_alerts_delivery_state")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_alerts_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(op.f("ix_alerts_user_id_created_at"), "alerts", ["user_id", "created_at"])
    op.create_index(op.f("ix_alerts_delivery_state_created_at"), "alerts",
                    ["delivery_state", "created_at"])
    op.create_index(op.f("ix_alerts_cue_id"), "alerts", ["cue_id"])
    op.create_index(op.f("ix_alerts_execution_id"), "alerts", ["execution_id"])
    op.create_table(
        "echoes",
        sa.Column("token", sa.String(length=256), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_echoes")),
    )
    op.create_index(op.f("ix_echoes_expires_at"), "echoes", ["expires_at"])


def downgrade():
    op.drop_index(op.f("ix_echoes_expires_at"), table_name="echoes")
    op.drop_table("echoes")
    for name in ("ix_alerts_execution_id", "ix_alerts_cue_id",
                 "ix_alerts_delivery_state_created_at", "ix_alerts_user_id_created_at"):
        op.drop_index(op.f(name), table_name="alerts")
    op.drop_table("alerts")
    op.drop_index(op.f("ix_fire_idempotency_keys_created_at"),
                  table_name="fire_idempotency_keys")
    op.drop_table("fire_idempotency_keys")
    with op.batch_alter_table("executions") as batch:
        batch.drop_constraint(op.f("ck_executions_payload_merge_strategy"), type_="check")
        batch.drop_column("live_claimed_at")
        batch.drop_column("live_claim_session_token")
        batch.drop_column("payload_merge_strategy")
        batch.drop_column("payload_override")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("alert_webhook_secret")
        batch.drop_column("alert_webhook_url")
