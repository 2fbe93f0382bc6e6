"""device codes: the CLI's device-code login flow

Revision ID: 0005_device_codes
Revises: 0004_accounts
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_device_codes"
down_revision = "0004_accounts"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "device_codes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("device_code", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=True),
        sa.Column("verification_token_hash", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("new_user", sa.Boolean(), nullable=False),
        sa.Column("pending_api_key_encrypted", sa.Text(), nullable=True),
        sa.Column("session_token_hash", sa.String(length=64), nullable=True),
        sa.Column("session_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'email_sent', 'approved', 'claimed', 'expired')",
            name=op.f("ck_device_codes_status_valid")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL",
                                name=op.f("fk_device_codes_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_codes")),
        sa.UniqueConstraint("device_code", name=op.f("uq_device_codes_device_code")),
        sa.UniqueConstraint("session_token_hash", name=op.f("uq_device_codes_session_token_hash")),
    )
    op.create_index(op.f("ix_device_codes_user_id"), "device_codes", ["user_id"])
    op.create_index(op.f("ix_device_codes_expires_at"), "device_codes", ["expires_at"])


def downgrade():
    op.drop_index(op.f("ix_device_codes_expires_at"), table_name="device_codes")
    op.drop_index(op.f("ix_device_codes_user_id"), table_name="device_codes")
    op.drop_table("device_codes")
