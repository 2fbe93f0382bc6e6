"""console: operator sign-in links and sessions; indexes for the console's lists

Also widens ``audit_records.principal`` so an operator's actor name (``console:<email>``) fits.

Revision ID: 0012_console
Revises: 0011_security
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_console"
down_revision = "0011_security"
branch_labels = None
depends_on = None

FAILURE_PREDICATE = "status IN ('failed', 'missed', 'outcome_timeout')"


def upgrade():
    op.create_table(
        "console_login_links",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("origin", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("origin IN ('email', 'cli')",
                           name=op.f("ck_console_login_links_origin_valid")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_login_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_console_login_links_token_hash")),
    )
    op.create_index(op.f("ix_console_login_links_expires_at"), "console_login_links",
                    ["expires_at"])
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_console_sessions_token_hash")),
    )
    op.create_index(op.f("ix_console_sessions_expires_at"), "console_sessions", ["expires_at"])
    # PostgreSQL widens a varchar without rewriting the table; SQLite copies it (batch mode).
    with op.batch_alter_table("audit_records") as batch:
        batch.alter_column("principal", existing_type=sa.String(length=64),
                           type_=sa.String(length=320), existing_nullable=False)
    op.create_index(op.f("ix_audit_records_request_id"), "audit_records", ["request_id"])
    op.create_index("ix_executions_failures", "executions", ["scheduled_for", "id"],
                    postgresql_where=sa.text(FAILURE_PREDICATE),
                    sqlite_where=sa.text(FAILURE_PREDICATE))
    op.create_index("ix_messages_created_at_id", "messages", ["created_at", "id"])


def downgrade():
    op.drop_index("ix_messages_created_at_id", table_name="messages")
    op.drop_index("ix_executions_failures", table_name="executions")
    op.drop_index(op.f("ix_audit_records_request_id"), table_name="audit_records")
    with op.batch_alter_table("audit_records") as batch:
        batch.alter_column("principal", existing_type=sa.String(length=320),
                           type_=sa.String(length=64), existing_nullable=False)
    op.drop_index(op.f("ix_console_sessions_expires_at"), table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_index(op.f("ix_console_login_links_expires_at"), table_name="console_login_links")
    op.drop_table("console_login_links")
