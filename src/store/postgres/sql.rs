//! PostgreSQL's statements: the same writes as the SQLite dialect, with the same parameters
//! in the same order. Batched rows arrive as one JSON array in `$1` and are read with
//! `jsonb_array_elements`. JSON columns are `jsonb` and are read back as text (`::text`),
//! which is what the shared row mapping expects.
//!
//! Rows picked by a subquery are matched with `id = ANY(ARRAY(subquery))`, not
//! `id IN (subquery)`: the statements are prepared, and PostgreSQL's generic plan for
//! `IN` may hash-join against a scan of the whole runs table (measured: 7 ms per claim
//! over a 20,000-run backlog), while an array parameter always probes the primary key.
//! Batched updates of attempts (finish, lease renewal) name their ids the same way: the
//! partial index of running runs keeps an entry for every run that ever ran until vacuum
//! removes it, so reaching them through it grows with the throughput.
//!
//! Many processes write at once here, so subqueries that pick rows to change lock them
//! with `FOR UPDATE SKIP LOCKED`: a row another writer holds is left to it, and a row
//! changed since the statement's snapshot is checked again on its newest version before
//! it is locked, so the outer `UPDATE` needs no conditions of its own (which would also
//! tempt the planner into the partial indexes, dead entries and all). `LOCK_RUN` serialises the few read-then-write decisions that span rows of
//! two tables (a wait against a signal, a dependent's unblocking against its other
//! dependencies finishing).

