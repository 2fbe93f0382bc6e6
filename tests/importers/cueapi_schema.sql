-- A cueapi-core database as its Alembic migrations 001-035 leave it, written out as DDL for the
-- import tests (tables, columns, types, defaults, constraints and indexes as those migrations
-- declare them), plus the columns cueapi-core's models declare that no migration adds (marked
-- "models only"): a deployment whose schema was built from the models has them, one built by
-- the migrations does not (tests/importers/test_source_shapes.py drops them again).

CREATE TABLE alembic_version (
    version_num varchar(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO alembic_version (version_num) VALUES ('035');

-- 001, 008 (webhook_secret), 019 (alert webhook), 020 (slug), 021 (monthly_message_limit),
-- 025 (external_owner)
CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email varchar(255) NOT NULL UNIQUE,
    api_key_hash varchar(64) NOT NULL,
    api_key_prefix varchar(12) NOT NULL,
    plan varchar(20) NOT NULL DEFAULT 'free',
    plan_interval varchar(10) DEFAULT 'monthly',
    plan_period_end timestamptz,
    stripe_customer_id varchar(64),
    stripe_subscription_id varchar(64),
    active_cue_limit integer NOT NULL DEFAULT 10,
    monthly_execution_limit integer NOT NULL DEFAULT 300,
    rate_limit_per_minute integer NOT NULL DEFAULT 60,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    webhook_secret varchar(80) NOT NULL,
    alert_webhook_url varchar(2048),
    alert_webhook_secret varchar(64),
    slug varchar(64) NOT NULL,
    monthly_message_limit integer NOT NULL DEFAULT 300,
    external_owner varchar(64),
    api_key_encrypted varchar(256),  -- models only
    CONSTRAINT unique_user_slug UNIQUE (slug)
);
CREATE UNIQUE INDEX idx_users_api_key_hash ON users (api_key_hash);
CREATE INDEX idx_users_api_key_prefix ON users (api_key_prefix);
CREATE INDEX idx_users_email ON users (email);

-- 001, 007 (callback_transport, nullable callback_url), 009 (fired_count), 010 (unique name),
-- 016 (on_failure), 017 (verification_mode)
CREATE TABLE cues (
    id varchar(20) PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name varchar(255) NOT NULL,
    description text,
    status varchar(20) NOT NULL DEFAULT 'active',
    schedule_type varchar(10) NOT NULL,
    schedule_cron varchar(100),
    schedule_at timestamptz,
    schedule_timezone varchar(50) NOT NULL DEFAULT 'UTC',
    callback_url text,
    callback_method varchar(10) NOT NULL DEFAULT 'POST',
    callback_headers jsonb DEFAULT '{}',
    payload jsonb DEFAULT '{}',
    retry_max_attempts integer NOT NULL DEFAULT 3,
    retry_backoff_minutes jsonb NOT NULL DEFAULT '[1, 5, 15]',
    next_run timestamptz,
    last_run timestamptz,
    run_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    callback_transport varchar(10) NOT NULL DEFAULT 'webhook',
    fired_count integer NOT NULL DEFAULT 0,
    on_failure jsonb DEFAULT '{"email": true, "webhook": null, "pause": false}',
    verification_mode varchar(50),
    CONSTRAINT valid_status CHECK (status IN ('active', 'paused', 'completed', 'failed')),
    CONSTRAINT valid_schedule_type CHECK (schedule_type IN ('once', 'recurring')),
    CONSTRAINT valid_callback_method CHECK (callback_method IN ('POST', 'GET', 'PUT', 'PATCH')),
    CONSTRAINT valid_callback_transport CHECK (callback_transport IN ('webhook', 'worker')),
    CONSTRAINT valid_verification_mode CHECK (verification_mode IS NULL OR verification_mode IN (
        'none', 'require_external_id', 'require_result_url', 'require_artifacts', 'manual')),
    CONSTRAINT unique_user_cue_name UNIQUE (user_id, name)
);
CREATE INDEX idx_cues_user_id ON cues (user_id);
CREATE INDEX idx_cues_status ON cues (status);
CREATE INDEX idx_cues_due ON cues (next_run) WHERE status = 'active' AND next_run IS NOT NULL;

-- 002, 005/009 (statuses), 006 (outcome), 007 (claims), 027 (live claim)
CREATE TABLE executions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    cue_id varchar(20) NOT NULL REFERENCES cues (id) ON DELETE CASCADE,
    scheduled_for timestamptz NOT NULL,
    status varchar(20) NOT NULL DEFAULT 'pending',
    http_status integer,
    response_body text,
    attempts integer NOT NULL DEFAULT 0,
    next_retry timestamptz,
    error_message text,
    started_at timestamptz,
    delivered_at timestamptz,
    last_attempt_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    outcome_success boolean,
    outcome_result text,
    outcome_error text,
    outcome_metadata jsonb,
    outcome_recorded_at timestamptz,
    claimed_by_worker varchar(255),
    claimed_at timestamptz,
    live_claim_session_token varchar(128),
    live_claimed_at timestamptz,
    outcome_deadline_seconds integer,      -- models only
    outcome_deadline_at timestamptz,       -- models only
    outcome_state text,                    -- models only
    last_heartbeat_at timestamptz,         -- models only
    triggered_by varchar(50),              -- models only
    evidence_external_id varchar(255),     -- models only
    evidence_result_url text,              -- models only
    evidence_result_ref varchar(255),      -- models only
    evidence_result_type varchar(50),      -- models only
    evidence_summary text,                 -- models only
    evidence_validation_state varchar(20), -- models only
    evidence_produced_at timestamptz,      -- models only
    evidence_artifacts jsonb,              -- models only
    evidence_metadata jsonb,               -- models only
    CONSTRAINT valid_exec_status CHECK (status IN ('pending', 'delivering', 'success', 'failed',
        'retrying', 'retry_ready', 'missed', 'pending_outcome', 'outcome_timeout'))
);
CREATE UNIQUE INDEX idx_executions_dedup ON executions (cue_id, scheduled_for);
CREATE INDEX idx_executions_cue_id ON executions (cue_id);
CREATE INDEX idx_executions_created_at ON executions (created_at);
CREATE INDEX idx_executions_retries ON executions (next_retry)
    WHERE status = 'retrying' AND next_retry IS NOT NULL;

