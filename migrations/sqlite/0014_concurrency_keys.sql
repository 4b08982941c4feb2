-- Concurrency keys: a run with a key (`user:42`) runs only while fewer than its limit of
-- the key's other runs (same tenant and agent) hold it. A run holds its key from when it
-- is let in until it finishes: while queued, running, between retries, waiting for a
-- signal. A run whose key is full waits its turn `blocked`, with `key_waiting` = 1, and
-- is let in, oldest first, when a run holding the key finishes.
ALTER TABLE runs ADD COLUMN concurrency_key TEXT;
ALTER TABLE runs ADD COLUMN concurrency_limit INTEGER;
ALTER TABLE runs ADD COLUMN key_waiting INTEGER NOT NULL DEFAULT 0;

-- A key's unfinished runs: how many hold it, and which waits next.
CREATE INDEX runs_key_unfinished ON runs (tenant, agent, concurrency_key, key_waiting, id)
    WHERE concurrency_key IS NOT NULL
      AND status IN ('blocked', 'queued', 'running', 'retrying', 'waiting');

-- Listing a key's runs, newest first.
CREATE INDEX runs_key ON runs (tenant, concurrency_key, id) WHERE concurrency_key IS NOT NULL;