/// A placeholder as this dialect writes it (`$N`), for the statements
/// written once for both (`shared_sql.rs`).
macro_rules! p {
    ($n:literal) => {
        concat!("$", $n)
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

pub(super) const BEGIN: &str = "BEGIN";

/// After the storage was full: nothing to do (PostgreSQL recycles its own WAL segments
/// once space returns); a round trip that checks the connection.
pub(super) const RECLAIM_SPACE: &str = "SELECT 1";

/// Whether the runs table changed by more than 500 rows plus 5% since it was last
/// analysed (by anyone, autovacuum included).
pub(super) const STATISTICS_STALE: &str = "
SELECT COALESCE(s.n_mod_since_analyze > 500 + 0.05 * GREATEST(c.reltuples, 0), false)
FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = 'runs'::regclass";

/// One analysing process at a time per database (held until the transaction ends).
pub(super) const TRY_ANALYZE_LOCK: &str =
    "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || ':agentq:analyze'))";

/// Wakes other processes' idle workers at commit (they `LISTEN` on this channel). The
/// payload names the sending process (`agentq.process`, set on the writer's connection), so
/// its own listener, whose claims its writer woke already, lets it pass.
pub(super) const NOTIFY_READY: Option<&str> =
    Some("SELECT pg_notify('agentq_ready', current_setting('agentq.process', true))");

/// ?1 run id: takes the run's row lock before a decision that reads other rows.
pub(super) const LOCK_RUN: Option<&str> = Some("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE");

macro_rules! run_columns {
    () => {
        run_columns!(
            "input::text",
            "result::text",
            "checkpoint::text",
            "on_failure::text"
        )
    };
    // the columns, with these expressions for the bodies a list may leave out
    ($input:literal, $result:literal, $checkpoint:literal, $on_failure:literal) => {
        concat!(
            "id, agent, status, ",
            $input,
            " AS input, priority, metadata::text AS metadata, \
         progress_percent, progress_message, attempt, max_attempts, ",
            $result,
            " AS result, \
         ",
            $checkpoint,
            " AS checkpoint, error_kind, error_message, timeout_ms, \
         backoff_base_ms, backoff_cap_ms, run_at, deadline, expires_at, \
         waiting_for::text AS waiting_for, wait_until, callback_url, \
         ",
            $on_failure,
            " AS on_failure, compensation_run_id, compensates_run_id, worker_id, \
         CASE WHEN lease_until = 9223372036854775807 THEN (SELECT w.lease_until \
         FROM worker_leases w WHERE w.worker_id = runs.worker_id AND w.lease_until >= 0) \
         ELSE lease_until END AS lease_until, \
         created_at, started_at, finished_at, updated_at, tenant, created_by, \
         concurrency_key, concurrency_limit, key_waiting, \
         CASE WHEN depends_count > 0 THEN (SELECT json_agg(depends_on_id)::text \
         FROM run_dependencies WHERE run_id = runs.id) END AS depends_on"
        )
    };
}

macro_rules! run_filter {
    () => {
        "($1::text IS NULL OR agent = $1) \
         AND ($2::bigint IS NULL OR created_at >= $2) \
         AND ($3::bigint IS NULL OR created_at < $3) \
         AND ($4::text IS NULL OR tenant = $4) \
         AND ($5::jsonb IS NULL OR metadata @> $5::jsonb) \
         AND ($6::text IS NULL OR id ILIKE $6 OR EXISTS \
              (SELECT 1 FROM jsonb_each_text(runs.metadata) AS m WHERE m.value ILIKE $6)) \
         AND ($7::text IS NULL OR concurrency_key = $7)"
    };
}

/// $11-$14: whether the input, result, checkpoint and on_failure are returned (else null).
pub(super) const LIST_RUNS: &str = concat!(
    "SELECT ",
    run_columns!(
        "CASE WHEN $11::boolean THEN input::text END",
        "CASE WHEN $12::boolean THEN result::text END",
        "CASE WHEN $13::boolean THEN checkpoint::text END",
        "CASE WHEN $14::boolean THEN on_failure::text END"
    ),
    " FROM runs WHERE ",
    run_filter!(),
    " AND ($8::jsonb IS NULL OR status = ANY(ARRAY(SELECT jsonb_array_elements_text($8::jsonb)))) \
      AND ($9::text IS NULL OR id < $9) \
     ORDER BY id DESC LIMIT $10"
);

pub(super) const QUEUE_STATES: &str = "
SELECT agent, 'running' AS state, COUNT(*) AS runs, NULL::bigint AS oldest
FROM runs WHERE status = 'running' AND ($2::text IS NULL OR tenant = $2)
GROUP BY agent
UNION ALL
SELECT agent, CASE WHEN status = 'retrying' THEN 'retrying'
                   WHEN run_at <= $1 THEN 'queued' ELSE 'scheduled' END,
       COUNT(*), MIN(run_at)
FROM runs WHERE status IN ('queued', 'retrying') AND ($2::text IS NULL OR tenant = $2)
GROUP BY 1, 2
UNION ALL
SELECT agent, 'waiting', COUNT(*), NULL
FROM runs WHERE status = 'waiting' AND ($2::text IS NULL OR tenant = $2)
GROUP BY agent
UNION ALL
SELECT agent, 'blocked', COUNT(*), NULL
FROM runs WHERE id IN (SELECT run_id FROM run_dependencies) AND status = 'blocked'
  AND ($2::text IS NULL OR tenant = $2)
GROUP BY agent";

pub(super) const THROUGHPUT: &str = "
SELECT agent, status, (finished_at - $1::bigint) / 60000 AS minute, COUNT(*)
FROM runs
WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at >= $1::bigint
  AND ($2::text IS NULL OR tenant = $2)
GROUP BY 1, 2, 3";

pub(super) const RUN_EXISTS: &str = "SELECT 1::bigint FROM runs WHERE id = $1";

/// The run's `created` event (seq 1) is read off its row, unless a build that stored it as
/// a row of its own wrote it (see `insert_event_rows`).
pub(super) const LIST_EVENTS: &str = "
SELECT 1::bigint AS seq, created_at AS at, 'created' AS type, 0::bigint AS attempt,
       '{}' AS data, created_by AS actor
FROM runs
WHERE id = $1 AND $2::bigint < 1
  AND NOT EXISTS (SELECT 1 FROM run_events WHERE run_id = $1 AND seq = 1)
UNION ALL
SELECT seq, at, type, attempt, data::text AS data, actor FROM run_events
WHERE run_id = $1 AND seq > $2
ORDER BY seq LIMIT $3";

/// $1 a JSON array of run ids: each one's newest event seq.
pub(super) const EVENT_HEADS: &str = "SELECT id, event_seq FROM runs \
     WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))";

/// $1 run id, $2 how many of its latest progress events to keep: deletes the older ones.
pub(super) const PRUNE_PROGRESS: &str = "
DELETE FROM run_events WHERE run_id = $1 AND type = 'progress' AND seq < (
    SELECT MIN(seq) FROM (SELECT seq FROM run_events WHERE run_id = $1 AND type = 'progress'
                          ORDER BY seq DESC LIMIT $2) AS latest)";

pub(super) const HAS_DUE_WEBHOOKS: &str = "
SELECT EXISTS (SELECT 1 FROM webhook_deliveries
               WHERE delivered_at IS NULL AND given_up = 0 AND due_at <= $1)";

pub(super) const INSERT_RUNS: &str = "
INSERT INTO runs (id, agent, status, input, priority, metadata, max_attempts, timeout_ms,
                  backoff_base_ms, backoff_cap_ms, run_at, created_at, updated_at, event_seq,
                  idempotency_key, request_hash, idempotency_expires_at, deadline, expires_at,
                  on_failure, compensates_run_id, depends_count, callback_url, tenant, trace_parent,
                  created_by, concurrency_key, concurrency_limit, key_waiting)
SELECT value->>'id', value->>'agent', COALESCE(value->>'status', 'queued'), value->'input',
       (value->>'priority')::bigint, value->'metadata', (value->>'max_attempts')::bigint,
       (value->>'timeout_ms')::bigint, (value->>'backoff_base_ms')::bigint,
       (value->>'backoff_cap_ms')::bigint, (value->>'run_at')::bigint, $2, $2, 1,
       value->>'key', value->>'fingerprint', (value->>'key_expires_at')::bigint,
       (value->>'deadline')::bigint, (value->>'expires_at')::bigint,
       value->'on_failure', value->>'compensates',
       COALESCE((value->>'depends_count')::bigint, 0), value->>'callback_url',
       COALESCE(value->>'tenant', 'default'), value->>'trace_parent', value->>'created_by',
       value->>'concurrency_key', (value->>'concurrency_limit')::bigint,
       COALESCE((value->>'key_waiting')::bigint, 0)
FROM jsonb_array_elements($1::jsonb)";

pub(super) const INSERT_EVENTS: &str = "
INSERT INTO run_events (run_id, seq, at, type, attempt, data, actor)
SELECT value->>'r', (value->>'s')::bigint, $2, value->>'k', (value->>'a')::bigint,
       COALESCE(value->'d', '{}'::jsonb), value->>'w'
FROM jsonb_array_elements($1::jsonb)";

pub(super) const CLAIM: &str = "
UPDATE runs
SET status = 'running', attempt = attempt + 1, claims = claims + 1, worker_id = $1,
    lease_until = $2, started_at = COALESCE(started_at, $3), updated_at = $3,
    event_seq = event_seq + 1, dispatched_at = NULL
WHERE id = ANY(ARRAY(
    SELECT id FROM runs
    WHERE status IN ('queued', 'retrying') AND run_at <= $3
      AND ($4::jsonb IS NULL OR agent = ANY(ARRAY(SELECT jsonb_array_elements_text($4::jsonb))))
      AND agent NOT IN (SELECT agent FROM agent_pauses)
      AND (deadline IS NULL OR deadline > $3)
      AND (expires_at IS NULL OR expires_at > $3 OR started_at IS NOT NULL)
    ORDER BY priority DESC, run_at, id
    LIMIT $5
    FOR UPDATE SKIP LOCKED))
RETURNING id, agent, input::text AS input, checkpoint::text AS checkpoint, deadline,
          depends_count, attempt, claims, max_attempts, timeout_ms, backoff_base_ms,
          backoff_cap_ms, priority, event_seq, run_at, trace_parent, requeued_at,
          tenant, metadata::text AS metadata, created_by";

/// $1 JSON array of {id, claim, worker}: covers these attempts' runs by their worker's
/// lease; returns those whose fence holds.
pub(super) const COVER_LEASES: &str = concat!(
    "
UPDATE runs SET lease_until = ",
    covered!(),
    "
FROM (SELECT value->>'id' AS id, (value->>'claim')::bigint AS claim,
             value->>'worker' AS worker
      FROM jsonb_array_elements($1::jsonb)) AS f
WHERE runs.id = ANY(ARRAY(SELECT value->>'id' FROM jsonb_array_elements($1::jsonb)))
  AND runs.id = f.id AND runs.claims = f.claim AND runs.worker_id = f.worker
  AND runs.status = 'running'
RETURNING runs.id, runs.claims"
);

/// $1 JSON array of {id, claim, worker, n (events), b (bytes), l (the run's limit)}, $2
/// now: appends stream parts to many running attempts' runs at once. A row whose fence no
/// longer holds, or whose stream would pass its limit, is not updated nor returned.
pub(super) const STREAM_APPEND_MANY: &str = "
UPDATE runs SET event_seq = runs.event_seq + f.n, stream_bytes = runs.stream_bytes + f.b,
    updated_at = $2
FROM (SELECT value->>'id' AS id, (value->>'claim')::bigint AS claim,
             value->>'worker' AS worker, (value->>'n')::bigint AS n,
             (value->>'b')::bigint AS b, (value->>'l')::bigint AS l
      FROM jsonb_array_elements($1::jsonb)) AS f
WHERE runs.id = ANY(ARRAY(SELECT value->>'id' FROM jsonb_array_elements($1::jsonb)))
  AND runs.id = f.id AND runs.claims = f.claim AND runs.worker_id = f.worker
  AND runs.status = 'running' AND runs.stream_bytes + f.b <= f.l
RETURNING runs.id, runs.claims, runs.event_seq";

pub(super) const CHECKPOINT: &str = "
UPDATE runs SET checkpoint = $1::jsonb, updated_at = $2, event_seq = event_seq + 1
WHERE id = $3 AND claims = $4 AND worker_id = $5 AND status = 'running'
RETURNING event_seq";

pub(super) const FINISH: &str = "
UPDATE runs
SET status = f.status, result = f.result, error_kind = f.error_kind,
    error_message = f.error_message, run_at = COALESCE(f.run_at, runs.run_at),
    finished_at = CASE WHEN f.status = 'retrying' THEN NULL ELSE $2::bigint END,
    worker_id = NULL, lease_until = NULL, updated_at = $2, event_seq = runs.event_seq + 1
FROM (SELECT value->>'id' AS id, (value->>'claim')::bigint AS claim,
             value->>'worker' AS worker, value->>'status' AS status,
             value->'result' AS result,
             value->>'error_kind' AS error_kind, value->>'error_message' AS error_message,
             (value->>'run_at')::bigint AS run_at
      FROM jsonb_array_elements($1::jsonb)) AS f
WHERE runs.id = ANY(ARRAY(SELECT value->>'id' FROM jsonb_array_elements($1::jsonb)))
  AND runs.id = f.id AND runs.claims = f.claim AND runs.worker_id = f.worker
  AND runs.status = 'running'
RETURNING runs.id, runs.agent, runs.event_seq, runs.dependents,
          runs.callback_url IS NOT NULL AS has_callback,
          runs.concurrency_key IS NOT NULL AS keyed";

macro_rules! take_back {
    () => {
        "UPDATE runs
SET status = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'retrying' END,
    error_kind = 'lost_worker',
    error_message = 'worker ' || worker_id || ' stopped renewing its lease',
    finished_at = CASE WHEN attempt >= max_attempts THEN $1::bigint ELSE NULL END,
    worker_id = NULL, lease_until = NULL, requeued_at = $1, updated_at = $1,
    event_seq = event_seq + CASE WHEN attempt >= max_attempts THEN 2 ELSE 1 END"
    };
}

/// $1 now: takes back the runs whose own lease ran out (claimed, not yet covered by their
/// worker's lease).
pub(super) const SWEEP_EXPIRED: &str = concat!(
    take_back!(),
    "
WHERE id = ANY(ARRAY(SELECT id FROM runs WHERE status = 'running' AND lease_until < $1
                    FOR UPDATE SKIP LOCKED))
RETURNING id, attempt, status, event_seq, error_message"
);

/// $1 now, $2 JSON array of worker ids whose lease was revoked: takes back the runs their
/// lease covered.
pub(super) const SWEEP_REVOKED: &str = concat!(
    take_back!(),
    "
WHERE id = ANY(ARRAY(SELECT id FROM runs WHERE status = 'running' AND lease_until = ",
    covered!(),
    "
                      AND worker_id = ANY(ARRAY(SELECT jsonb_array_elements_text($2::jsonb)))
                    FOR UPDATE SKIP LOCKED))
RETURNING id, attempt, status, event_seq, error_message"
);

/// $1 now: revokes the leases that ran out; their workers' covered runs are taken back. A
/// lease row a renewal holds is skipped (it is being renewed, or this sweep comes again).
pub(super) const REVOKE_WORKER_LEASES: &str = "
UPDATE worker_leases SET lease_until = -1
WHERE worker_id = ANY(ARRAY(SELECT worker_id FROM worker_leases
                            WHERE lease_until >= 0 AND lease_until < $1
                            FOR UPDATE SKIP LOCKED))";

/// $1 worker id, $2 JSON array of the run ids of its attempts: the notices of attempts it no
/// longer sends (it stopped them) go.
pub(super) const DROP_NOTICES: &str = "
DELETE FROM worker_notices
WHERE worker_id = $1 AND run_id NOT IN (SELECT jsonb_array_elements_text($2::jsonb))";

/// $1 a lease end, $2 worker id, $3 JSON array of the run ids of its attempts: its covered
/// runs it no longer sends (an attempt that ended without its outcome written, a process
/// before it under the same worker id) get a lease of their own back, and run out.
pub(super) const UNCOVER_OTHERS: &str = concat!(
    "
UPDATE runs SET lease_until = $1
WHERE status = 'running' AND lease_until = ",
    covered!(),
    " AND worker_id = $2
  AND id NOT IN (SELECT jsonb_array_elements_text($3::jsonb))"
);

/// $1 run id: a covered running run's worker is told at its next renewal that it lost it.
/// The run is locked by id first and judged as it is then: a renewal covering it a moment
/// before is seen, and one after waits for the change that follows this.
pub(super) const NOTICE_LOST: &str = concat!(
    "
INSERT INTO worker_notices (worker_id, run_id, claims)
SELECT worker_id, id, claims
FROM (SELECT worker_id, id, claims, status, lease_until FROM runs WHERE id = $1 FOR UPDATE) r
WHERE r.status = 'running' AND r.lease_until = ",
    covered!()
);

pub(super) const REQUEUE: &str = "
UPDATE runs
SET status = CASE WHEN concurrency_key IS NOT NULL THEN 'blocked'
        WHEN depends_count > 0 AND EXISTS (
        SELECT 1 FROM run_dependencies d JOIN runs dep ON dep.id = d.depends_on_id
        WHERE d.run_id = runs.id AND dep.status != 'succeeded') THEN 'blocked' ELSE 'queued' END,
    key_waiting = CASE WHEN concurrency_key IS NOT NULL THEN 1 ELSE 0 END,
    attempt = 0, result = NULL, error_kind = NULL, error_message = NULL,
    progress_percent = NULL, progress_message = NULL, finished_at = NULL, run_at = $1,
    updated_at = $1, event_seq = event_seq + 1, stream_bytes = 0
WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($2::jsonb))) AND status = 'failed'
  AND NOT EXISTS (
    SELECT 1 FROM run_dependencies d JOIN runs dep ON dep.id = d.depends_on_id
    WHERE d.run_id = runs.id AND dep.status IN ('failed', 'cancelled'))
