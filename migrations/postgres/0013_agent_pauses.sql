-- Paused agents: while an agent is here, no worker claims its runs (table claims, Redis
-- delivery, external workers alike); new runs are still accepted and wait. When and by
-- whom (`key:<id>` or `open`) it was paused.
CREATE TABLE agent_pauses (
    agent     TEXT NOT NULL PRIMARY KEY,
    paused_at BIGINT NOT NULL,
    paused_by TEXT
);
