//! SQLite's statements. Batched rows arrive as one JSON array in `?1` and are read
//! with `json_each`; `->` keeps JSON values as JSON text, `->>` extracts scalars.
//! Times are milliseconds since the epoch; JSON values are stored as text.

/// A placeholder as this dialect writes it (`?N`), for the statements
/// written once for both (`shared_sql.rs`).
macro_rules! p {
    ($n:literal) => {
        concat!("?", $n)
    };
}

/// `lease_until` of a running run covered by its worker's lease (`worker_leases`): a run's
/// own lease, set by its claim, lasts until its worker's next renewal covers it.
macro_rules! covered {
    () => {
        "9223372036854775807"
    };
}

/// The statuses of a run that has not finished, as the partial index of a key's unfinished
/// runs (`runs_key_unfinished`) names them: a statement must say them the same to use it.
macro_rules! unfinished {
    () => {
        "status IN ('blocked', 'queued', 'running', 'retrying', 'waiting')"
    };
}

/// Opens a batch: takes the write lock at once, so the batch never fails half-way on it.
pub(super) const BEGIN: &str = "BEGIN IMMEDIATE";

/// After the storage was full: the WAL, which grew while checkpoints could not write, is
/// checkpointed and truncated, so the space it took goes back to the disk.
pub(super) const RECLAIM_SPACE: &str = "PRAGMA wal_checkpoint(TRUNCATE)";

/// Tells other processes that runs became claimable. SQLite has no such channel: other
/// processes on the same file find new runs at their poll interval.
pub(super) const NOTIFY_READY: Option<&str> = None;

/// Row locks before read-then-write decisions: none needed, this process's writer is the
/// database's only writer and every batch holds the write lock from its start.
pub(super) const LOCK_RUN: Option<&str> = None;

macro_rules! run_columns {
    () => {
        run_columns!("input", "result", "checkpoint", "on_failure")
    };
    // the columns, with these expressions for the bodies a list may leave out
    ($input:literal, $result:literal, $checkpoint:literal, $on_failure:literal) => {
        concat!("id, agent, status, ", $input, " AS input, priority, metadata, progress_percent, progress_message, \
         attempt, max_attempts, ", $result, " AS result, ", $checkpoint, " AS checkpoint, error_kind, error_message, timeout_ms, \
         backoff_base_ms, backoff_cap_ms, run_at, deadline, expires_at, waiting_for, wait_until, \
         callback_url, ", $on_failure, " AS on_failure, compensation_run_id, compensates_run_id, worker_id, \
         CASE WHEN lease_until = 9223372036854775807 THEN (SELECT w.lease_until \
         FROM worker_leases w WHERE w.worker_id = runs.worker_id AND w.lease_until >= 0) \
         ELSE lease_until END AS lease_until, \
         created_at, started_at, finished_at, updated_at, tenant, created_by, \
         concurrency_key, concurrency_limit, key_waiting, \
         CASE WHEN depends_count > 0 THEN (SELECT json_group_array(depends_on_id) \
         FROM run_dependencies WHERE run_id = runs.id) END AS depends_on")
    };
}

/// The filter of listing and counting runs: ?1 agent, ?2 created at or after, ?3 created
/// before, ?4 tenant, ?5 JSON object of metadata every match carries, ?6 a LIKE pattern
/// (`\` escapes) matched against the id and every metadata value, ignoring ASCII case,
/// ?7 concurrency key.
macro_rules! run_filter {
    () => {
        "(?1 IS NULL OR agent = ?1) \
         AND (?2 IS NULL OR created_at >= ?2) \
         AND (?3 IS NULL OR created_at < ?3) \
         AND (?4 IS NULL OR tenant = ?4) \
         AND (?5 IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(?5) AS f WHERE NOT EXISTS \
              (SELECT 1 FROM json_each(runs.metadata) AS m WHERE m.key = f.key AND m.value = f.value))) \
         AND (?6 IS NULL OR id LIKE ?6 ESCAPE '\\' OR EXISTS \
              (SELECT 1 FROM json_each(runs.metadata) AS m WHERE m.value LIKE ?6 ESCAPE '\\')) \
         AND (?7 IS NULL OR concurrency_key = ?7)"
    };
}

/// `run_filter!` (?1 to ?7), then ?8 JSON array of statuses or NULL, ?9 cursor (ids below
/// it), ?10 limit. Newest first, by primary key.
/// ?11-?14: whether the input, result, checkpoint and on_failure are returned (else null).
pub(super) const LIST_RUNS: &str = concat!(
    "SELECT ",
    run_columns!(
        "CASE WHEN ?11 THEN input END",
        "CASE WHEN ?12 THEN result END",
        "CASE WHEN ?13 THEN checkpoint END",
        "CASE WHEN ?14 THEN on_failure END"
    ),
    " FROM runs WHERE ",
    run_filter!(),
    " AND (?8 IS NULL OR status IN (SELECT value FROM json_each(?8))) \
      AND (?9 IS NULL OR id < ?9) \
     ORDER BY id DESC LIMIT ?10"
);

