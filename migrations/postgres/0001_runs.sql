-- Runs and their event log: the same tables as the SQLite dialect (see
-- migrations/sqlite/0001_runs.sql for what each column means). Times are milliseconds since
-- the Unix epoch (UTC); integers are BIGINT so both dialects read the same numbers.
CREATE TABLE runs (
    -- UUIDv7 text, which sorts by creation time; "C" keeps that order whatever the locale
    id               TEXT    COLLATE "C" PRIMARY KEY,
    agent            TEXT    NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('blocked', 'queued', 'running', 'retrying', 'waiting', 'succeeded',
                          'failed', 'cancelled')),
    input            JSONB   NOT NULL,
    priority         BIGINT  NOT NULL DEFAULT 0,
    metadata         JSONB   NOT NULL DEFAULT '{}',
    progress_percent BIGINT  CHECK (progress_percent BETWEEN 0 AND 100),
    progress_message TEXT,
    attempt          BIGINT  NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    claims           BIGINT  NOT NULL DEFAULT 0,
    max_attempts     BIGINT  NOT NULL CHECK (max_attempts >= 1),
    result           JSONB,
    checkpoint       JSONB,
    error_kind       TEXT,
    error_message    TEXT,
    timeout_ms       BIGINT  NOT NULL,
    backoff_base_ms  BIGINT  NOT NULL,
    backoff_cap_ms   BIGINT  NOT NULL,
    run_at           BIGINT  NOT NULL,
    deadline         BIGINT,
    expires_at       BIGINT,
    on_failure       JSONB,
    compensation_run_id TEXT,
    compensates_run_id  TEXT,
    depends_count    BIGINT  NOT NULL DEFAULT 0,
    waiting_for      JSONB,
    wait_until       BIGINT,
    wait_resume      BIGINT  NOT NULL DEFAULT 0,
    callback_url     TEXT,
    dependents       BIGINT  NOT NULL DEFAULT 0,
    worker_id        TEXT,
    lease_until      BIGINT,
    created_at       BIGINT  NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    updated_at       BIGINT  NOT NULL,
    event_seq        BIGINT  NOT NULL DEFAULT 0,
    idempotency_key  TEXT,
    request_hash     TEXT,
    idempotency_expires_at BIGINT,
    CHECK ((status = 'running') = (worker_id IS NOT NULL AND lease_until IS NOT NULL))
);

-- A queue table: every run is updated a few times within seconds. Vacuum and analyse it
-- early, so dead index entries and stale statistics do not pile up under load.
ALTER TABLE runs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02,
                      autovacuum_vacuum_cost_delay = 0);

CREATE INDEX runs_ready ON runs (priority DESC, run_at, id) WHERE status IN ('queued', 'retrying');
CREATE INDEX runs_deadline ON runs (deadline)
    WHERE deadline IS NOT NULL AND status IN ('blocked', 'queued', 'retrying', 'waiting');
CREATE INDEX runs_expiry ON runs (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('blocked', 'queued') AND started_at IS NULL;
CREATE UNIQUE INDEX runs_idempotency ON runs (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_lease ON runs (lease_until) WHERE status = 'running';
CREATE INDEX runs_waiting ON runs (wait_until) WHERE status = 'waiting';

CREATE TABLE run_events (
    run_id  TEXT COLLATE "C" NOT NULL,
    seq     BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    type    TEXT   NOT NULL,
    attempt BIGINT NOT NULL,
    data    JSONB  NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE run_dependencies (
    run_id        TEXT COLLATE "C" NOT NULL,
    depends_on_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (run_id, depends_on_id)
);
CREATE INDEX run_dependents ON run_dependencies (depends_on_id, run_id);

CREATE TABLE run_signals (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      TEXT COLLATE "C" NOT NULL,
    name        TEXT   NOT NULL,
    payload     JSONB  NOT NULL,
    timed_out   BIGINT NOT NULL DEFAULT 0,
    received_at BIGINT NOT NULL,
    consumed_at BIGINT
);
CREATE INDEX run_signals_pending ON run_signals (run_id, id) WHERE consumed_at IS NULL;

CREATE TABLE webhook_deliveries (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id       TEXT COLLATE "C" NOT NULL,
    due_at       BIGINT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    delivered_at BIGINT,
    given_up     BIGINT NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (due_at)
    WHERE delivered_at IS NULL AND given_up = 0;