-- 002, 021 (message tasks), 022 (scheduled_at)
CREATE TABLE dispatch_outbox (
    id bigserial PRIMARY KEY,
    execution_id uuid REFERENCES executions (id) ON DELETE CASCADE,
    cue_id varchar(20),
    task_type varchar(20) NOT NULL DEFAULT 'deliver',
    payload jsonb NOT NULL DEFAULT '{}',
    dispatched boolean NOT NULL DEFAULT false,
    dispatch_attempts integer NOT NULL DEFAULT 0,
    last_dispatch_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    scheduled_at timestamptz,
    CONSTRAINT valid_task_type CHECK (task_type IN ('deliver', 'retry', 'deliver_message',
                                                    'retry_message')),
    CONSTRAINT task_payload_shape CHECK (
        (task_type IN ('deliver', 'retry') AND execution_id IS NOT NULL)
        OR (task_type IN ('deliver_message', 'retry_message') AND payload ? 'message_id'))
);
CREATE INDEX idx_outbox_pending ON dispatch_outbox (created_at) WHERE dispatched = FALSE;
CREATE INDEX idx_outbox_scheduled ON dispatch_outbox (scheduled_at)
    WHERE dispatched = FALSE AND scheduled_at IS NOT NULL;

-- 003
CREATE TABLE usage_monthly (
    id serial PRIMARY KEY,
    user_id uuid NOT NULL,
    month_start date NOT NULL,
    execution_count integer NOT NULL DEFAULT 0,
    CONSTRAINT unique_user_month UNIQUE (user_id, month_start)
);
CREATE INDEX idx_usage_monthly_user ON usage_monthly (user_id, month_start);

-- 004, 015 (wider device_code)
CREATE TABLE device_codes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    device_code varchar(128) NOT NULL UNIQUE,
    email varchar(255),
    status varchar(20) NOT NULL DEFAULT 'pending',
    api_key_plaintext varchar(64),
    verification_token varchar(64),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    session_token varchar(64),  -- models only
    user_id uuid,               -- models only
    CONSTRAINT valid_dc_status CHECK (status IN ('pending', 'email_sent', 'approved', 'expired',
                                                 'claimed'))
);
CREATE INDEX idx_device_codes_code ON device_codes (device_code);
CREATE INDEX idx_device_codes_token ON device_codes (verification_token);

-- 007
CREATE TABLE workers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    worker_id varchar(255) NOT NULL,
    handlers jsonb,
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT unique_user_worker UNIQUE (user_id, worker_id)
);
CREATE INDEX ix_workers_user_id ON workers (user_id);

-- 011, 013
CREATE TABLE blog_posts (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    title text NOT NULL,
    slug text NOT NULL,
    content text NOT NULL,
    description text,
    seo_title text,
    seo_description text,
    category text,
    author text DEFAULT 'Govind Kavaturi',
    date date,
    read_time text,
    image_url text,
    image_alt text,
    tags text[],
    keywords text[],
    published boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    image_data text,
    PRIMARY KEY (id),
    CONSTRAINT unique_blog_slug UNIQUE (slug),
    CONSTRAINT valid_blog_category CHECK (category IS NULL OR category IN ('tutorial', 'guide',
                                                                          'blog'))
);

