"""list totals: counters of a user's cues and a cue's executions, kept by triggers; ordering
indexes for the cue and execution pages

The counters make ``total`` of an unfiltered ``GET /v1/cues`` / ``GET /v1/executions?cue_id=``
one primary-key read instead of a count over every row (see app/scheduling/totals.py).  The
composite indexes replace the single-column ``ix_cues_user_id`` and ``ix_executions_cue_id``,
whose lookups they also serve.

The trigger text lives in app/scheduling/totals.py so later migrations can re-create it (SQLite's
batch mode drops a re-created table's triggers); changing that text needs a new migration that
drops and re-creates the triggers.

Revision ID: 0013_list_totals
Revises: 0012_console
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from app.scheduling import totals

revision = "0013_list_totals"
down_revision = "0012_console"
branch_labels = None
depends_on = None

CLAIMED = "claimed_at IS NOT NULL"


def upgrade():
    op.create_table(
        "user_cue_totals",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("cues", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_user_cue_totals_user_id_users")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_cue_totals")),
    )
    op.create_table(
        "cue_execution_totals",
        sa.Column("cue_id", sa.String(length=16), nullable=False),
        sa.Column("executions", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["cue_id"], ["cues.id"], ondelete="CASCADE",
                                name=op.f("fk_cue_execution_totals_cue_id_cues")),
        sa.PrimaryKeyConstraint("cue_id", name=op.f("pk_cue_execution_totals")),
    )
    op.create_index("ix_cues_user_created", "cues", ["user_id", "created_at", "id"],
                    postgresql_include=["status"])
    op.drop_index(op.f("ix_cues_user_id"), table_name="cues")
    op.create_index("ix_executions_cue_created", "executions", ["cue_id", "created_at"])
    op.create_index("ix_executions_cue_claimed", "executions", ["cue_id", "claimed_at"],
                    postgresql_where=sa.text(CLAIMED), sqlite_where=sa.text(CLAIMED))
    op.drop_index(op.f("ix_executions_cue_id"), table_name="executions")
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # No write may slip between the backfill and the triggers taking over.
        op.execute("LOCK TABLE cues, executions IN SHARE ROW EXCLUSIVE MODE")
    totals.create_triggers(bind)
    totals.recount(bind)


def downgrade():
    totals.drop_triggers(op.get_bind())
    op.create_index(op.f("ix_executions_cue_id"), "executions", ["cue_id"], unique=False)
    op.drop_index("ix_executions_cue_claimed", table_name="executions")
    op.drop_index("ix_executions_cue_created", table_name="executions")
    op.create_index(op.f("ix_cues_user_id"), "cues", ["user_id"], unique=False)
    op.drop_index("ix_cues_user_created", table_name="cues")
    op.drop_table("cue_execution_totals")
    op.drop_table("user_cue_totals")