/// ?1 now, ?2 tenant or NULL: per agent, the runs in each unfinished state (`queued` only
/// counts those due; `scheduled` those due later), with the earliest due time of the
/// queued. Each part walks its partial index; blocked runs are found through their
/// dependency rows.
pub(super) const QUEUE_STATES: &str = "
SELECT agent, 'running' AS state, COUNT(*) AS runs, NULL AS oldest
FROM runs INDEXED BY runs_lease WHERE status = 'running' AND (?2 IS NULL OR tenant = ?2)
GROUP BY agent
UNION ALL
SELECT agent, CASE WHEN status = 'retrying' THEN 'retrying'
                   WHEN run_at <= ?1 THEN 'queued' ELSE 'scheduled' END,
       COUNT(*), MIN(run_at)
FROM runs INDEXED BY runs_ready WHERE status IN ('queued', 'retrying') AND (?2 IS NULL OR tenant = ?2)
GROUP BY 1, 2
UNION ALL
SELECT agent, 'waiting', COUNT(*), NULL
FROM runs INDEXED BY runs_waiting WHERE status = 'waiting' AND (?2 IS NULL OR tenant = ?2)
GROUP BY agent
UNION ALL
SELECT agent, 'blocked', COUNT(*), NULL
FROM runs WHERE id IN (SELECT run_id FROM run_dependencies) AND status = 'blocked'
  AND (?2 IS NULL OR tenant = ?2)
GROUP BY agent";

/// ?1 start of the window (ms), ?2 tenant or NULL: runs finished since, by agent, status
/// and minute of the window (0 is the first).
pub(super) const THROUGHPUT: &str = "
SELECT agent, status, (finished_at - ?1) / 60000 AS minute, COUNT(*)
FROM runs INDEXED BY runs_finished
WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at >= ?1
  AND (?2 IS NULL OR tenant = ?2)
GROUP BY 1, 2, 3";

/// ?1 run id.
pub(super) const RUN_EXISTS: &str = "SELECT 1 FROM runs WHERE id = ?1";

/// ?1 run id, ?2 after this seq. The run's `created` event (seq 1) is read off its row,
/// unless a build that stored it as a row of its own wrote it (see `insert_event_rows`).
pub(super) const LIST_EVENTS: &str = "
SELECT 1 AS seq, created_at AS at, 'created' AS type, 0 AS attempt, '{}' AS data,
       created_by AS actor
FROM runs
WHERE id = ?1 AND ?2 < 1
  AND NOT EXISTS (SELECT 1 FROM run_events WHERE run_id = ?1 AND seq = 1)
UNION ALL
SELECT seq, at, type, attempt, data, actor FROM run_events WHERE run_id = ?1 AND seq > ?2
ORDER BY seq LIMIT ?3";

/// ?1 a JSON array of run ids: each one's newest event seq.
pub(super) const EVENT_HEADS: &str =
    "SELECT id, event_seq FROM runs WHERE id IN (SELECT value FROM json_each(?1))";

/// ?1 run id, ?2 how many of its latest progress events to keep: deletes the older ones.
pub(super) const PRUNE_PROGRESS: &str = "
DELETE FROM run_events WHERE run_id = ?1 AND type = 'progress' AND seq < (
    SELECT MIN(seq) FROM (SELECT seq FROM run_events WHERE run_id = ?1 AND type = 'progress'
                          ORDER BY seq DESC LIMIT ?2))";

/// ?1 now.
pub(super) const HAS_DUE_WEBHOOKS: &str = "
SELECT EXISTS (SELECT 1 FROM webhook_deliveries INDEXED BY webhook_deliveries_due
               WHERE delivered_at IS NULL AND given_up = 0 AND due_at <= ?1)";

pub(super) const INSERT_RUNS: &str = "
INSERT INTO runs (id, agent, status, input, priority, metadata, max_attempts, timeout_ms,
                  backoff_base_ms, backoff_cap_ms, run_at, created_at, updated_at, event_seq,
                  idempotency_key, request_hash, idempotency_expires_at, deadline, expires_at,
                  on_failure, compensates_run_id, depends_count, callback_url, tenant, trace_parent,
                  created_by, concurrency_key, concurrency_limit, key_waiting)
SELECT value->>'id', value->>'agent', COALESCE(value->>'status', 'queued'), value->'input',
       value->>'priority',
       value->'metadata', value->>'max_attempts', value->>'timeout_ms',
       value->>'backoff_base_ms', value->>'backoff_cap_ms', value->>'run_at', ?2, ?2, 1,
       value->>'key', value->>'fingerprint', value->>'key_expires_at',
       value->>'deadline', value->>'expires_at', value->'on_failure',
       value->>'compensates', COALESCE(value->>'depends_count', 0), value->>'callback_url',
       COALESCE(value->>'tenant', 'default'), value->>'trace_parent', value->>'created_by',
       value->>'concurrency_key', value->>'concurrency_limit', COALESCE(value->>'key_waiting', 0)
FROM json_each(?1)";

pub(super) const INSERT_EVENTS: &str = "
INSERT INTO run_events (run_id, seq, at, type, attempt, data, actor)
SELECT value->>'r', value->>'s', ?2, value->>'k', value->>'a', value->'d', value->>'w'
FROM json_each(?1)";

/// ?1 worker id, ?2 lease end, ?3 now, ?4 JSON array of agents or NULL for all, ?5 limit.
/// `runs_ready` is in claim order, so the scan stops after `limit` due runs instead of
/// sorting the whole backlog (the planner would otherwise pick `runs_status`).
pub(super) const CLAIM: &str = "
UPDATE runs
SET status = 'running', attempt = attempt + 1, claims = claims + 1, worker_id = ?1, lease_until = ?2,
    started_at = COALESCE(started_at, ?3), updated_at = ?3, event_seq = event_seq + 1, dispatched_at = NULL
