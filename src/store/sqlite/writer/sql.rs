//! The writer's statements. Batched rows arrive as one JSON array in `?1` and are read
//! with `json_each`; `->` keeps JSON values as JSON text, `->>` extracts scalars.

pub(super) const INSERT_RUNS: &str = "
INSERT INTO runs (id, agent, status, input, priority, metadata, max_attempts, timeout_ms,
                  backoff_base_ms, backoff_cap_ms, run_at, created_at, updated_at, event_seq,
                  idempotency_key, request_hash, idempotency_expires_at, deadline, expires_at,
                  on_failure, compensates_run_id, depends_count, callback_url)
SELECT value->>'id', value->>'agent', COALESCE(value->>'status', 'queued'), value->'input',
       value->>'priority',
       value->'metadata', value->>'max_attempts', value->>'timeout_ms',
       value->>'backoff_base_ms', value->>'backoff_cap_ms', value->>'run_at', ?2, ?2, 1,
       value->>'key', value->>'fingerprint', value->>'key_expires_at',
       value->>'deadline', value->>'expires_at', value->'on_failure',
       value->>'compensates', COALESCE(value->>'depends_count', 0), value->>'callback_url'
FROM json_each(?1)";

/// ?1 key: the run holding an Idempotency-Key.
pub(super) const FIND_KEY: &str = "
SELECT id, request_hash, idempotency_expires_at FROM runs WHERE idempotency_key = ?1";

/// ?1 run id: frees an expired Idempotency-Key for a new run.
pub(super) const FREE_KEY: &str = "
UPDATE runs SET idempotency_key = NULL WHERE id = ?1";

pub(super) const INSERT_EVENTS: &str = "
INSERT INTO run_events (run_id, seq, at, type, attempt, data)
SELECT value->>'r', value->>'s', ?2, value->>'k', value->>'a', value->'d'
FROM json_each(?1)";

/// ?1 worker id, ?2 lease end, ?3 now, ?4 JSON array of agents or NULL for all, ?5 limit.
/// `runs_ready` is in claim order, so the scan stops after `limit` due runs instead of
/// sorting the whole backlog (the planner would otherwise pick `runs_status`).
pub(super) const CLAIM: &str = "
UPDATE runs
SET status = 'running', attempt = attempt + 1, claims = claims + 1, worker_id = ?1, lease_until = ?2,
    started_at = COALESCE(started_at, ?3), updated_at = ?3, event_seq = event_seq + 1
WHERE id IN (
    SELECT id FROM runs INDEXED BY runs_ready
    WHERE status IN ('queued', 'retrying') AND run_at <= ?3
      AND (?4 IS NULL OR agent IN (SELECT value FROM json_each(?4)))
      AND (deadline IS NULL OR deadline > ?3)
      AND (expires_at IS NULL OR expires_at > ?3 OR started_at IS NOT NULL)
    ORDER BY priority DESC, run_at, id
    LIMIT ?5)
RETURNING id, agent, input, checkpoint, deadline, depends_count, attempt, claims, max_attempts, timeout_ms, backoff_base_ms,
          backoff_cap_ms, priority, event_seq";

/// ?1 lease end, ?2 JSON array of {id, claim, worker}: the attempts still executing.
pub(super) const RENEW_LEASES: &str = "
UPDATE runs SET lease_until = ?1
FROM (SELECT value->>'id' AS id, value->>'claim' AS claim, value->>'worker' AS worker
      FROM json_each(?2)) AS f
WHERE runs.id = f.id AND runs.claims = f.claim AND runs.worker_id = f.worker
  AND +runs.status = 'running'
RETURNING runs.id, runs.claims";

/// ?1 percent, ?2 message, ?3 now, ?4..?6 the fence, ?7 whether progress is being set.
pub(super) const TOUCH_RUNNING: &str = "
UPDATE runs
SET progress_percent = CASE WHEN ?7 THEN ?1 ELSE progress_percent END,
    progress_message = CASE WHEN ?7 THEN ?2 ELSE progress_message END,
    updated_at = ?3, event_seq = event_seq + 1
