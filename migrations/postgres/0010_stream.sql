-- A run's output stream is stored as its `stream` events; this counts their bytes over
-- all attempts, so a run past --max-stream-bytes is refused more.
ALTER TABLE runs ADD COLUMN stream_bytes BIGINT NOT NULL DEFAULT 0;
