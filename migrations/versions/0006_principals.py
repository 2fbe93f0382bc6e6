"""principals: named service principals and their keys, the audit trail, users.active

Revision ID: 0006_principals
Revises: 0005_device_codes
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_principals"
down_revision = "0005_device_codes"
branch_labels = None
depends_on = None


def upgrade():
    # Existing users stay active: the server default fills the new column for every row.
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("active", sa.Boolean(), server_default=sa.true(),
                                   nullable=False))
    op.create_table(
        "service_principals",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("scopes", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_principals")),
        sa.UniqueConstraint("name", name=op.f("uq_service_principals_name")),
    )
    op.create_table(
        "service_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("principal_id", sa.Uuid(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["principal_id"], ["service_principals.id"], ondelete="CASCADE",
                                name=op.f("fk_service_keys_principal_id_service_principals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_service_keys_key_hash")),
    )
    op.create_index(op.f("ix_service_keys_principal_id"), "service_keys", ["principal_id"])
    op.create_table(
        "audit_records",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("principal", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("key_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_records")),
    )
    op.create_index(op.f("ix_audit_records_at"), "audit_records", ["at"])
    op.create_index(op.f("ix_audit_records_principal_at"), "audit_records", ["principal", "at"])
    op.create_index(op.f("ix_audit_records_user_id_at"), "audit_records", ["user_id", "at"])


def downgrade():
    op.drop_index(op.f("ix_audit_records_user_id_at"), table_name="audit_records")
    op.drop_index(op.f("ix_audit_records_principal_at"), table_name="audit_records")
    op.drop_index(op.f("ix_audit_records_at"), table_name="audit_records")
    op.drop_table("audit_records")
    op.drop_index(op.f("ix_service_keys_principal_id"), table_name="service_keys")
    op.drop_table("service_keys")
    op.drop_table("service_principals")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("active")
