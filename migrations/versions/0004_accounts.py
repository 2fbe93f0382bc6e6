"""accounts: rotated API keys and registration invites

Revision ID: 0004_accounts
Revises: 0003_messaging
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_accounts"
down_revision = "0003_messaging"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "rotated_api_keys",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_rotated_api_keys_user_id_users")),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_rotated_api_keys")),
    )
    op.create_index(op.f("ix_rotated_api_keys_user_id"), "rotated_api_keys", ["user_id"])
    op.create_table(
        "invites",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_prefix", sa.String(length=12), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=True),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("note", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("max_uses IS NULL OR max_uses >= 1",
                           name=op.f("ck_invites_max_uses_positive")),
        sa.CheckConstraint("max_uses IS NULL OR uses <= max_uses",
                           name=op.f("ck_invites_uses_within_max")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invites")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_invites_token_hash")),
    )
    op.create_table(
        "invite_redemptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("invite_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["invite_id"], ["invites.id"], ondelete="CASCADE",
                                name=op.f("fk_invite_redemptions_invite_id_invites")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_invite_redemptions_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invite_redemptions")),
        sa.UniqueConstraint("user_id", name=op.f("uq_invite_redemptions_user_id")),
    )
    op.create_index(op.f("ix_invite_redemptions_invite_id"), "invite_redemptions",
                    ["invite_id"])


def downgrade():
    op.drop_index(op.f("ix_invite_redemptions_invite_id"), table_name="invite_redemptions")
    op.drop_table("invite_redemptions")
    op.drop_table("invites")
    op.drop_index(op.f("ix_rotated_api_keys_user_id"), table_name="rotated_api_keys")
    op.drop_table("rotated_api_keys")
