-- When a worker process last restarted its worker loop (ms since the Unix epoch), beside
-- how many times it did.
ALTER TABLE workers ADD COLUMN last_restart_at BIGINT;