-- 012
CREATE TABLE content_trends (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    scan_date date NOT NULL,
    topics jsonb NOT NULL,
    backlog_pick jsonb,
    status text NOT NULL DEFAULT 'pending',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ix_content_trends_scan_date ON content_trends (scan_date);

-- 014
CREATE TABLE support_tickets (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id),
    github_issue_number integer,
    github_issue_url text,
    subject text NOT NULL,
    message text NOT NULL,
    severity text NOT NULL DEFAULT 'medium',
    type text NOT NULL DEFAULT 'bug',
    status text NOT NULL DEFAULT 'open',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- 018
CREATE TABLE alerts (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    cue_id varchar(20),
    execution_id uuid,
    alert_type varchar(50) NOT NULL,
    severity varchar(20) NOT NULL DEFAULT 'warning',
    message text NOT NULL,
    metadata jsonb,
    acknowledged boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT valid_alert_type CHECK (alert_type IN ('outcome_timeout', 'verification_failed',
                                                      'consecutive_failures')),
    CONSTRAINT valid_alert_severity CHECK (severity IN ('info', 'warning', 'critical'))
);
CREATE INDEX ix_alerts_user_id ON alerts (user_id);
CREATE INDEX ix_alerts_user_created ON alerts (user_id, created_at);
CREATE INDEX ix_alerts_execution_id ON alerts (execution_id);

-- 020, 031 (last_seen_at)
CREATE TABLE agents (
    id varchar(20) PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    slug varchar(64) NOT NULL,
    display_name varchar(255) NOT NULL,
    webhook_url text,
    webhook_secret varchar(80),
    agent_metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    status varchar(16) NOT NULL DEFAULT 'online',
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz,
    CONSTRAINT unique_user_agent_slug UNIQUE (user_id, slug),
    CONSTRAINT valid_agent_status CHECK (status IN ('online', 'offline', 'away')),
    CONSTRAINT agent_webhook_url_secret_paired CHECK ((webhook_url IS NULL) = (webhook_secret IS NULL))
);
CREATE INDEX ix_agents_user_id ON agents (user_id);
CREATE INDEX ix_agents_user_status_active ON agents (user_id, status) WHERE deleted_at IS NULL;
CREATE INDEX ix_agents_slug ON agents (slug);

-- 021
CREATE TABLE usage_messages_monthly (
    id serial PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    month_start date NOT NULL,
    message_count integer NOT NULL DEFAULT 0,
    CONSTRAINT unique_user_month_messages UNIQUE (user_id, month_start)
);
CREATE INDEX ix_usage_messages_monthly_user_id ON usage_messages_monthly (user_id);

-- 021, 022 (delivering_started_at), 029 (emission columns), 030 (send_at)
CREATE TABLE messages (
    id varchar(20) PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    from_agent_id varchar(20) NOT NULL REFERENCES agents (id) ON DELETE SET NULL,
    to_agent_id varchar(20) NOT NULL REFERENCES agents (id) ON DELETE SET NULL,
    thread_id varchar(20) NOT NULL,
    reply_to varchar(20) REFERENCES messages (id) ON DELETE SET NULL,
    subject varchar(255),
    body text NOT NULL,
    preview varchar(256) NOT NULL DEFAULT '',
    priority smallint NOT NULL DEFAULT 3,
    expects_reply boolean NOT NULL DEFAULT false,
    reply_to_agent_id varchar(20) REFERENCES agents (id) ON DELETE SET NULL,
    delivery_state varchar(16) NOT NULL DEFAULT 'queued',
    message_metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    idempotency_key varchar(255),
    idempotency_fingerprint varchar(64),
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    read_at timestamptz,
    acked_at timestamptz,
    failed_at timestamptz,
    expires_at timestamptz NOT NULL DEFAULT now() + interval '30 days',
    delivering_started_at timestamptz,
    dispatch_priority_bucket smallint NOT NULL DEFAULT 3,
    message_dispatch_error text,
    correlation_id varchar(255),
    send_at timestamptz,
    CONSTRAINT valid_priority CHECK (priority BETWEEN 1 AND 5),
    CONSTRAINT valid_delivery_state CHECK (delivery_state IN ('queued', 'delivering', 'retry_ready',
        'delivered', 'read', 'claimed', 'acked', 'expired', 'failed')),
    CONSTRAINT body_size_limit CHECK (octet_length(body) <= 32768)
);
CREATE INDEX ix_messages_user_id ON messages (user_id);
CREATE INDEX ix_messages_from_agent_id ON messages (from_agent_id);
CREATE INDEX ix_messages_to_agent_id ON messages (to_agent_id);
CREATE INDEX ix_messages_thread_id ON messages (thread_id);
CREATE INDEX ix_messages_inbox ON messages (to_agent_id, delivery_state, created_at DESC);
CREATE INDEX ix_messages_sent ON messages (from_agent_id, created_at DESC);
CREATE INDEX ix_messages_thread ON messages (thread_id, created_at);
CREATE UNIQUE INDEX unique_user_idempotency_key ON messages (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX idx_messages_delivering_started ON messages (delivering_started_at)
    WHERE delivery_state = 'delivering' AND delivering_started_at IS NOT NULL;
CREATE INDEX idx_messages_inbox_counterpart ON messages (to_agent_id, from_agent_id, created_at);
CREATE INDEX idx_messages_sent_counterpart ON messages (from_agent_id, to_agent_id, created_at);
CREATE INDEX ix_messages_correlation_id ON messages (correlation_id)
    WHERE correlation_id IS NOT NULL;
CREATE INDEX ix_messages_send_at ON messages (send_at) WHERE send_at IS NOT NULL;

-- 026 (agent_shells of 023 dropped), 035 (IPC attachments)
CREATE TABLE agent_live_sessions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id varchar(20) NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    label text NOT NULL,
    cue_id text NOT NULL,
    task_name text NOT NULL,
    is_default boolean NOT NULL DEFAULT false,
    attached_at timestamptz,
    detached_at timestamptz,
    last_heartbeat timestamptz,
    last_claim_at timestamptz,
    monitor_version text,
    session_token varchar(80),
    created_at timestamptz NOT NULL DEFAULT now(),
    ipc_session_token varchar(32),
    transport varchar(8) NOT NULL DEFAULT 'poll',
    daemon_id uuid,
    last_reconciled_at timestamptz,
    CONSTRAINT valid_transport CHECK (transport IN ('ipc', 'poll'))
);
CREATE UNIQUE INDEX ix_agent_live_sessions_cue_id ON agent_live_sessions (cue_id);
CREATE INDEX ix_agent_live_sessions_active ON agent_live_sessions (agent_id, last_heartbeat)
    WHERE detached_at IS NULL;
CREATE UNIQUE INDEX ux_agent_live_sessions_one_default_per_agent ON agent_live_sessions (agent_id)
    WHERE is_default = true AND detached_at IS NULL;
CREATE UNIQUE INDEX ux_agent_live_sessions_label_per_agent ON agent_live_sessions (agent_id, label)
    WHERE detached_at IS NULL;
CREATE INDEX ix_agent_live_sessions_daemon ON agent_live_sessions (daemon_id);
CREATE INDEX ix_agent_live_sessions_transport ON agent_live_sessions (transport,
                                                                      last_reconciled_at);

-- 028, 032 (digested_at)
CREATE TABLE events (
    id bigserial PRIMARY KEY,
    event_type text NOT NULL,
    recipient_agent_id varchar(20) NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    emitted_at timestamptz NOT NULL DEFAULT now(),
    idempotency_key text,
    digested_at timestamptz
);
CREATE INDEX ix_events_recipient_id_cursor ON events (recipient_agent_id, id);
CREATE UNIQUE INDEX ux_events_idempotency_key ON events (event_type, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX ix_events_emitted_at ON events (emitted_at);
CREATE INDEX ix_events_undigested ON events (recipient_agent_id) WHERE digested_at IS NULL;

-- 028, 033 (inline_body), 034 (last_acked_event_id)
CREATE TABLE subscriptions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subscriber_agent_id varchar(20) NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    event_type text NOT NULL,
    delivery_target text NOT NULL,
    webhook_url text,
    webhook_secret text,
    last_dispatched_event_id bigint,
    last_dispatched_at timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    paused_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    detached_at timestamptz,
    inline_body boolean NOT NULL DEFAULT false,
    last_acked_event_id bigint,
    CONSTRAINT subscriptions_delivery_target_check CHECK (delivery_target IN ('pull', 'webhook')),
    CONSTRAINT subscriptions_webhook_url_check CHECK (
        (delivery_target = 'pull' AND webhook_url IS NULL)
        OR (delivery_target = 'webhook' AND webhook_url IS NOT NULL))
);
CREATE UNIQUE INDEX ux_subscriptions_active_unique ON subscriptions (subscriber_agent_id,
    event_type, delivery_target) WHERE detached_at IS NULL;
CREATE INDEX ix_subscriptions_dispatch_due ON subscriptions (last_dispatched_event_id)
    WHERE delivery_target = 'webhook' AND detached_at IS NULL;