WHERE id = ?4 AND claims = ?5 AND worker_id = ?6 AND status = 'running'
RETURNING event_seq";

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
RETURNING runs.id, runs.event_seq, runs.dependents,
          runs.callback_url IS NOT NULL AS has_callback";

/// ?1 now, ?2 worker id. Hands back every run the worker holds; the attempt is given
/// back, so the next claim runs the same attempt number again.
pub(super) const RELEASE: &str = "
UPDATE runs
SET status = 'queued', attempt = attempt - 1, worker_id = NULL, lease_until = NULL,
    run_at = ?1, updated_at = ?1, event_seq = event_seq + 1
WHERE worker_id = ?2 AND status = 'running'
RETURNING id, attempt + 1 AS released_attempt, event_seq";

/// ?1 now, ?2..?4 the fence: hands back one claimed run, giving back its attempt.
pub(super) const HAND_BACK: &str = "
UPDATE runs
SET status = 'queued', attempt = attempt - 1, worker_id = NULL, lease_until = NULL,
    run_at = ?1, updated_at = ?1, event_seq = event_seq + 1
WHERE id = ?2 AND claims = ?3 AND worker_id = ?4 AND status = 'running'
RETURNING event_seq";

/// ?1 now. Runs out of attempts fail (two events: attempt_lost, failed); others retry now.
pub(super) const SWEEP_EXPIRED: &str = "
UPDATE runs
SET status = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'retrying' END,
    error_kind = 'lost_worker',
    error_message = 'worker ' || worker_id || ' stopped renewing its lease',
    finished_at = CASE WHEN attempt >= max_attempts THEN ?1 ELSE NULL END,
    run_at = ?1, worker_id = NULL, lease_until = NULL, updated_at = ?1,
    event_seq = event_seq + CASE WHEN attempt >= max_attempts THEN 2 ELSE 1 END
WHERE status = 'running' AND lease_until < ?1
RETURNING id, attempt, status, event_seq, error_message";

/// ?1 now, ?2 run id. Any non-terminal run; a running attempt is fenced out by the change.
pub(super) const CANCEL: &str = "
UPDATE runs
SET status = 'cancelled', error_kind = 'cancelled', error_message = 'cancelled by request',
    finished_at = ?1, worker_id = NULL, lease_until = NULL, updated_at = ?1,
    event_seq = event_seq + 1
WHERE id = ?2 AND status IN ('blocked', 'queued', 'running', 'retrying', 'waiting')
RETURNING event_seq, attempt";

/// ?1 now, ?2 JSON array of failed run ids to put back in the queue, attempts reset.
pub(super) const REQUEUE: &str = "
UPDATE runs
SET status = CASE WHEN depends_count > 0 AND EXISTS (
        SELECT 1 FROM run_dependencies d JOIN runs dep ON dep.id = d.depends_on_id
        WHERE d.run_id = runs.id AND dep.status != 'succeeded') THEN 'blocked' ELSE 'queued' END,
    attempt = 0, result = NULL, error_kind = NULL, error_message = NULL,
    progress_percent = NULL, progress_message = NULL, finished_at = NULL, run_at = ?1,
    updated_at = ?1, event_seq = event_seq + 1
WHERE id IN (SELECT value FROM json_each(?2)) AND status = 'failed'
  AND NOT EXISTS (
    SELECT 1 FROM run_dependencies d JOIN runs dep ON dep.id = d.depends_on_id
    WHERE d.run_id = runs.id AND dep.status IN ('failed', 'cancelled'))
RETURNING id, event_seq";

