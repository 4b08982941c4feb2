-- When a run last went back to the queue without finishing its attempt (its worker lost
-- the lease, or handed it back at shutdown), in ms. Such a run keeps its `run_at`, and with
-- it its place in line; its next attempt's queue wait counts from here instead. NULL when
-- it never went back.
ALTER TABLE runs ADD COLUMN requeued_at INTEGER;