RETURNING id, event_seq, tenant, agent, concurrency_key";

pub(super) const FAILED_MATCHING: &str = "
SELECT id FROM runs
WHERE status = 'failed' AND ($1::text IS NULL OR agent = $1)
  AND ($2::bigint IS NULL OR created_at >= $2) AND ($3::bigint IS NULL OR created_at < $3)
  AND ($5::text IS NULL OR tenant = $5)
  AND NOT EXISTS (
    SELECT 1 FROM run_dependencies d JOIN runs dep ON dep.id = d.depends_on_id
    WHERE d.run_id = runs.id AND dep.status IN ('failed', 'cancelled'))
ORDER BY id LIMIT $4";

/// Also takes the run's row lock: a signal or cancel decides on the status it reads.
pub(super) const STATUS_OF: &str = "SELECT status FROM runs WHERE id = $1 FOR UPDATE";

pub(super) const FAIL_PAST_DEADLINE: &str = "
UPDATE runs
SET status = 'failed', error_kind = 'deadline_exceeded',
    error_message = 'the run did not finish before its deadline',
    finished_at = $1, updated_at = $1, event_seq = event_seq + 1, dispatched_at = NULL
WHERE id = ANY(ARRAY(
        SELECT id FROM runs
        WHERE deadline IS NOT NULL AND status IN ('blocked', 'queued', 'retrying', 'waiting')
          AND deadline <= $1
        FOR UPDATE SKIP LOCKED))