/// Failed runs matching a filter, oldest first: ?1 agent, ?2 created at or after,
/// ?3 created before, ?4 limit.
pub(super) const FAILED_MATCHING: &str = "
SELECT id FROM runs
WHERE status = 'failed' AND (?1 IS NULL OR agent = ?1)
  AND (?2 IS NULL OR created_at >= ?2) AND (?3 IS NULL OR created_at < ?3)
ORDER BY id LIMIT ?4";

pub(super) const STATUS_OF: &str = "SELECT status FROM runs WHERE id = ?1";

/// ?1 now. Due runs past their deadline fail; the partial index keeps this off the backlog.
pub(super) const FAIL_PAST_DEADLINE: &str = "
UPDATE runs
SET status = 'failed', error_kind = 'deadline_exceeded',
    error_message = 'the run did not finish before its deadline',
    finished_at = ?1, updated_at = ?1, event_seq = event_seq + 1
WHERE id IN (SELECT id FROM runs INDEXED BY runs_deadline
             WHERE deadline IS NOT NULL AND status IN ('blocked', 'queued', 'retrying', 'waiting')
               AND deadline <= ?1)
RETURNING id, attempt, event_seq, error_kind, error_message";

/// ?1 now. Runs never started by their `expires_at` fail.
pub(super) const FAIL_EXPIRED: &str = "
UPDATE runs
SET status = 'failed', error_kind = 'expired',
    error_message = 'the run did not start before it expired',
    finished_at = ?1, updated_at = ?1, event_seq = event_seq + 1
WHERE id IN (SELECT id FROM runs INDEXED BY runs_expiry
             WHERE expires_at IS NOT NULL AND status IN ('blocked', 'queued')
               AND started_at IS NULL AND expires_at <= ?1)
RETURNING id, attempt, event_seq, error_kind, error_message";

/// ?1 JSON array of run ids that just failed for good: those with an `on_failure` and no
/// compensation run yet.
pub(super) const TO_COMPENSATE: &str = "
SELECT id, agent, input, error_kind, error_message, on_failure, priority, max_attempts,
       timeout_ms, backoff_base_ms, backoff_cap_ms, attempt
FROM runs
WHERE id IN (SELECT value FROM json_each(?1)) AND on_failure IS NOT NULL
  AND compensation_run_id IS NULL";

/// ?1 compensation run id, ?2 now, ?3 the failed run's id.
pub(super) const LINK_COMPENSATION: &str = "
UPDATE runs SET compensation_run_id = ?1, updated_at = ?2, event_seq = event_seq + 1
WHERE id = ?3
RETURNING event_seq";

/// ?1 JSON array of run ids.
pub(super) const STATUSES_OF: &str = "
SELECT id, status FROM runs WHERE id IN (SELECT value FROM json_each(?1))";

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
WHERE id = ?2 AND status = 'blocked' AND NOT EXISTS (
    SELECT 1 FROM run_dependencies d JOIN runs dep ON dep.id = d.depends_on_id
    WHERE d.run_id = runs.id AND dep.status != 'succeeded')
RETURNING event_seq";

/// ?1 status, ?2 error kind, ?3 message, ?4 now, ?5 run id: ends a blocked run.
pub(super) const SETTLE_BLOCKED: &str = "
UPDATE runs SET status = ?1, error_kind = ?2, error_message = ?3, finished_at = ?4,
    updated_at = ?4, event_seq = event_seq + 1
WHERE id = ?5 AND status = 'blocked'
RETURNING event_seq";

/// ?1 JSON array of claimed run ids: the results of the runs they depend on.
pub(super) const DEPENDENCY_RESULTS: &str = "
SELECT d.run_id, d.depends_on_id, r.result
FROM run_dependencies d JOIN runs r ON r.id = d.depends_on_id
WHERE d.run_id IN (SELECT value FROM json_each(?1))";

