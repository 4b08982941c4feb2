-- Leases that cost a write per worker, not per run. A running run whose lease_until is the
-- marker 9223372036854775807 is covered by its worker's row here, which the worker renews
-- with one write however many runs it executes. A run just claimed still has a lease of its
-- own until its worker's next renewal covers it (so a claim whose answer never reached the
-- worker runs out), and a covered run its worker stops renewing gets one back.
-- lease_until < 0: revoked (a sweep found it run out, or the worker stopped). The covered
-- runs of a revoked lease are taken back. epoch changes whenever the lease is taken again
-- after it lapsed: a process that saw the worker's runs covered under another epoch checks
-- each of them again. Times are milliseconds since the Unix epoch (UTC).
CREATE TABLE worker_leases (
    worker_id   TEXT    PRIMARY KEY,
    lease_until INTEGER NOT NULL,
    epoch       INTEGER NOT NULL
) STRICT;
-- Covered runs taken from a worker whose lease is live (a cancel), told at each of its
-- renewals until it stops sending their attempts.
CREATE TABLE worker_notices (
    worker_id TEXT    NOT NULL,
    run_id    TEXT    NOT NULL,
    claims    INTEGER NOT NULL
) STRICT;
CREATE INDEX worker_notices_worker ON worker_notices (worker_id);
-- a worker's covered runs are found by its id (lease_until is the same for all of them)
DROP INDEX runs_lease;
CREATE INDEX runs_lease ON runs (lease_until, worker_id) WHERE status = 'running';
