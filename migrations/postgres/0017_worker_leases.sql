-- Leases that cost a write per worker, not per run. A running run whose own lease_until is
-- NULL is covered by its worker's row here, which the worker renews with one write however
-- many runs it executes. A run just claimed still has a lease of its own until its worker's
-- next renewal covers it (a claim whose answer never reached the worker thus runs out).
-- lease_until < 0: revoked by a sweep (the worker was silent past its lease). Its covered
-- runs are taken back, and the worker's next renewal checks each of its attempts before it
-- holds a lease again. Times are milliseconds since the Unix epoch (UTC).
CREATE TABLE worker_leases (
    worker_id   TEXT    PRIMARY KEY,
    lease_until BIGINT NOT NULL
);
-- Covered runs taken from a worker whose lease is live (a cancel), told at its next
-- renewal so it stops those attempts.
CREATE TABLE worker_notices (
    worker_id TEXT    NOT NULL,
    run_id    TEXT    NOT NULL,
    claims    BIGINT NOT NULL
);
CREATE INDEX worker_notices_worker ON worker_notices (worker_id);