RETURNING id, attempt, event_seq, error_kind, error_message";

pub(super) const FAIL_EXPIRED: &str = "
UPDATE runs
SET status = 'failed', error_kind = 'expired',
    error_message = 'the run did not start before it expired',
    finished_at = $1, updated_at = $1, event_seq = event_seq + 1, dispatched_at = NULL
WHERE id = ANY(ARRAY(
        SELECT id FROM runs
        WHERE expires_at IS NOT NULL AND status IN ('blocked', 'queued')
          AND started_at IS NULL AND expires_at <= $1
        FOR UPDATE SKIP LOCKED))
RETURNING id, attempt, event_seq, error_kind, error_message";

pub(super) const TO_COMPENSATE: &str = "
SELECT id, agent, input::text AS input, error_kind, error_message,
       on_failure::text AS on_failure, priority, max_attempts, timeout_ms, backoff_base_ms,
       backoff_cap_ms, attempt, tenant
FROM runs
WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb))) AND on_failure IS NOT NULL
  AND compensation_run_id IS NULL
FOR UPDATE";

/// Locks the rows in id order: the new run's dependents count is about to change, and a
/// dependency finishing meanwhile must either be seen or see the new run.
pub(super) const STATUSES_OF: &str = "
SELECT id, status, tenant FROM runs WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))
ORDER BY id FOR UPDATE";

