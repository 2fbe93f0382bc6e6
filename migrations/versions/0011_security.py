"""security: invites carry the owner tag of the principal that minted them

Revision ID: 0011_security
Revises: 0010_surface
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_security"
down_revision = "0010_surface"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("invites") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=64), nullable=True))
    # Invites minted before this revision by an owner-bound principal ("service:<name>") take
    # that principal's owner, so the binding applies to them too.
    op.execute(sa.text(
        "UPDATE invites SET owner = (SELECT sp.owner FROM service_principals sp "
        "WHERE 'service:' || sp.name = invites.created_by) "
        "WHERE created_by LIKE 'service:%'"))


def downgrade():
    with op.batch_alter_table("invites") as batch:
        batch.drop_column("owner")
