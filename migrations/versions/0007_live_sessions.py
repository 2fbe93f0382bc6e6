"""live sessions: agent_live_sessions (live sessions and IPC attachments), and the execution's
delivery_mode_requested

Revision ID: 0007_live_sessions
Revises: 0006_principals
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_live_sessions"
down_revision = "0006_principals"
branch_labels = None
depends_on = None

_ACTIVE = "detached_at IS NULL"
_ACTIVE_DEFAULT = "is_default AND detached_at IS NULL"


def upgrade():
    op.create_table(
        "agent_live_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("cue_id", sa.String(length=128), nullable=False),
        sa.Column("task_name", sa.String(length=255), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("transport", sa.String(length=8), nullable=False),
        sa.Column("monitor_version", sa.String(length=64), nullable=True),
        sa.Column("session_token", sa.String(length=80), nullable=True),
        sa.Column("daemon_id", sa.Uuid(), nullable=True),
        sa.Column("ipc_session_token", sa.String(length=32), nullable=True),
        sa.Column("attached_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detached_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_heartbeat", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_claim_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_reconciled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("transport IN ('poll', 'ipc')",
                           name=op.f("ck_agent_live_sessions_transport")),
        sa.CheckConstraint("NOT (is_default AND detached_at IS NOT NULL)",
                           name=op.f("ck_agent_live_sessions_detached_not_default")),
        sa.CheckConstraint("(daemon_id IS NULL) = (ipc_session_token IS NULL)",
                           name=op.f("ck_agent_live_sessions_daemon_with_token")),
        sa.CheckConstraint("transport = 'poll' OR daemon_id IS NOT NULL",
                           name=op.f("ck_agent_live_sessions_ipc_has_daemon")),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE",
                                name=op.f("fk_agent_live_sessions_agent_id_agents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_live_sessions")),
    )
    # Labels unique among an agent's active sessions, at most one active default per agent,
    # a cue bound to at most one active session: partial unique indexes, so races end in 409.
    op.create_index("uq_agent_live_sessions_agent_id_label_active", "agent_live_sessions",
                    ["agent_id", "label"], unique=True, sqlite_where=sa.text(_ACTIVE),
                    postgresql_where=sa.text(_ACTIVE))
    op.create_index("uq_agent_live_sessions_agent_id_default", "agent_live_sessions",
                    ["agent_id"], unique=True, sqlite_where=sa.text(_ACTIVE_DEFAULT),
                    postgresql_where=sa.text(_ACTIVE_DEFAULT))
    op.create_index("uq_agent_live_sessions_cue_id_active", "agent_live_sessions", ["cue_id"],
                    unique=True, sqlite_where=sa.text(_ACTIVE),
                    postgresql_where=sa.text(_ACTIVE))
    op.create_index(op.f("ix_agent_live_sessions_agent_id_created_at"), "agent_live_sessions",
                    ["agent_id", "created_at"])
    op.create_index(op.f("ix_agent_live_sessions_daemon_id"), "agent_live_sessions",
                    ["daemon_id"])
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("delivery_mode_requested", sa.String(length=8),
                                   nullable=True))


def downgrade():
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("delivery_mode_requested")
    op.drop_index(op.f("ix_agent_live_sessions_daemon_id"), table_name="agent_live_sessions")
    op.drop_index(op.f("ix_agent_live_sessions_agent_id_created_at"),
                  table_name="agent_live_sessions")
    op.drop_index("uq_agent_live_sessions_cue_id_active", table_name="agent_live_sessions")
    op.drop_index("uq_agent_live_sessions_agent_id_default", table_name="agent_live_sessions")
    op.drop_index("uq_agent_live_sessions_agent_id_label_active",
                  table_name="agent_live_sessions")
    op.drop_table("agent_live_sessions")