pub(super) const INSERT_DEPENDENCIES: &str = "
INSERT INTO run_dependencies (run_id, depends_on_id)
SELECT value->>'r', value->>'d' FROM jsonb_array_elements($1::jsonb)
ON CONFLICT DO NOTHING";

pub(super) const COUNT_DEPENDENTS: &str = "
UPDATE runs
SET dependents = dependents
    + (SELECT COUNT(*) FROM jsonb_array_elements($1::jsonb) WHERE value->>'d' = runs.id)
WHERE id = ANY(ARRAY(SELECT value->>'d' FROM jsonb_array_elements($1::jsonb)))";

pub(super) const BLOCKED_DEPENDENTS: &str = "
SELECT d.run_id, d.depends_on_id
FROM run_dependencies d JOIN runs r ON r.id = d.run_id
WHERE d.depends_on_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb))) AND r.status = 'blocked'";

pub(super) const UNBLOCK: &str = "
UPDATE runs SET status = 'queued', run_at = GREATEST(run_at, $1), updated_at = $1,
    event_seq = event_seq + 1
WHERE id = $2 AND status = 'blocked' AND key_waiting = 0 AND NOT EXISTS (
    SELECT 1 FROM run_dependencies d JOIN runs dep ON dep.id = d.depends_on_id
    WHERE d.run_id = runs.id AND dep.status != 'succeeded')
RETURNING event_seq";

/// Serialises every decision about concurrency keys (new runs let in or told to wait,
/// waiting runs let in) over all processes: a batch takes it once, before its first.
pub(super) const KEY_LOCK: Option<&str> =
    Some("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':agentq:keys'))");

/// $1 JSON array of [tenant, agent, key]: each key's unfinished runs, counted by whether
/// they hold it (`key_waiting` 0) or wait their turn (1).
pub(super) const KEY_USE: &str = concat!(
    "
SELECT runs.tenant, runs.agent, runs.concurrency_key, runs.key_waiting, COUNT(*) AS n
FROM jsonb_array_elements($1::jsonb) AS k
JOIN runs ON runs.tenant = k.value->>0 AND runs.agent = k.value->>1
         AND runs.concurrency_key = k.value->>2
WHERE runs.concurrency_key IS NOT NULL AND runs.",
    unfinished!(),
    "
GROUP BY 1, 2, 3, 4"
);

/// $1 tenant, $2 agent, $3 key, $4 how many, $5 true: only runs not started: the key's
/// oldest unfinished runs.
pub(super) const KEY_OLDEST: &str = concat!(
    "
SELECT id, key_waiting FROM runs
WHERE tenant = $1 AND agent = $2 AND concurrency_key = $3
  AND concurrency_key IS NOT NULL AND ",
    unfinished!(),
    "
  AND (NOT $5 OR (status IN ('blocked', 'queued') AND started_at IS NULL))
ORDER BY id LIMIT $4"
);

