-- Finished runs by status, then finish time and id. Retention deletes in that order, and
-- the dashboard reads it for the throughput of the last hour (`GET /v1/queues`). Until
-- now it was made only when retention was turned on; every deployment serves the
-- dashboard, so every deployment has it. A finish writes one entry.
-- On a large table, building it holds up inserts, claims and finishes until it is done:
-- build it beforehand without that, and this migration then skips it, with
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_finished ON runs (status, finished_at, id)
--       WHERE status IN ('succeeded', 'failed', 'cancelled');
-- (Not CONCURRENTLY here: it would wait for every process waiting on the migrations'
-- lock, and they for it.)
CREATE INDEX IF NOT EXISTS runs_finished ON runs (status, finished_at, id)
    WHERE status IN ('succeeded', 'failed', 'cancelled');
