"""import: the ledger of rows written by one-way imports (flask import-cueapi)

Revision ID: 0009_import
Revises: 0008_events
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_import"
down_revision = "0008_events"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "import_ledger",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("row_key", sa.String(length=512), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("counter", sa.Integer(), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "table_name", "row_key",
                                name=op.f("pk_import_ledger")),
    )


def downgrade():
    op.drop_table("import_ledger")
