"""events: the event log, agents' subscriptions, and (PostgreSQL) the insert notification and
the writing transaction's id

Revision ID: 0008_events
Revises: 0007_live_sessions
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_events"
down_revision = "0007_live_sessions"
branch_labels = None
depends_on = None

#: The channel long polls listen on (app.events.waiting.CHANNEL); the payload is the
#: recipient agent id.  A trigger, so the send statement that inserts the event is unchanged.
NOTIFY_FUNCTION = """
CREATE FUNCTION cueline_notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cueline_events', NEW.recipient_agent_id);
    RETURN NULL;
END;
$$
"""
NOTIFY_TRIGGER = """
CREATE TRIGGER events_notify AFTER INSERT ON events
FOR EACH ROW EXECUTE FUNCTION cueline_notify_event()
"""


def upgrade():
    event_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "events",
        sa.Column("id", event_id, autoincrement=True, nullable=False),
        sa.Column("event_type", sa.String(length=255), nullable=False),
        sa.Column("recipient_agent_id", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("emitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("priority", sa.SmallInteger(), nullable=True),
        sa.Column("digested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tx", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["recipient_agent_id"], ["agents.id"], ondelete="CASCADE",
                                name=op.f("fk_events_recipient_agent_id_agents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_recipient_agent_id_id", "events", ["recipient_agent_id", "id"])
    op.create_index("ix_events_emitted_at", "events", ["emitted_at"])
    op.create_index("uq_events_event_type_idempotency_key", "events",
                    ["event_type", "idempotency_key"], unique=True,
                    sqlite_where=sa.text("idempotency_key IS NOT NULL"),
                    postgresql_where=sa.text("idempotency_key IS NOT NULL"))
    op.create_index("ix_events_undigested", "events", ["priority", "id"],
                    sqlite_where=sa.text("digested_at IS NULL"),
                    postgresql_where=sa.text("digested_at IS NULL"))

    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subscriber_agent_id", sa.String(length=16), nullable=False),
        sa.Column("event_type", sa.String(length=255), nullable=False),
        sa.Column("delivery_target", sa.String(length=16), nullable=False),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("webhook_secret", sa.String(length=70), nullable=True),
        sa.Column("inline_body", sa.Boolean(), nullable=False),
        sa.Column("last_dispatched_event_id", sa.BigInteger(), nullable=True),
        sa.Column("last_dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_acked_event_id", sa.BigInteger(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("priority_4_dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detached_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("delivery_target IN ('pull', 'webhook')",
                           name=op.f("ck_subscriptions_delivery_target")),
        sa.CheckConstraint("(delivery_target = 'pull' AND webhook_url IS NULL) OR "
                           "(delivery_target = 'webhook' AND webhook_url IS NOT NULL)",
                           name=op.f("ck_subscriptions_webhook_url")),
        sa.ForeignKeyConstraint(["subscriber_agent_id"], ["agents.id"], ondelete="CASCADE",
                                name=op.f("fk_subscriptions_subscriber_agent_id_agents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    op.create_index("uq_subscriptions_active", "subscriptions",
                    ["subscriber_agent_id", "event_type", "delivery_target"], unique=True,
                    sqlite_where=sa.text("detached_at IS NULL"),
                    postgresql_where=sa.text("detached_at IS NULL"))
    op.create_index("ix_subscriptions_dispatch", "subscriptions",
                    ["delivery_target", "paused_until"],
                    sqlite_where=sa.text("detached_at IS NULL"),
                    postgresql_where=sa.text("detached_at IS NULL"))

    if op.get_bind().dialect.name == "postgresql":
        # The writing transaction's id, for readers that must not pass an event still being
        # committed (app.events.models.visible).
        op.execute("ALTER TABLE events ALTER COLUMN tx SET DEFAULT "
                   "(pg_current_xact_id()::text::bigint)")
        op.execute(NOTIFY_FUNCTION)
        op.execute(NOTIFY_TRIGGER)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_notify ON events")
        op.execute("DROP FUNCTION IF EXISTS cueline_notify_event()")
    op.drop_index("ix_subscriptions_dispatch", table_name="subscriptions")
    op.drop_index("uq_subscriptions_active", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_index("ix_events_undigested", table_name="events")
    op.drop_index("uq_events_event_type_idempotency_key", table_name="events")
    op.drop_index("ix_events_emitted_at", table_name="events")
    op.drop_index("ix_events_recipient_agent_id_id", table_name="events")
    op.drop_table("events")
