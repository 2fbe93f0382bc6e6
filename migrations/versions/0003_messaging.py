"""messaging: agents, messages, idempotency keys, monthly message counters

Revision ID: 0003_messaging
Revises: 0002_scheduling
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_messaging"
down_revision = "0002_scheduling"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("webhook_url", sa.String(length=2048), nullable=True),
        sa.Column("webhook_secret", sa.String(length=70), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_agents_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
    )
    op.create_index(op.f("ix_agents_user_id"), "agents", ["user_id"], unique=False)
    # One live agent per (user, slug): soft-deleted agents free their slug.
    op.create_index("uq_agents_user_id_slug_live", "agents", ["user_id", "slug"], unique=True,
                    sqlite_where=sa.text("deleted_at IS NULL"),
                    postgresql_where=sa.text("deleted_at IS NULL"))

    op.create_table(
        "messages",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("to_user_id", sa.Uuid(), nullable=False),
        sa.Column("from_agent_id", sa.String(length=16), nullable=False),
        sa.Column("to_agent_id", sa.String(length=16), nullable=False),
        sa.Column("thread_id", sa.String(length=16), nullable=False),
        sa.Column("reply_to", sa.String(length=16), nullable=True),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("requested_priority", sa.Integer(), nullable=False),
        sa.Column("expects_reply", sa.Boolean(), nullable=False),
        sa.Column("reply_to_agent_id", sa.String(length=16), nullable=True),
        sa.Column("delivery_state", sa.String(length=16), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("correlation_id", sa.String(length=255), nullable=True),
        sa.Column("dispatch_priority_bucket", sa.Integer(), nullable=True),
        sa.Column("message_dispatch_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("push_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_messages_user_id_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["to_user_id"], ["users.id"],
                                name=op.f("fk_messages_to_user_id_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["from_agent_id"], ["agents.id"],
                                name=op.f("fk_messages_from_agent_id_agents"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["to_agent_id"], ["agents.id"],
                                name=op.f("fk_messages_to_agent_id_agents"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index(op.f("ix_messages_to_user_id"), "messages", ["to_user_id"], unique=False)
    op.create_index(op.f("ix_messages_thread_id"), "messages", ["thread_id"], unique=False)
    op.create_index(op.f("ix_messages_expires_at"), "messages", ["expires_at"], unique=False)
    op.create_index("ix_messages_to_agent_id_delivery_state", "messages",
                    ["to_agent_id", "delivery_state"], unique=False)
    op.create_index("ix_messages_from_agent_id_created_at", "messages",
                    ["from_agent_id", "created_at"], unique=False)
    op.create_index("ix_messages_user_id_created_at", "messages", ["user_id", "created_at"],
                    unique=False)
    op.create_index("ix_messages_delivery_state_next_attempt_at", "messages",
                    ["delivery_state", "next_attempt_at"], unique=False)

    op.create_table(
        "message_idempotency_keys",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=16), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_message_idempotency_keys_user_id_users"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"],
                                name=op.f("fk_message_idempotency_keys_message_id_messages"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_message_idempotency_keys")),
    )
    op.create_index(op.f("ix_message_idempotency_keys_created_at"), "message_idempotency_keys",
                    ["created_at"], unique=False)

    op.create_table(
        "message_monthly_counts",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_message_monthly_counts_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "month", name=op.f("pk_message_monthly_counts")),
    )


def downgrade():
    op.drop_table("message_monthly_counts")
    op.drop_index(op.f("ix_message_idempotency_keys_created_at"),
                  table_name="message_idempotency_keys")
    op.drop_table("message_idempotency_keys")
    for name in ("ix_messages_delivery_state_next_attempt_at", "ix_messages_user_id_created_at",
                 "ix_messages_from_agent_id_created_at", "ix_messages_to_agent_id_delivery_state",
                 op.f("ix_messages_expires_at"), op.f("ix_messages_thread_id"),
                 op.f("ix_messages_to_user_id")):
        op.drop_index(name, table_name="messages")
    op.drop_table("messages")
    op.drop_index("uq_agents_user_id_slug_live", table_name="agents")
    op.drop_index(op.f("ix_agents_user_id"), table_name="agents")
    op.drop_table("agents")