/// $1 JSON array of run ids: the keys of those that have one.
pub(super) const KEYS_OF: &str = "
SELECT DISTINCT tenant, agent, concurrency_key FROM runs
WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb))) AND concurrency_key IS NOT NULL";

/// $1 JSON array of [tenant, agent, key]: those some run waits for.
pub(super) const KEYS_WAITED_FOR: &str = concat!(
    "
SELECT k.value->>0 AS tenant, k.value->>1 AS agent, k.value->>2 AS concurrency_key
FROM jsonb_array_elements($1::jsonb) AS k
WHERE EXISTS (SELECT 1 FROM runs AS w
              WHERE w.tenant = k.value->>0 AND w.agent = k.value->>1
                AND w.concurrency_key = k.value->>2 AND w.key_waiting = 1
                AND w.concurrency_key IS NOT NULL AND w.",
    unfinished!(),
    ")"
);

/// $1 now, $2 tenant, $3 agent, $4 key: lets the key's oldest waiting runs in
/// while fewer than the limit (the first waiting run's) hold it. They stay `blocked`: each is
/// then unblocked by `UNBLOCK`, under its row lock, unless a run it depends on has not
/// succeeded (a dependency settled by another process while this statement waited for the
/// row is seen there, not here).
pub(super) const ADMIT_KEY: &str = concat!(
    "
UPDATE runs SET key_waiting = 0, updated_at = $1
WHERE id IN (
    SELECT w.id FROM runs AS w
    WHERE w.tenant = $2 AND w.agent = $3 AND w.concurrency_key = $4 AND w.key_waiting = 1
      AND w.concurrency_key IS NOT NULL AND w.",
    unfinished!(),
    "
    ORDER BY w.id
    LIMIT GREATEST(0,
        COALESCE((SELECT concurrency_limit FROM runs
                  WHERE tenant = $2 AND agent = $3 AND concurrency_key = $4 AND key_waiting = 1
                    AND concurrency_key IS NOT NULL AND ",
    unfinished!(),
    "
                  ORDER BY id LIMIT 1), 0)
        - (SELECT COUNT(*) FROM runs
           WHERE tenant = $2 AND agent = $3 AND concurrency_key = $4 AND key_waiting = 0
             AND concurrency_key IS NOT NULL AND ",
    unfinished!(),
    ")))
RETURNING id"
);

pub(super) const DEPENDENCY_RESULTS: &str = "
SELECT d.run_id, d.depends_on_id, r.result::text AS result
FROM run_dependencies d JOIN runs r ON r.id = d.depends_on_id
WHERE d.run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))";

pub(super) const TAKE_SIGNAL: &str = "
UPDATE run_signals SET consumed_at = $1, taken_by = $6
WHERE id = (SELECT s.id FROM run_signals s JOIN runs r ON r.id = s.run_id
            WHERE s.run_id = $2 AND s.consumed_at IS NULL
              AND s.name = ANY(ARRAY(SELECT jsonb_array_elements_text($3::jsonb)))
              AND r.claims = $4 AND r.worker_id = $5 AND r.status = 'running'
            ORDER BY s.id LIMIT 1
            FOR UPDATE OF s)
  AND consumed_at IS NULL
RETURNING name, payload::text AS payload, timed_out";

pub(super) const SIGNAL_TAKEN_BY: &str = "
SELECT name, payload::text AS payload, timed_out FROM run_signals
WHERE run_id = $1 AND taken_by = $2";

pub(super) const WAIT: &str = "
UPDATE runs
SET status = CASE WHEN EXISTS (
        SELECT 1 FROM run_signals s WHERE s.run_id = runs.id AND s.consumed_at IS NULL
          AND s.name = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))) THEN 'queued'
        ELSE 'waiting' END,
    waiting_for = $1::jsonb, wait_until = $2, wait_resume = CASE WHEN $3 THEN 1 ELSE 0 END,
    attempt = attempt - CASE WHEN EXISTS (
            SELECT 1 FROM run_signals s WHERE s.run_id = runs.id AND s.consumed_at IS NULL
              AND s.name = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))) THEN 1 ELSE 0 END,
    worker_id = NULL, lease_until = NULL, run_at = $4, updated_at = $4,
    event_seq = event_seq + 1
WHERE id = $5 AND claims = $6 AND worker_id = $7 AND status = 'running'
RETURNING status, event_seq";

pub(super) const INSERT_SIGNAL: &str = "
INSERT INTO run_signals (run_id, name, payload, received_at, timed_out, signature)
VALUES ($1, $2, $3::jsonb, $4, CASE WHEN $5 THEN 1 ELSE 0 END, $6)
ON CONFLICT (run_id, signature) WHERE signature IS NOT NULL DO NOTHING";

pub(super) const RESUME: &str = "
UPDATE runs SET status = 'queued', attempt = attempt - 1, run_at = $1, updated_at = $1, event_seq = event_seq + 1
WHERE id = $2 AND status = 'waiting' AND waiting_for ? $3
RETURNING event_seq, attempt + 1 AS attempt";