/// ?1 now, ?2 run id, ?3 JSON array of signal names, ?4 claim, ?5 worker: consumes the
/// oldest pending signal among the names, if the attempt still owns its run.
pub(super) const TAKE_SIGNAL: &str = "
UPDATE run_signals SET consumed_at = ?1
WHERE id = (SELECT s.id FROM run_signals s JOIN runs r ON r.id = s.run_id
            WHERE s.run_id = ?2 AND s.consumed_at IS NULL
              AND s.name IN (SELECT value FROM json_each(?3))
              AND r.claims = ?4 AND r.worker_id = ?5 AND r.status = 'running'
            ORDER BY s.id LIMIT 1)
RETURNING name, payload, timed_out";

/// ?1 JSON array of names, ?2 until, ?3 resume on timeout, ?4 now, ?5..?7 the fence.
/// Suspends the attempt without counting it; a matching signal already pending queues
/// the run again at once, so a signal sent before the wait is never missed.
pub(super) const WAIT: &str = "
UPDATE runs
SET status = CASE WHEN EXISTS (
        SELECT 1 FROM run_signals s WHERE s.run_id = runs.id AND s.consumed_at IS NULL
          AND s.name IN (SELECT value FROM json_each(?1))) THEN 'queued' ELSE 'waiting' END,
    waiting_for = ?1, wait_until = ?2, wait_resume = ?3, attempt = attempt - 1,
    worker_id = NULL, lease_until = NULL, run_at = ?4, updated_at = ?4,
    event_seq = event_seq + 1
WHERE id = ?5 AND claims = ?6 AND worker_id = ?7 AND status = 'running'
RETURNING status, event_seq";

/// ?1 run id, ?2 name, ?3 payload (JSON text), ?4 now, ?5 timed out.
pub(super) const INSERT_SIGNAL: &str = "
INSERT INTO run_signals (run_id, name, payload, received_at, timed_out)
VALUES (?1, ?2, ?3, ?4, ?5)";

/// ?1 now, ?2 run id: bumps the event counter for an event about the run.
pub(super) const NEXT_EVENT: &str = "
UPDATE runs SET updated_at = ?1, event_seq = event_seq + 1 WHERE id = ?2
RETURNING event_seq, attempt";

/// ?1 now, ?2 run id, ?3 signal name: resumes a run waiting for that signal.
pub(super) const RESUME: &str = "
UPDATE runs SET status = 'queued', run_at = ?1, updated_at = ?1, event_seq = event_seq + 1
WHERE id = ?2 AND status = 'waiting'
  AND EXISTS (SELECT 1 FROM json_each(waiting_for) WHERE value = ?3)
RETURNING event_seq, attempt";

/// ?1 now: waiting runs whose wait ended.
pub(super) const WAITS_ENDED: &str = "
SELECT id, waiting_for, wait_resume FROM runs INDEXED BY runs_waiting
WHERE status = 'waiting' AND wait_until <= ?1";

/// ?1 now, ?2 run id: fails a waiting run whose signal never came.
pub(super) const FAIL_WAIT: &str = "
UPDATE runs SET status = 'failed', error_kind = 'wait_timeout',
    error_message = 'no signal it waited for arrived in time', finished_at = ?1,
    updated_at = ?1, event_seq = event_seq + 1
WHERE id = ?2 AND status = 'waiting'
RETURNING event_seq, attempt";

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

/// ?1 run id.
pub(super) const CALLBACK_URL: &str = "SELECT callback_url FROM runs WHERE id = ?1";

/// ?1 now, ?2 delivery id.
pub(super) const WEBHOOK_DELIVERED: &str = "
UPDATE webhook_deliveries SET delivered_at = ?1, last_error = NULL WHERE id = ?2";

/// ?1 next due time (NULL: give up), ?2 error, ?3 delivery id.
pub(super) const WEBHOOK_FAILED: &str = "
UPDATE webhook_deliveries
SET due_at = COALESCE(?1, due_at), given_up = (?1 IS NULL), last_error = ?2
WHERE id = ?3";
