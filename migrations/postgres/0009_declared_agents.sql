-- See migrations/sqlite/0009_declared_agents.sql.
-- Agents declared at run time by external workers (Python, TypeScript, any HTTP client).
-- Every API process validates new runs against these rows. Times are ms since the epoch.
CREATE TABLE declared_agents (
    name            TEXT    PRIMARY KEY,
    description     TEXT    NOT NULL,
    -- JSON Schema of the input, as JSON text
    input_schema    TEXT    NOT NULL,
    -- defaults for runs that do not set their own; NULL: the server's
    timeout_ms      BIGINT ,
    max_attempts    BIGINT ,
    backoff_base_ms BIGINT ,
    backoff_cap_ms  BIGINT ,
    -- counts up each time the input schema changes
    version         BIGINT  NOT NULL,
    -- the worker that declared it last, and when
    declared_by     TEXT    NOT NULL,
    declared_at     BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL
);

-- Every input schema an agent had: who declared it, when.
CREATE TABLE declared_agent_changes (
    name         TEXT    NOT NULL,
    version      BIGINT  NOT NULL,
    input_schema TEXT    NOT NULL,
    declared_by  TEXT    NOT NULL,
    -- the API key's id, when the server uses keys
    key_id       TEXT,
    declared_at  BIGINT  NOT NULL,
    PRIMARY KEY (name, version)
);

-- Workers outside the process say what they are written in ('rust' for agentq's own).
ALTER TABLE workers ADD COLUMN language TEXT NOT NULL DEFAULT 'rust';

-- The wait report (its id, chosen by the external worker) that took a signal, so that the
-- same report sent again after its answer was lost gets the same signal back.
ALTER TABLE run_signals ADD COLUMN taken_by TEXT;
