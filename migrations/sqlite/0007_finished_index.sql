-- Finished runs by status, then finish time and id. Retention deletes in that order, and
-- the dashboard reads it for the throughput of the last hour (`GET /v1/queues`). Until
-- now it was made only when retention was turned on; every deployment serves the
-- dashboard, so every deployment has it. A finish writes one entry. On a large database
-- the first start after the upgrade takes as long as building it (the writes wait).
CREATE INDEX IF NOT EXISTS runs_finished ON runs (status, finished_at, id)
    WHERE status IN ('succeeded', 'failed', 'cancelled');