pub(super) const WAITS_ENDED: &str = "
SELECT id, waiting_for::text AS waiting_for, wait_resume FROM runs
WHERE status = 'waiting' AND wait_until <= $1
FOR UPDATE SKIP LOCKED";

pub(super) const SCHEDULE_WEBHOOKS: &str = "
INSERT INTO webhook_deliveries (run_id, due_at, created_at)
SELECT id, $1, $1 FROM runs
WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($2::jsonb))) AND callback_url IS NOT NULL
  AND status IN ('succeeded', 'failed', 'cancelled')";

pub(super) const CLAIM_WEBHOOKS: &str = "
UPDATE webhook_deliveries SET due_at = $2, attempts = attempts + 1
WHERE id = ANY(ARRAY(
        SELECT id FROM webhook_deliveries
        WHERE delivered_at IS NULL AND given_up = 0 AND due_at <= $1
        ORDER BY due_at LIMIT $3
        FOR UPDATE SKIP LOCKED))
RETURNING id, run_id, attempts, created_at";

pub(super) const WEBHOOK_FAILED: &str = "
UPDATE webhook_deliveries
SET due_at = COALESCE($1, due_at), given_up = CASE WHEN $1::bigint IS NULL THEN 1 ELSE 0 END,
    last_error = $2
WHERE id = $3";

/// Redis delivery: one feeder per agent at a time across every process, so the window
/// count is exact; a feeder that does not get it skips the agent this round. Advisory
/// locks are database-wide: the keys name the schema, so deployments (or tests) in other
/// schemas of the same database never hold each other's.
/// $1 the agent. Answers whether the lock was taken.
pub(super) const DISPATCH_LOCK: Option<&str> =
    Some("SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || ':agentq:feed:' || $1))");

pub(super) const COUNT_DISPATCHED: &str = "
SELECT COUNT(*) FROM runs WHERE agent = $1 AND dispatched_at IS NOT NULL";

/// The picked rows are materialised first: as a plain `IN (subquery)` the planner may
/// evaluate the subquery again per row and mark more than `$3` runs.
pub(super) const DISPATCH: &str = "
WITH picked AS MATERIALIZED (
    SELECT id FROM runs
    WHERE agent = $2 AND status IN ('queued', 'retrying') AND dispatched_at IS NULL
      AND run_at <= $1 AND NOT EXISTS (SELECT 1 FROM agent_pauses WHERE agent = $2)
      AND (deadline IS NULL OR deadline > $1)
      AND (expires_at IS NULL OR expires_at > $1 OR started_at IS NOT NULL)
    ORDER BY priority DESC, run_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED)
UPDATE runs SET dispatched_at = $1, dispatch_seq = runs.dispatch_seq + 1
WHERE runs.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING runs.id, runs.dispatch_seq, runs.priority, runs.run_at";

pub(super) const CLAIM_DISPATCHED: &str = "
UPDATE runs
SET status = 'running', attempt = attempt + 1, claims = claims + 1, worker_id = $1,
    lease_until = $2, started_at = COALESCE(started_at, $3), updated_at = $3,
    event_seq = event_seq + 1, dispatched_at = NULL
FROM (SELECT value->>'id' AS id, (value->>'seq')::bigint AS seq
      FROM jsonb_array_elements($4::jsonb)) AS d
WHERE runs.id = ANY(ARRAY(SELECT value->>'id' FROM jsonb_array_elements($4::jsonb)))
  AND runs.id = d.id AND runs.dispatch_seq = d.seq AND runs.dispatched_at IS NOT NULL
  AND runs.status IN ('queued', 'retrying') AND runs.run_at <= $3
  AND runs.agent NOT IN (SELECT agent FROM agent_pauses)
  AND (runs.deadline IS NULL OR runs.deadline > $3)
  AND (runs.expires_at IS NULL OR runs.expires_at > $3 OR runs.started_at IS NOT NULL)
RETURNING runs.id, runs.agent, runs.input::text AS input, runs.checkpoint::text AS checkpoint,
          runs.deadline, runs.depends_count, runs.attempt, runs.claims, runs.max_attempts,
          runs.timeout_ms, runs.backoff_base_ms, runs.backoff_cap_ms, runs.priority,
          runs.event_seq, runs.run_at, runs.trace_parent, runs.requeued_at,
          runs.tenant, runs.metadata::text AS metadata, runs.created_by";

pub(super) const UNDISPATCH: &str = "
UPDATE runs SET dispatched_at = NULL
FROM (SELECT value->>'id' AS id, (value->>'seq')::bigint AS seq
      FROM jsonb_array_elements($1::jsonb)) AS d
WHERE runs.id = ANY(ARRAY(SELECT value->>'id' FROM jsonb_array_elements($1::jsonb)))
  AND runs.id = d.id AND runs.dispatch_seq = d.seq AND runs.dispatched_at IS NOT NULL";