WHERE id IN (
    SELECT id FROM runs INDEXED BY runs_ready
    WHERE status IN ('queued', 'retrying') AND run_at <= ?3
      AND (?4 IS NULL OR agent IN (SELECT value FROM json_each(?4)))
      AND agent NOT IN (SELECT agent FROM agent_pauses)
      AND (deadline IS NULL OR deadline > ?3)
      AND (expires_at IS NULL OR expires_at > ?3 OR started_at IS NOT NULL)
    ORDER BY priority DESC, run_at, id
    LIMIT ?5)
RETURNING id, agent, input, checkpoint, deadline, depends_count, attempt, claims, max_attempts, timeout_ms, backoff_base_ms,
          backoff_cap_ms, priority, event_seq, run_at, trace_parent, requeued_at,
          tenant, metadata, created_by";

/// ?1 JSON array of {id, claim, worker}: covers these attempts' runs by their worker's
/// lease; returns those whose fence holds.
pub(super) const COVER_LEASES: &str = concat!(
    "
UPDATE runs SET lease_until = ",
    covered!(),
    "
FROM (SELECT value->>'id' AS id, value->>'claim' AS claim, value->>'worker' AS worker
      FROM json_each(?1)) AS f
WHERE runs.id = f.id AND runs.claims = f.claim AND runs.worker_id = f.worker
  AND +runs.status = 'running'
RETURNING runs.id, runs.claims"
);

/// ?1 JSON array of {id, claim, worker, n (events), b (bytes), l (the run's limit)}, ?2
/// now: appends stream parts to many running attempts' runs at once. A row whose fence no
/// longer holds, or whose stream would pass its limit, is not updated nor returned.
pub(super) const STREAM_APPEND_MANY: &str = "
UPDATE runs SET event_seq = runs.event_seq + f.n, stream_bytes = runs.stream_bytes + f.b,
    updated_at = ?2
FROM (SELECT value->>'id' AS id, value->>'claim' AS claim, value->>'worker' AS worker,
             value->>'n' AS n, value->>'b' AS b, value->>'l' AS l
      FROM json_each(?1)) AS f
WHERE runs.id = f.id AND runs.claims = f.claim AND runs.worker_id = f.worker
  AND +runs.status = 'running' AND runs.stream_bytes + f.b <= f.l
RETURNING runs.id, runs.claims, runs.event_seq";

/// ?1 the checkpoint (JSON text), ?2 now, ?3..?5 the fence.
pub(super) const CHECKPOINT: &str = "
UPDATE runs SET checkpoint = ?1, updated_at = ?2, event_seq = event_seq + 1
WHERE id = ?3 AND claims = ?4 AND worker_id = ?5 AND status = 'running'
RETURNING event_seq";

/// ?1 JSON array of {id, claim, worker, status, result?, error_kind?, error_message?,
/// run_at?}, ?2 now. Only rows whose fence still holds are updated and returned.
/// The unary `+` keeps the planner on primary-key lookups driven by the batch.
pub(super) const FINISH: &str = "
UPDATE runs
SET status = f.status, result = f.result, error_kind = f.error_kind,
    error_message = f.error_message, run_at = COALESCE(f.run_at, runs.run_at),
    finished_at = CASE WHEN f.status = 'retrying' THEN NULL ELSE ?2 END,
    worker_id = NULL, lease_until = NULL, updated_at = ?2, event_seq = runs.event_seq + 1
FROM (SELECT value->>'id' AS id, value->>'claim' AS claim, value->>'worker' AS worker,
             value->>'status' AS status, value->'result' AS result,
             value->>'error_kind' AS error_kind, value->>'error_message' AS error_message,
             value->>'run_at' AS run_at
      FROM json_each(?1)) AS f
WHERE runs.id = f.id AND runs.claims = f.claim AND runs.worker_id = f.worker
  AND +runs.status = 'running'
RETURNING runs.id, runs.agent, runs.event_seq, runs.dependents,
          runs.callback_url IS NOT NULL AS has_callback,
          runs.concurrency_key IS NOT NULL AS keyed";

/// ?1 now. Runs out of attempts fail (two events: attempt_lost, failed); others retry now,
/// at their old place in line (`run_at` kept): a crashed worker's runs are claimed next,
/// not behind the runs queued while they ran.
macro_rules! take_back {
    () => {
        "UPDATE runs
SET status = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'retrying' END,
    error_kind = 'lost_worker',
    error_message = 'worker ' || worker_id || ' stopped renewing its lease',
    finished_at = CASE WHEN attempt >= max_attempts THEN ?1 ELSE NULL END,
    worker_id = NULL, lease_until = NULL, requeued_at = ?1, updated_at = ?1,
    event_seq = event_seq + CASE WHEN attempt >= max_attempts THEN 2 ELSE 1 END"
    };
}

/// ?1 now: takes back the runs whose own lease ran out (claimed, not yet covered by their
/// worker's lease).
pub(super) const SWEEP_EXPIRED: &str = concat!(
    take_back!(),
    "
WHERE status = 'running' AND lease_until < ?1
RETURNING id, attempt, status, event_seq, error_message"
);

