-- Runs and their event log. Times are milliseconds since the Unix epoch (UTC).
CREATE TABLE runs (
    id               TEXT    PRIMARY KEY,
    agent            TEXT    NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('blocked', 'queued', 'running', 'retrying', 'waiting', 'succeeded',
                          'failed', 'cancelled')),
    input            TEXT    NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    metadata         TEXT    NOT NULL DEFAULT '{}',
    progress_percent INTEGER CHECK (progress_percent BETWEEN 0 AND 100),
    progress_message TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    -- bumped by every claim and never given back: the fencing token of a claim
    claims           INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    result           TEXT,
    -- the agent's saved state, handed to the next attempt
    checkpoint       TEXT,
    error_kind       TEXT,
    error_message    TEXT,
    timeout_ms       INTEGER NOT NULL,
    backoff_base_ms  INTEGER NOT NULL,
    backoff_cap_ms   INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    -- the whole run must finish by then (across retries)
    deadline         INTEGER,
    -- the run must start by then
    expires_at       INTEGER,
    -- {agent, input} of the run to create if this one fails for good, and the links
    on_failure       TEXT,
    compensation_run_id TEXT,
    compensates_run_id  TEXT,
    -- how many runs this one depends on, and how many depend on it (run_dependencies)
    depends_count    INTEGER NOT NULL DEFAULT 0,
    -- while waiting: the signal names (JSON array), until when, and whether to resume
    -- (rather than fail) when that passes
    waiting_for      TEXT,
    wait_until       INTEGER,
    wait_resume      INTEGER NOT NULL DEFAULT 0,
    -- where to POST the run when it finishes
    callback_url     TEXT,
    dependents       INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    lease_until      INTEGER,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    updated_at       INTEGER NOT NULL,
    -- the seq of the run's last event; bumped by the same UPDATE that appends one
    event_seq        INTEGER NOT NULL DEFAULT 0,
    -- Idempotency-Key of the POST that created the run, the request's fingerprint, and
    -- when the key may be used again for another run
    idempotency_key  TEXT,
    request_hash     TEXT,
    idempotency_expires_at INTEGER,
    CHECK ((status = 'running') = (worker_id IS NOT NULL AND lease_until IS NOT NULL))
) STRICT;

-- Claims scan ready runs in priority, then due-time order.
CREATE INDEX runs_ready ON runs (priority DESC, run_at, id) WHERE status IN ('queued', 'retrying');
-- The sweeper's look for due runs past their deadline or never started in time.
CREATE INDEX runs_deadline ON runs (deadline)
    WHERE deadline IS NOT NULL AND status IN ('blocked', 'queued', 'retrying', 'waiting');
CREATE INDEX runs_expiry ON runs (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('blocked', 'queued') AND started_at IS NULL;
CREATE UNIQUE INDEX runs_idempotency ON runs (idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Running runs: the sweeper's look for expired leases, lease renewal, hand-back.
CREATE INDEX runs_lease ON runs (lease_until) WHERE status = 'running';
-- Listing walks the primary key (ids sort by creation time) newest first and filters.

CREATE TABLE run_events (
    run_id  TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    type    TEXT    NOT NULL,
    attempt INTEGER NOT NULL,
    data    TEXT    NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;

-- run_id waits for depends_on_id to succeed.
CREATE TABLE run_dependencies (
    run_id        TEXT NOT NULL,
    depends_on_id TEXT NOT NULL,
    PRIMARY KEY (run_id, depends_on_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX run_dependents ON run_dependencies (depends_on_id, run_id);

-- Waiting runs, by when their wait ends.
CREATE INDEX runs_waiting ON runs (wait_until) WHERE status = 'waiting';

-- Signals sent to runs; a wait consumes the oldest matching one.
CREATE TABLE run_signals (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    timed_out   INTEGER NOT NULL DEFAULT 0,
    received_at INTEGER NOT NULL,
    consumed_at INTEGER
) STRICT;
CREATE INDEX run_signals_pending ON run_signals (run_id, id) WHERE consumed_at IS NULL;

-- Completion webhooks to deliver: one row per terminal state of a run with a callback_url.
CREATE TABLE webhook_deliveries (
    id           INTEGER PRIMARY KEY,
    run_id       TEXT    NOT NULL,
    due_at       INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    delivered_at INTEGER,
    given_up     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (due_at)
    WHERE delivered_at IS NULL AND given_up = 0;