pub(super) const DISPATCHED_BEFORE: &str = "
SELECT agent, id, dispatch_seq FROM runs
WHERE dispatched_at IS NOT NULL AND dispatched_at < $1
  AND agent = ANY(ARRAY(SELECT jsonb_array_elements_text($3::jsonb)))
ORDER BY dispatched_at
LIMIT $2";

/// Schema changes run in plain transactions: sqlx's migrator holds an advisory lock of its
/// own, and other changes take `SCHEMA_LOCK`.
pub(super) const SCHEMA_BEGIN: Option<&str> = None;

/// Held by a schema change besides migrations (Redis delivery's indexes):
/// `CREATE INDEX IF NOT EXISTS` checks the name before it takes its lock, so two processes
/// starting at once could both create the index and the second fail on the catalog's
/// unique name.
pub(super) const SCHEMA_LOCK: Option<&str> =
    Some("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':agentq:schema'))");

/// Redis delivery's indexes, created when a process first delivers through Redis: the
/// feeder's scan (one agent's ready runs with no message yet, in claim order), and the
/// window count per agent with the reconciler's look for lost messages.
pub(super) const REDIS_INDEXES: [&str; 2] = [
    "CREATE INDEX IF NOT EXISTS runs_undispatched ON runs (agent, priority DESC, run_at, id)
     WHERE status IN ('queued', 'retrying') AND dispatched_at IS NULL",
    "CREATE INDEX IF NOT EXISTS runs_dispatched ON runs (agent, dispatched_at)
     WHERE dispatched_at IS NOT NULL",
];

pub(super) const REVOKE_KEY: &str =
    "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";

pub(super) const FIND_API_KEY: &str =
    "SELECT tenant, scopes, secret_hash, revoked_at FROM api_keys WHERE id = $1";

pub(super) const INSERT_SECRET: &str =
    "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";

pub(super) const OLDEST_KEPT: &str = "
SELECT finished_at, id FROM runs
WHERE status IN ('succeeded', 'failed', 'cancelled') AND status = $1
ORDER BY finished_at DESC, id DESC LIMIT 1 OFFSET $2";

/// Locks the candidates: the checks of `PURGE_RUNS`, a statement later, then see every
/// dependent another process committed, and no process can add one before the delete
/// commits (a new run locks the runs it depends on first). Runs another writer holds are
/// left to it.
pub(super) const PURGE_CANDIDATES: &str = "
SELECT id, finished_at FROM runs
WHERE status IN ('succeeded', 'failed', 'cancelled') AND status = $1
  AND (finished_at, id) > ($2, $3) AND (finished_at, id) < ($4, $5)
ORDER BY finished_at, id LIMIT $6
FOR UPDATE SKIP LOCKED";

pub(super) const PURGE_RUNS: &str = "
DELETE FROM runs
WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))
  AND status IN ('succeeded', 'failed', 'cancelled')
  AND NOT EXISTS (SELECT 1 FROM run_dependencies d WHERE d.depends_on_id = runs.id)
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries w WHERE w.run_id = runs.id
                  AND w.delivered_at IS NULL AND w.given_up = 0)
  AND NOT EXISTS (SELECT 1 FROM runs p
                  WHERE p.id IN (runs.compensation_run_id, runs.compensates_run_id)
                    AND p.status NOT IN ('succeeded', 'failed', 'cancelled'))
RETURNING id";

pub(super) const PURGE_CHILDREN: [&str; 4] = [
    "DELETE FROM run_events WHERE run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))",
    "DELETE FROM run_dependencies WHERE run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))",
    "DELETE FROM run_signals WHERE run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))",
    "DELETE FROM webhook_deliveries WHERE run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))",
];

pub(super) const AGENTS_OF: &str = "
SELECT id, agent FROM runs WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))";

pub(super) const RUN_GAUGES: &str = "
SELECT agent, 'running' AS state, COUNT(*) AS runs, MIN(run_at) AS oldest
FROM runs WHERE status = 'running' GROUP BY agent
UNION ALL
SELECT agent, CASE WHEN run_at <= $1 THEN 'ready' ELSE 'scheduled' END, COUNT(*), MIN(run_at)
FROM runs WHERE status IN ('queued', 'retrying') GROUP BY 1, 2";

/// Taken per limited agent before counting its running runs: claims of one agent by
/// several processes then count one after the other (held until the batch commits).
pub(super) const AGENT_LIMIT_LOCK: Option<&str> =
    Some("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':agentq:limit:' || $1))");

pub(super) const RUNNING_BY_AGENT: &str = "
SELECT agent, COUNT(*) AS n FROM runs
WHERE status = 'running' AND agent = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))
GROUP BY agent";

// the statements both dialects share (see `shared_sql.rs`)
include!("../shared_sql.rs");

/// Every statement above and in `shared_sql.rs` by its name (none for a step this dialect
/// does not take), for the test that prepares them all on a freshly migrated schema
/// (`engine::statements`).
#[cfg(test)]
pub(super) fn all() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut all = in_both_dialects();
    all.extend([
        ("STATISTICS_STALE", vec![STATISTICS_STALE]),
        ("TRY_ANALYZE_LOCK", vec![TRY_ANALYZE_LOCK]),
    ]);
    all
}