/// ?1 now, ?2 JSON array of worker ids whose lease was revoked: takes back the runs their
/// lease covered.
pub(super) const SWEEP_REVOKED: &str = concat!(
    take_back!(),
    "
WHERE status = 'running' AND lease_until = ",
    covered!(),
    "
  AND worker_id IN (SELECT value FROM json_each(?2))
RETURNING id, attempt, status, event_seq, error_message"
);

/// ?1 now: revokes the leases that ran out; their workers' covered runs are taken back.
pub(super) const REVOKE_WORKER_LEASES: &str = "
UPDATE worker_leases SET lease_until = -1 WHERE lease_until >= 0 AND lease_until < ?1";

/// ?1 worker id, ?2 JSON array of the run ids of its attempts: the notices of attempts it no
/// longer sends (it stopped them) go.
pub(super) const DROP_NOTICES: &str = "
DELETE FROM worker_notices
WHERE worker_id = ?1 AND run_id NOT IN (SELECT value FROM json_each(?2))";

/// ?1 a lease end, ?2 worker id, ?3 JSON array of the run ids of its attempts: its covered
/// runs it no longer sends (an attempt that ended without its outcome written, a process
/// before it under the same worker id) get a lease of their own back, and run out.
pub(super) const UNCOVER_OTHERS: &str = concat!(
    "
UPDATE runs SET lease_until = ?1
WHERE status = 'running' AND lease_until = ",
    covered!(),
    " AND worker_id = ?2
  AND id NOT IN (SELECT value FROM json_each(?3))"
);

/// ?1 run id: a covered running run's worker is told at its next renewal that it lost it.
pub(super) const NOTICE_LOST: &str = concat!(
    "
INSERT INTO worker_notices (worker_id, run_id, claims)
SELECT worker_id, id, claims FROM runs
WHERE id = ?1 AND status = 'running' AND lease_until = ",
    covered!()
);

/// ?1 now, ?2 JSON array of failed run ids to put back in the queue, attempts reset.
pub(super) const REQUEUE: &str = "
UPDATE runs
SET status = CASE WHEN concurrency_key IS NOT NULL THEN 'blocked'
        WHEN depends_count > 0 AND EXISTS (
        SELECT 1 FROM run_dependencies d JOIN runs dep ON dep.id = d.depends_on_id
        WHERE d.run_id = runs.id AND dep.status != 'succeeded') THEN 'blocked' ELSE 'queued' END,
    key_waiting = CASE WHEN concurrency_key IS NOT NULL THEN 1 ELSE 0 END,
    attempt = 0, result = NULL, error_kind = NULL, error_message = NULL,
    progress_percent = NULL, progress_message = NULL, finished_at = NULL, run_at = ?1,
    updated_at = ?1, event_seq = event_seq + 1, stream_bytes = 0
WHERE id IN (SELECT value FROM json_each(?2)) AND status = 'failed'
  AND NOT EXISTS (
    SELECT 1 FROM run_dependencies d JOIN runs dep ON dep.id = d.depends_on_id
    WHERE d.run_id = runs.id AND dep.status IN ('failed', 'cancelled'))
RETURNING id, event_seq, tenant, agent, concurrency_key";

/// Failed runs matching a filter that `REQUEUE` can put back (none of their dependencies
/// failed or was cancelled), oldest first: ?1 agent, ?2 created at or after, ?3 created
/// before, ?4 limit, ?5 tenant. A chunk of runs it would skip would end the chunking early.
pub(super) const FAILED_MATCHING: &str = "
SELECT id FROM runs
WHERE status = 'failed' AND (?1 IS NULL OR agent = ?1)
  AND (?2 IS NULL OR created_at >= ?2) AND (?3 IS NULL OR created_at < ?3)
  AND (?5 IS NULL OR tenant = ?5)
  AND NOT EXISTS (
    SELECT 1 FROM run_dependencies d JOIN runs dep ON dep.id = d.depends_on_id
    WHERE d.run_id = runs.id AND dep.status IN ('failed', 'cancelled'))
ORDER BY id LIMIT ?4";

pub(super) const STATUS_OF: &str = "SELECT status FROM runs WHERE id = ?1";

/// ?1 now. Due runs past their deadline fail; the partial index keeps this off the backlog.
pub(super) const FAIL_PAST_DEADLINE: &str = "
UPDATE runs
SET status = 'failed', error_kind = 'deadline_exceeded',
    error_message = 'the run did not finish before its deadline',
    finished_at = ?1, updated_at = ?1, event_seq = event_seq + 1,
    dispatched_at = NULL
WHERE id IN (SELECT id FROM runs INDEXED BY runs_deadline
             WHERE deadline IS NOT NULL AND status IN ('blocked', 'queued', 'retrying', 'waiting')
               AND deadline <= ?1)
RETURNING id, attempt, event_seq, error_kind, error_message";

/// ?1 now. Runs never started by their `expires_at` fail.
pub(super) const FAIL_EXPIRED: &str = "
UPDATE runs
SET status = 'failed', error_kind = 'expired',
    error_message = 'the run did not start before it expired',
    finished_at = ?1, updated_at = ?1, event_seq = event_seq + 1,
    dispatched_at = NULL
WHERE id IN (SELECT id FROM runs INDEXED BY runs_expiry
             WHERE expires_at IS NOT NULL AND status IN ('blocked', 'queued')
               AND started_at IS NULL AND expires_at <= ?1)
