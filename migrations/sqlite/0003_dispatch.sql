-- Redis delivery (AGENTQ_QUEUE_URL): which ready runs have a message in Redis.
-- `dispatch_seq` counts the messages ever sent for a run; a message carries (id, seq) and
-- a worker's claim must match it, so a stale or duplicated message never claims a run.
-- `dispatched_at` (ms) is set while a message for the current seq may be in Redis; it is
-- NULL whenever the run is not queued/retrying (every status change away clears it).
ALTER TABLE runs ADD COLUMN dispatch_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN dispatched_at INTEGER;
-- The two indexes only Redis delivery reads (the feeder's scan, the window count and the
-- reconciler's look) are created by the first process started with --queue-url
-- (`Store::enable_redis_delivery`): kept up to date on every write, they cost the
-- table-claiming default about a tenth of its throughput (measured on SQLite).