RETURNING id, attempt, event_seq, error_kind, error_message";

/// ?1 JSON array of run ids that just failed for good: those with an `on_failure` and no
/// compensation run yet.
pub(super) const TO_COMPENSATE: &str = "
SELECT id, agent, input, error_kind, error_message, on_failure, priority, max_attempts,
       timeout_ms, backoff_base_ms, backoff_cap_ms, attempt, tenant
FROM runs
WHERE id IN (SELECT value FROM json_each(?1)) AND on_failure IS NOT NULL
  AND compensation_run_id IS NULL";

/// ?1 JSON array of run ids.
pub(super) const STATUSES_OF: &str = "
SELECT id, status, tenant FROM runs WHERE id IN (SELECT value FROM json_each(?1))";

/// ?1 JSON array of {r: run id, d: the run it depends on}.
pub(super) const INSERT_DEPENDENCIES: &str = "
INSERT OR IGNORE INTO run_dependencies (run_id, depends_on_id)
SELECT value->>'r', value->>'d' FROM json_each(?1)";

/// ?1 JSON array of {r, d}: counts the new dependents of each `d`, so finishing a run
/// with none needs no look for them.
pub(super) const COUNT_DEPENDENTS: &str = "
UPDATE runs
SET dependents = dependents
    + (SELECT COUNT(*) FROM json_each(?1) WHERE value->>'d' = runs.id)
WHERE id IN (SELECT value->>'d' FROM json_each(?1))";

/// ?1 JSON array of settled run ids: their dependents still blocked.
pub(super) const BLOCKED_DEPENDENTS: &str = "
SELECT d.run_id, d.depends_on_id
FROM run_dependencies d INDEXED BY run_dependents JOIN runs r ON r.id = d.run_id
WHERE d.depends_on_id IN (SELECT value FROM json_each(?1)) AND r.status = 'blocked'";

/// ?1 now, ?2 run id: queues a blocked run once every dependency succeeded.
pub(super) const UNBLOCK: &str = "
UPDATE runs SET status = 'queued', run_at = MAX(run_at, ?1), updated_at = ?1,
    event_seq = event_seq + 1
WHERE id = ?2 AND status = 'blocked' AND key_waiting = 0 AND NOT EXISTS (
    SELECT 1 FROM run_dependencies d JOIN runs dep ON dep.id = d.depends_on_id
    WHERE d.run_id = runs.id AND dep.status != 'succeeded')
RETURNING event_seq";

/// Decisions about concurrency keys need no lock besides the write lock every batch holds.
pub(super) const KEY_LOCK: Option<&str> = None;

/// ?1 JSON array of [tenant, agent, key]: each key's unfinished runs, counted by whether
/// they hold it (`key_waiting` 0) or wait their turn (1).
pub(super) const KEY_USE: &str = concat!(
    "
SELECT runs.tenant, runs.agent, runs.concurrency_key, runs.key_waiting, COUNT(*) AS n
FROM json_each(?1) AS k
JOIN runs INDEXED BY runs_key_unfinished
  ON runs.tenant = k.value->>0 AND runs.agent = k.value->>1 AND runs.concurrency_key = k.value->>2
WHERE runs.concurrency_key IS NOT NULL AND runs.",
    unfinished!(),
    "
GROUP BY 1, 2, 3, 4"
);

/// ?1 tenant, ?2 agent, ?3 key, ?4 how many, ?5 1: only runs not started: the key's oldest
/// unfinished runs.
pub(super) const KEY_OLDEST: &str = concat!(
    "
SELECT id, key_waiting FROM runs INDEXED BY runs_key_unfinished
WHERE tenant = ?1 AND agent = ?2 AND concurrency_key = ?3
  AND concurrency_key IS NOT NULL AND ",
    unfinished!(),
    "
  AND (NOT ?5 OR (status IN ('blocked', 'queued') AND started_at IS NULL))
ORDER BY id LIMIT ?4"
);

/// ?1 JSON array of run ids: the keys of those that have one.
pub(super) const KEYS_OF: &str = "
SELECT DISTINCT tenant, agent, concurrency_key FROM runs
WHERE id IN (SELECT value FROM json_each(?1)) AND concurrency_key IS NOT NULL";

/// ?1 JSON array of [tenant, agent, key]: those some run waits for.
pub(super) const KEYS_WAITED_FOR: &str = concat!(
    "
SELECT k.value->>0 AS tenant, k.value->>1 AS agent, k.value->>2 AS concurrency_key
FROM json_each(?1) AS k
WHERE EXISTS (SELECT 1 FROM runs AS w INDEXED BY runs_key_unfinished
              WHERE w.tenant = k.value->>0 AND w.agent = k.value->>1
                AND w.concurrency_key = k.value->>2 AND w.key_waiting = 1
                AND w.concurrency_key IS NOT NULL AND w.",
    unfinished!(),
    ")"
);

/// ?1 now, ?2 tenant, ?3 agent, ?4 key: lets the key's oldest waiting runs in
/// while fewer than the limit (the first waiting run's) hold it. They stay `blocked`: each is
/// then unblocked by `UNBLOCK`, under its row lock, unless a run it depends on has not
/// succeeded (a dependency settled by another process while this statement waited for the
/// row is seen there, not here).
pub(super) const ADMIT_KEY: &str = concat!(
    "
UPDATE runs SET key_waiting = 0, updated_at = ?1
WHERE id IN (
    SELECT w.id FROM runs AS w INDEXED BY runs_key_unfinished
    WHERE w.tenant = ?2 AND w.agent = ?3 AND w.concurrency_key = ?4 AND w.key_waiting = 1
      AND w.concurrency_key IS NOT NULL AND w.",
    unfinished!(),
    "
    ORDER BY w.id
    LIMIT MAX(0,
        COALESCE((SELECT concurrency_limit FROM runs INDEXED BY runs_key_unfinished
                  WHERE tenant = ?2 AND agent = ?3 AND concurrency_key = ?4 AND key_waiting = 1
                    AND concurrency_key IS NOT NULL AND ",
    unfinished!(),
    "
                  ORDER BY id LIMIT 1), 0)
        - (SELECT COUNT(*) FROM runs INDEXED BY runs_key_unfinished
           WHERE tenant = ?2 AND agent = ?3 AND concurrency_key = ?4 AND key_waiting = 0
             AND concurrency_key IS NOT NULL AND ",
    unfinished!(),
    ")))
RETURNING id"
);

/// ?1 JSON array of claimed run ids: the results of the runs they depend on.
pub(super) const DEPENDENCY_RESULTS: &str = "
SELECT d.run_id, d.depends_on_id, r.result
FROM run_dependencies d JOIN runs r ON r.id = d.depends_on_id
WHERE d.run_id IN (SELECT value FROM json_each(?1))";

/// ?1 now, ?2 run id, ?3 JSON array of signal names, ?4 claim, ?5 worker, ?6 the id of the
/// wait report taking it (an external worker's) or NULL: consumes the oldest pending signal
/// among the names, if the attempt still owns its run.
pub(super) const TAKE_SIGNAL: &str = "
UPDATE run_signals SET consumed_at = ?1, taken_by = ?6
WHERE id = (SELECT s.id FROM run_signals s JOIN runs r ON r.id = s.run_id
            WHERE s.run_id = ?2 AND s.consumed_at IS NULL
              AND s.name IN (SELECT value FROM json_each(?3))
              AND r.claims = ?4 AND r.worker_id = ?5 AND r.status = 'running'
            ORDER BY s.id LIMIT 1)
RETURNING name, payload, timed_out";

/// ?1 run id, ?2 the wait report's id: the signal that report took, if it took one.
pub(super) const SIGNAL_TAKEN_BY: &str = "
SELECT name, payload, timed_out FROM run_signals WHERE run_id = ?1 AND taken_by = ?2";

/// ?1 JSON array of names, ?2 until, ?3 resume on timeout, ?4 now, ?5..?7 the fence.
/// Suspends the attempt; a matching signal already pending queues the run again at once,
/// so a signal sent before the wait is never missed. A waiting run keeps its attempt's
/// number (it is in that attempt); the wait uses none of the budget, as the run goes back to
/// the queue one lower (here or in `RESUME`) and its next claim continues the number.
pub(super) const WAIT: &str = "
UPDATE runs
SET status = CASE WHEN EXISTS (
        SELECT 1 FROM run_signals s WHERE s.run_id = runs.id AND s.consumed_at IS NULL
          AND s.name IN (SELECT value FROM json_each(?1))) THEN 'queued' ELSE 'waiting' END,
    waiting_for = ?1, wait_until = ?2, wait_resume = ?3, attempt = attempt - CASE WHEN EXISTS (
            SELECT 1 FROM run_signals s WHERE s.run_id = runs.id AND s.consumed_at IS NULL
              AND s.name IN (SELECT value FROM json_each(?1))) THEN 1 ELSE 0 END,
    worker_id = NULL, lease_until = NULL, run_at = ?4, updated_at = ?4,
    event_seq = event_seq + 1
WHERE id = ?5 AND claims = ?6 AND worker_id = ?7 AND status = 'running'
RETURNING status, event_seq";

/// ?1 run id, ?2 name, ?3 payload (JSON text), ?4 now, ?5 timed out, ?6 the signature of
/// a signed request (a second signal with it is not stored).
pub(super) const INSERT_SIGNAL: &str = "
INSERT INTO run_signals (run_id, name, payload, received_at, timed_out, signature)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (run_id, signature) WHERE signature IS NOT NULL DO NOTHING";

/// ?1 now, ?2 run id, ?3 signal name: resumes a run waiting for that signal.
pub(super) const RESUME: &str = "
UPDATE runs SET status = 'queued', attempt = attempt - 1, run_at = ?1, updated_at = ?1, event_seq = event_seq + 1
WHERE id = ?2 AND status = 'waiting'
  AND EXISTS (SELECT 1 FROM json_each(waiting_for) WHERE value = ?3)
RETURNING event_seq, attempt + 1 AS attempt";

/// ?1 now: waiting runs whose wait ended.
pub(super) const WAITS_ENDED: &str = "
SELECT id, waiting_for, wait_resume FROM runs INDEXED BY runs_waiting
WHERE status = 'waiting' AND wait_until <= ?1";

/// ?1 now, ?2 JSON array of run ids that just reached a terminal state: schedules a
/// delivery for each that has a callback_url.
pub(super) const SCHEDULE_WEBHOOKS: &str = "
INSERT INTO webhook_deliveries (run_id, due_at, created_at)
SELECT id, ?1, ?1 FROM runs
WHERE id IN (SELECT value FROM json_each(?2)) AND callback_url IS NOT NULL
  AND status IN ('succeeded', 'failed', 'cancelled')";

/// ?1 now, ?2 lease end, ?3 limit: claims due deliveries (at least once: a claim whose
/// worker dies is due again when its lease ends).
pub(super) const CLAIM_WEBHOOKS: &str = "
UPDATE webhook_deliveries SET due_at = ?2, attempts = attempts + 1
WHERE id IN (SELECT id FROM webhook_deliveries INDEXED BY webhook_deliveries_due
             WHERE delivered_at IS NULL AND given_up = 0 AND due_at <= ?1
             ORDER BY due_at LIMIT ?3)
RETURNING id, run_id, attempts, created_at";

/// ?1 next due time (NULL: give up), ?2 error, ?3 delivery id.
pub(super) const WEBHOOK_FAILED: &str = "
UPDATE webhook_deliveries
SET due_at = COALESCE(?1, due_at), given_up = (?1 IS NULL), last_error = ?2
WHERE id = ?3";

/// Redis delivery: taken before an agent's window is topped up, so two feeders never
/// count the same window at once. SQLite needs none: its one writer serialises them.
pub(super) const DISPATCH_LOCK: Option<&str> = None;

/// ?1 agent: how many of its runs have a message in Redis.
pub(super) const COUNT_DISPATCHED: &str = "
SELECT COUNT(*) FROM runs INDEXED BY runs_dispatched
WHERE agent = ?1 AND dispatched_at IS NOT NULL";

/// ?1 now, ?2 agent, ?3 limit: marks the agent's next ready runs as sent to Redis, in
/// claim order, each with a new dispatch seq (the fence its message carries).
pub(super) const DISPATCH: &str = "
UPDATE runs SET dispatched_at = ?1, dispatch_seq = dispatch_seq + 1
WHERE id IN (
    SELECT id FROM runs INDEXED BY runs_undispatched
    WHERE agent = ?2 AND status IN ('queued', 'retrying') AND dispatched_at IS NULL
      AND run_at <= ?1 AND NOT EXISTS (SELECT 1 FROM agent_pauses WHERE agent = ?2)
      AND (deadline IS NULL OR deadline > ?1)
      AND (expires_at IS NULL OR expires_at > ?1 OR started_at IS NOT NULL)
    ORDER BY priority DESC, run_at, id
    LIMIT ?3)
RETURNING id, dispatch_seq, priority, run_at";

/// ?1 worker id, ?2 lease end, ?3 now, ?4 JSON array of {id, seq}: claims the runs whose
/// message is current (same seq, still dispatched, still ready), like `CLAIM` does.
pub(super) const CLAIM_DISPATCHED: &str = "
UPDATE runs
SET status = 'running', attempt = attempt + 1, claims = claims + 1, worker_id = ?1, lease_until = ?2,
    started_at = COALESCE(started_at, ?3), updated_at = ?3, event_seq = event_seq + 1,
    dispatched_at = NULL
FROM (SELECT value->>'id' AS id, value->>'seq' AS seq FROM json_each(?4)) AS d
WHERE runs.id = d.id AND runs.dispatch_seq = d.seq AND runs.dispatched_at IS NOT NULL
  AND +runs.status IN ('queued', 'retrying') AND runs.run_at <= ?3
  AND runs.agent NOT IN (SELECT agent FROM agent_pauses)
  AND (runs.deadline IS NULL OR runs.deadline > ?3)
  AND (runs.expires_at IS NULL OR runs.expires_at > ?3 OR runs.started_at IS NOT NULL)
RETURNING runs.id, runs.agent, runs.input, runs.checkpoint, runs.deadline, runs.depends_count,
          runs.attempt, runs.claims, runs.max_attempts, runs.timeout_ms, runs.backoff_base_ms,
          runs.backoff_cap_ms, runs.priority, runs.event_seq, runs.run_at, runs.trace_parent, runs.requeued_at,
          runs.tenant, runs.metadata, runs.created_by";

/// ?1 JSON array of {id, seq}: these messages are lost; the feeder sends the runs again.
pub(super) const UNDISPATCH: &str = "
UPDATE runs SET dispatched_at = NULL
FROM (SELECT value->>'id' AS id, value->>'seq' AS seq FROM json_each(?1)) AS d
WHERE runs.id = d.id AND runs.dispatch_seq = d.seq AND runs.dispatched_at IS NOT NULL";

/// ?1 sent before this, ?2 limit, ?3 JSON array of agents: their messages old enough to
/// check for in Redis, oldest first.
pub(super) const DISPATCHED_BEFORE: &str = "
SELECT agent, id, dispatch_seq FROM runs INDEXED BY runs_dispatched
WHERE dispatched_at IS NOT NULL AND dispatched_at < ?1
  AND agent IN (SELECT value FROM json_each(?3))
ORDER BY dispatched_at
LIMIT ?2";

/// Schema changes (migrations, Redis delivery's indexes) run in a transaction that holds the
/// write lock from its start: sqlx takes no migration lock for SQLite, and processes
/// started at once on a new file would each create the tables.
pub(super) const SCHEMA_BEGIN: Option<&str> = Some("BEGIN IMMEDIATE");

/// No lock besides the write lock `SCHEMA_BEGIN` takes.
pub(super) const SCHEMA_LOCK: Option<&str> = None;

/// Redis delivery's indexes, created when a process first delivers through Redis: the
/// feeder's scan (one agent's ready runs with no message yet, in claim order), and the
/// window count per agent with the reconciler's look for lost messages.
pub(super) const REDIS_INDEXES: [&str; 2] = [
    "CREATE INDEX IF NOT EXISTS runs_undispatched ON runs (agent, priority DESC, run_at, id)
     WHERE status IN ('queued', 'retrying') AND dispatched_at IS NULL",
    "CREATE INDEX IF NOT EXISTS runs_dispatched ON runs (agent, dispatched_at)
     WHERE dispatched_at IS NOT NULL",
];

/// ?1 id, ?2 now.
pub(super) const REVOKE_KEY: &str =
    "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL";

/// ?1 id.
pub(super) const FIND_API_KEY: &str =
    "SELECT tenant, scopes, secret_hash, revoked_at FROM api_keys WHERE id = ?1";

/// ?1 name, ?2 value: kept only if the name has none yet.
pub(super) const INSERT_SECRET: &str =
    "INSERT INTO server_secrets (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING";

/// ?1 status, ?2 how many of the newest to skip: the finish time and id of the oldest run
/// that count-based retention keeps (none when there are no more than ?2 + 1).
pub(super) const OLDEST_KEPT: &str = "
SELECT finished_at, id FROM runs INDEXED BY runs_finished
WHERE status IN ('succeeded', 'failed', 'cancelled') AND status = ?1
ORDER BY finished_at DESC, id DESC LIMIT 1 OFFSET ?2";

/// ?1 status, ?2 ?3 after this (finished_at, id), ?4 ?5 before this, ?6 limit: finished
/// runs the janitor may delete, oldest first. The repeated status list lets the partial
/// index serve a statement whose status is a parameter.
pub(super) const PURGE_CANDIDATES: &str = "
SELECT id, finished_at FROM runs INDEXED BY runs_finished
WHERE status IN ('succeeded', 'failed', 'cancelled') AND status = ?1
  AND (finished_at, id) > (?2, ?3) AND (finished_at, id) < (?4, ?5)
ORDER BY finished_at, id LIMIT ?6";

/// ?1 JSON array of candidate ids: deletes those nothing still needs (a run that depends
/// on it, an unfinished compensation partner, a webhook still to deliver).
pub(super) const PURGE_RUNS: &str = "
DELETE FROM runs
WHERE id IN (SELECT value FROM json_each(?1))
  AND status IN ('succeeded', 'failed', 'cancelled')
  AND NOT EXISTS (SELECT 1 FROM run_dependencies d WHERE d.depends_on_id = runs.id)
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries w WHERE w.run_id = runs.id
                  AND w.delivered_at IS NULL AND w.given_up = 0)
  AND NOT EXISTS (SELECT 1 FROM runs p
                  WHERE p.id IN (runs.compensation_run_id, runs.compensates_run_id)
                    AND p.status NOT IN ('succeeded', 'failed', 'cancelled'))
RETURNING id";

/// ?1 JSON array of deleted run ids: their rows in the other tables.
pub(super) const PURGE_CHILDREN: [&str; 4] = [
    "DELETE FROM run_events WHERE run_id IN (SELECT value FROM json_each(?1))",
    "DELETE FROM run_dependencies WHERE run_id IN (SELECT value FROM json_each(?1))",
    "DELETE FROM run_signals WHERE run_id IN (SELECT value FROM json_each(?1))",
    "DELETE FROM webhook_deliveries WHERE run_id IN (SELECT value FROM json_each(?1))",
];

/// ?1 JSON array of run ids: their agents (for the counts of runs that changed state).
pub(super) const AGENTS_OF: &str = "
SELECT id, agent FROM runs WHERE id IN (SELECT value FROM json_each(?1))";

/// ?1 now: per agent, the runs running, ready (queued or retrying, due), and scheduled
/// (due later), each with its earliest due time. Each part walks its partial index only.
pub(super) const RUN_GAUGES: &str = "
SELECT agent, 'running' AS state, COUNT(*) AS runs, MIN(run_at) AS oldest
FROM runs INDEXED BY runs_lease WHERE status = 'running' GROUP BY agent
UNION ALL
SELECT agent, CASE WHEN run_at <= ?1 THEN 'ready' ELSE 'scheduled' END, COUNT(*), MIN(run_at)
FROM runs INDEXED BY runs_ready WHERE status IN ('queued', 'retrying') GROUP BY 1, 2";

/// Agent limits take no lock on SQLite: every batch holds the database's write lock.
pub(super) const AGENT_LIMIT_LOCK: Option<&str> = None;

/// ?1 JSON array of agents: how many runs of each are running (`--agent-limit`).
pub(super) const RUNNING_BY_AGENT: &str = "
SELECT agent, COUNT(*) AS n FROM runs INDEXED BY runs_lease
WHERE status = 'running' AND agent IN (SELECT value FROM json_each(?1))
GROUP BY agent";

// the statements both dialects share (see `shared_sql.rs`)
include!("../shared_sql.rs");

/// Every statement above and in `shared_sql.rs` by its name (none for a step this dialect
/// does not take), for the test that prepares them all on a freshly migrated schema
/// (`engine::statements`).
#[cfg(test)]
pub(super) fn all() -> Vec<(&'static str, Vec<&'static str>)> {
    in_both_dialects()
}
