// The statements that are the same in both dialects, written once: each dialect's
// `sql.rs` includes this file after defining `p!(N)`, its placeholder (`?N` on SQLite,
// `$N` on PostgreSQL), and the column lists (`run_columns!`, `run_filter!`) they use.
// The doc comments name parameters as `?N`, meaning `$N` on PostgreSQL.

/// ?1 run id.
pub(super) const GET_RUN: &str = concat!("SELECT ", run_columns!(), " FROM runs WHERE id = ", p!(1));

/// `run_filter!` (?1 to ?6): how many runs match, by status.
pub(super) const COUNT_RUNS: &str = concat!(
    "SELECT status, COUNT(*) FROM runs WHERE ",
    run_filter!(),
    " GROUP BY status"
);

/// ?1 key: the run holding an Idempotency-Key.
pub(super) const FIND_KEY: &str = concat!("
SELECT id, request_hash, idempotency_expires_at FROM runs WHERE idempotency_key = ", p!(1));

/// ?1 events written, ?2 bytes streamed, ?3 now, ?4..?6 the fence, ?7 the run's stream
/// limit: appends stream parts to a running attempt's run, returning the newest event
/// seq; no row when the fence no longer holds or the stream would pass its limit.
pub(super) const STREAM_APPEND: &str = concat!("
UPDATE runs
SET event_seq = event_seq + ", p!(1), ", stream_bytes = stream_bytes + ", p!(2), ", updated_at = ", p!(3), "
WHERE id = ", p!(4), " AND claims = ", p!(5), " AND worker_id = ", p!(6), " AND status = 'running'
  AND stream_bytes + ", p!(2), " <= ", p!(7), "
RETURNING event_seq");

/// ?1..?3 the fence: whether it still holds (tells a full stream from a lost attempt).
pub(super) const FENCE_HOLDS: &str = concat!("
SELECT 1 FROM runs WHERE id = ", p!(1), " AND claims = ", p!(2), " AND worker_id = ", p!(3), " AND status = 'running'");

/// ?1 run id: frees an expired Idempotency-Key for a new run.
pub(super) const FREE_KEY: &str = concat!("
UPDATE runs SET idempotency_key = NULL WHERE id = ", p!(1));

/// ?1 percent, ?2 message, ?3 now, ?4..?6 the fence, ?7 whether progress is being set.
pub(super) const TOUCH_RUNNING: &str = concat!("
UPDATE runs
SET progress_percent = CASE WHEN ", p!(7), " THEN ", p!(1), " ELSE progress_percent END,
    progress_message = CASE WHEN ", p!(7), " THEN ", p!(2), " ELSE progress_message END,
    updated_at = ", p!(3), ", event_seq = event_seq + 1
WHERE id = ", p!(4), " AND claims = ", p!(5), " AND worker_id = ", p!(6), " AND status = 'running'
RETURNING event_seq");

/// ?1 now, ?2 worker id. Hands back every run the worker holds; the attempt is given
/// back, so the next claim runs the same attempt number again. `run_at` is kept: the run
/// keeps its place in line instead of queueing behind the backlog.
pub(super) const RELEASE: &str = concat!("
UPDATE runs
SET status = 'queued', attempt = attempt - 1, worker_id = NULL, lease_until = NULL,
    requeued_at = ", p!(1), ", updated_at = ", p!(1), ", event_seq = event_seq + 1
WHERE worker_id = ", p!(2), " AND status = 'running'
RETURNING id, attempt + 1 AS released_attempt, event_seq");

/// ?1 now, ?2..?4 the fence: hands back one claimed run, giving back its attempt; it keeps its
/// place in line (`run_at`).
pub(super) const HAND_BACK: &str = concat!("
UPDATE runs
SET status = 'queued', attempt = attempt - 1, worker_id = NULL, lease_until = NULL,
    requeued_at = ", p!(1), ", updated_at = ", p!(1), ", event_seq = event_seq + 1
WHERE id = ", p!(2), " AND claims = ", p!(3), " AND worker_id = ", p!(4), " AND status = 'running'
RETURNING event_seq");

/// ?1 now, ?2 run id. Any non-terminal run; a running attempt is fenced out by the change.
pub(super) const CANCEL: &str = concat!("
UPDATE runs
SET status = 'cancelled', error_kind = 'cancelled', error_message = 'cancelled by request',
    finished_at = ", p!(1), ", worker_id = NULL, lease_until = NULL, updated_at = ", p!(1), ",
    event_seq = event_seq + 1, dispatched_at = NULL
WHERE id = ", p!(2), " AND status IN ('blocked', 'queued', 'running', 'retrying', 'waiting')
RETURNING event_seq, attempt");

/// ?1 compensation run id, ?2 now, ?3 the failed run's id.
pub(super) const LINK_COMPENSATION: &str = concat!("
UPDATE runs SET compensation_run_id = ", p!(1), ", updated_at = ", p!(2), ", event_seq = event_seq + 1
WHERE id = ", p!(3), "
RETURNING event_seq");

/// ?1 status, ?2 error kind, ?3 message, ?4 now, ?5 run id: ends a blocked run.
pub(super) const SETTLE_BLOCKED: &str = concat!("
UPDATE runs SET status = ", p!(1), ", error_kind = ", p!(2), ", error_message = ", p!(3), ", finished_at = ", p!(4), ",
    updated_at = ", p!(4), ", event_seq = event_seq + 1
WHERE id = ", p!(5), " AND status = 'blocked'
RETURNING event_seq");

/// ?1 now, ?2 run id: bumps the event counter for an event about the run.
pub(super) const NEXT_EVENT: &str = concat!("
UPDATE runs SET updated_at = ", p!(1), ", event_seq = event_seq + 1 WHERE id = ", p!(2), "
RETURNING event_seq, attempt");

/// ?1 now, ?2 run id: fails a waiting run whose signal never came.
pub(super) const FAIL_WAIT: &str = concat!("
UPDATE runs SET status = 'failed', error_kind = 'wait_timeout',
    error_message = 'no signal it waited for arrived in time', finished_at = ", p!(1), ",
    updated_at = ", p!(1), ", event_seq = event_seq + 1
WHERE id = ", p!(2), " AND status = 'waiting'
RETURNING event_seq, attempt");

/// ?1 run id.
pub(super) const CALLBACK_URL: &str = concat!("SELECT callback_url FROM runs WHERE id = ", p!(1));

/// ?1 now, ?2 delivery id.
pub(super) const WEBHOOK_DELIVERED: &str = concat!("
UPDATE webhook_deliveries SET delivered_at = ", p!(1), ", last_error = NULL WHERE id = ", p!(2));

/// ?1 id, ?2 host, ?3 pid, ?4 version, ?5 agents (JSON array), ?6 concurrency,
/// ?7 started at, ?8 now, ?9 running, ?10 processed, ?11 restarts, ?12 last error,
/// ?13 stopped at, ?14 language, ?15 last restart at. An external worker may change its
/// agents and concurrency.
pub(super) const UPSERT_WORKER: &str = concat!("
INSERT INTO workers (id, host, pid, version, agents, concurrency, started_at, heartbeat_at,
                     running, processed, restarts, last_error, stopped_at, language,
                     last_restart_at)
VALUES (", p!(1), ", ", p!(2), ", ", p!(3), ", ", p!(4), ", ", p!(5), ", ", p!(6), ", ", p!(7), ", ", p!(8), ", ", p!(9), ", ", p!(10), ", ", p!(11), ", ", p!(12), ", ", p!(13), ", ", p!(14), ", ", p!(15), ")
ON CONFLICT (id) DO UPDATE
SET agents = excluded.agents, concurrency = excluded.concurrency, heartbeat_at = excluded.heartbeat_at, running = excluded.running,
    processed = excluded.processed, restarts = excluded.restarts,
    last_error = excluded.last_error, stopped_at = excluded.stopped_at,
    last_restart_at = excluded.last_restart_at");

/// ?1 heard from before this: forgotten.
pub(super) const FORGET_WORKERS: &str = concat!("DELETE FROM workers WHERE heartbeat_at < ", p!(1));

/// ?1 heard from since this. Newest first.
pub(super) const LIST_WORKERS: &str = concat!("
SELECT id, host, pid, version, agents, concurrency, started_at, heartbeat_at, running,
       processed, restarts, last_error, stopped_at, language, last_restart_at
FROM workers WHERE heartbeat_at >= ", p!(1), " ORDER BY started_at DESC, id");

/// ?1 name, ?2 description, ?3 input schema (JSON text), ?4 timeout, ?5 max attempts,
/// ?6 backoff base, ?7 backoff cap, ?8 declared by, ?9 now. A new input schema counts the
/// version up.
pub(super) const DECLARE_AGENT: &str = concat!("
INSERT INTO declared_agents (name, description, input_schema, timeout_ms, max_attempts,
                             backoff_base_ms, backoff_cap_ms, version, declared_by,
                             declared_at, created_at)
VALUES (", p!(1), ", ", p!(2), ", ", p!(3), ", ", p!(4), ", ", p!(5), ", ", p!(6), ", ", p!(7), ", 1, ", p!(8), ", ", p!(9), ", ", p!(9), ")
ON CONFLICT (name) DO UPDATE
SET description = excluded.description, input_schema = excluded.input_schema,
    timeout_ms = excluded.timeout_ms, max_attempts = excluded.max_attempts,
    backoff_base_ms = excluded.backoff_base_ms, backoff_cap_ms = excluded.backoff_cap_ms,
    version = declared_agents.version
        + CASE WHEN declared_agents.input_schema = excluded.input_schema THEN 0 ELSE 1 END,
    declared_by = excluded.declared_by, declared_at = excluded.declared_at
RETURNING version, created_at");

/// ?1 name, ?2 version, ?3 input schema, ?4 declared by, ?5 key id, ?6 now. Returns a row
/// only when the version is new.
pub(super) const RECORD_AGENT_SCHEMA: &str = concat!("
INSERT INTO declared_agent_changes (name, version, input_schema, declared_by, key_id, declared_at)
VALUES (", p!(1), ", ", p!(2), ", ", p!(3), ", ", p!(4), ", ", p!(5), ", ", p!(6), ")
ON CONFLICT (name, version) DO NOTHING
RETURNING version");

/// Every declared agent, by name.
pub(super) const DECLARED_AGENTS: &str = "
SELECT name, description, input_schema, timeout_ms, max_attempts, backoff_base_ms,
       backoff_cap_ms, version, declared_by, declared_at, created_at
FROM declared_agents ORDER BY name";

/// ?1 name: the input schemas it had, oldest first.
pub(super) const AGENT_SCHEMA_CHANGES: &str = concat!("
SELECT version, declared_by, key_id, declared_at, input_schema
FROM declared_agent_changes WHERE name = ", p!(1), " ORDER BY version");

/// ?1 now, ?2 run id, ?3 new priority or NULL, ?4 new run_at (ms) or NULL: changes a run
/// that has not started. Its Redis message (if any) goes stale: the feeder sends it again
/// in its new place.
pub(super) const CHANGE_RUN: &str = concat!("
UPDATE runs SET priority = COALESCE(CAST(", p!(3), " AS BIGINT), priority),
       run_at = COALESCE(CAST(", p!(4), " AS BIGINT), run_at),
       updated_at = ", p!(1), ", event_seq = event_seq + 1, dispatched_at = NULL
WHERE id = ", p!(2), " AND status IN ('queued', 'blocked') AND started_at IS NULL
RETURNING event_seq, status, run_at");

/// ?1 agent, ?2 now, ?3 by whom: pauses the agent (a second pause changes nothing).
pub(super) const PAUSE_AGENT: &str = concat!("
INSERT INTO agent_pauses (agent, paused_at, paused_by) VALUES (", p!(1), ", ", p!(2), ", ", p!(3), ")
ON CONFLICT (agent) DO NOTHING");

/// ?1 agent: resumes it.
pub(super) const RESUME_AGENT: &str = concat!("DELETE FROM agent_pauses WHERE agent = ", p!(1));

/// ?1 agent: a resumed agent's runs still marked as sent to Redis (their messages were
/// taken while it was paused, or wait behind others) are sent again at once; the old
/// messages go stale.
pub(super) const UNDISPATCH_AGENT: &str = concat!("
UPDATE runs SET dispatched_at = NULL
WHERE agent = ", p!(1), " AND dispatched_at IS NOT NULL AND status IN ('queued', 'retrying')");

/// The paused agents, by name.
pub(super) const PAUSED_AGENTS: &str =
    "SELECT agent, paused_at, paused_by FROM agent_pauses ORDER BY agent";

/// The versions of the migrations applied.
pub(super) const APPLIED_MIGRATIONS: &str = "SELECT version FROM _sqlx_migrations WHERE success";

/// ?1 id, ?2 tenant, ?3 scopes, ?4 name, ?5 secret hash, ?6 now.
pub(super) const INSERT_KEY: &str = concat!("
INSERT INTO api_keys (id, tenant, scopes, name, secret_hash, created_at)
VALUES (", p!(1), ", ", p!(2), ", ", p!(3), ", ", p!(4), ", ", p!(5), ", ", p!(6), ")");

pub(super) const LIST_KEYS: &str = "
SELECT id, tenant, scopes, name, created_at, revoked_at FROM api_keys ORDER BY created_at, id";

/// Revoked keys count too: once keys are in use, revoking the last one must not open
/// the server.
pub(super) const COUNT_KEYS: &str = "SELECT COUNT(*) FROM api_keys";

/// ?1 name.
pub(super) const GET_SECRET: &str = concat!("SELECT value FROM server_secrets WHERE name = ", p!(1));

/// ?1 tenant: its runs not finished (the `--tenant-max-active-runs` cap).
pub(super) const COUNT_ACTIVE_RUNS: &str = concat!("
SELECT COUNT(*) FROM runs
WHERE tenant = ", p!(1), " AND status IN ('blocked', 'queued', 'running', 'retrying', 'waiting')");

/// ?1 heard from since this: worker processes alive (not stopped).
pub(super) const WORKERS_ALIVE: &str = concat!("
SELECT COUNT(*) FROM workers WHERE heartbeat_at >= ", p!(1), " AND stopped_at IS NULL");

/// ?1 agent: its runs running plus its runs sent to Redis, in one snapshot (the feeder's
/// room under `--agent-limit`).
pub(super) const RUNNING_OR_SENT: &str = concat!("
SELECT (SELECT COUNT(*) FROM runs WHERE status = 'running' AND agent = ", p!(1), ")
     + (SELECT COUNT(*) FROM runs WHERE agent = ", p!(1), " AND dispatched_at IS NOT NULL)");

macro_rules! schedule_columns {
    () => {
        "id, tenant, name, agent, cron, timezone, interval_ms, catch_up, template, next_tick_at, \
         paused_at, last_tick_at, last_run_id, missed_ticks, created_at, created_by"
    };
}

/// ?1 id, ?2 tenant, ?3 name, ?4 agent, ?5 cron, ?6 time zone, ?7 interval (ms), ?8 catch-up,
/// ?9 template (JSON), ?10 first tick, ?11 now, ?12 creator: stores a schedule, unless the
/// tenant has one of that name (no row returned).
pub(super) const INSERT_SCHEDULE: &str = concat!("
INSERT INTO schedules (id, tenant, name, agent, cron, timezone, interval_ms, catch_up, template,
                       next_tick_at, created_at, created_by, updated_at)
VALUES (", p!(1), ", ", p!(2), ", ", p!(3), ", ", p!(4), ", ", p!(5), ", ", p!(6), ", ", p!(7), ", ",
        p!(8), ", ", p!(9), ", ", p!(10), ", ", p!(11), ", ", p!(12), ", ", p!(11), ")
ON CONFLICT DO NOTHING
RETURNING id");

/// ?1 id.
pub(super) const GET_SCHEDULE: &str =
    concat!("SELECT ", schedule_columns!(), " FROM schedules WHERE id = ", p!(1));

/// ?1 tenant, ?2 every tenant's instead: schedules, newest first.
pub(super) const LIST_SCHEDULES: &str = concat!(
    "SELECT ", schedule_columns!(), " FROM schedules WHERE (", p!(2), " OR tenant = ", p!(1), ")",
    " ORDER BY created_at DESC, id DESC"
);

/// ?1 now, ?2 limit: schedules whose tick has come, earliest first.
pub(super) const DUE_SCHEDULES: &str = concat!(
    "SELECT ", schedule_columns!(), " FROM schedules \
     WHERE paused_at IS NULL AND next_tick_at IS NOT NULL AND next_tick_at <= ", p!(1),
    " ORDER BY next_tick_at LIMIT ", p!(2)
);

/// The earliest next tick of any schedule not paused.
pub(super) const NEXT_SCHEDULE_TICK: &str = "
SELECT MIN(next_tick_at) FROM schedules WHERE paused_at IS NULL AND next_tick_at IS NOT NULL";

/// ?1 next tick (NULL: it has no more), ?2 ticks that made no run, ?3 now, ?4 id, ?5 the tick
/// fired: moves the schedule on from its tick, once (a process that fires a tick another
/// one fired already changes nothing).
pub(super) const FIRE_SCHEDULE: &str = concat!("
UPDATE schedules
SET next_tick_at = ", p!(1), ", missed_ticks = missed_ticks + ", p!(2), ", updated_at = ", p!(3), "
WHERE id = ", p!(4), " AND next_tick_at = ", p!(5), " AND paused_at IS NULL
RETURNING id");

/// ?1 the tick, ?2 its run, ?3 id: the tick's run was stored.
pub(super) const SCHEDULE_RAN: &str = concat!("
UPDATE schedules SET last_tick_at = ", p!(1), ", last_run_id = ", p!(2), " WHERE id = ", p!(3));

/// ?1 id: the tick's run was refused (its concurrency key was full): a tick without a run.
pub(super) const SCHEDULE_MISSED: &str =
    concat!("UPDATE schedules SET missed_ticks = missed_ticks + 1 WHERE id = ", p!(1));

/// ?1 now, ?2 id: pauses it (a paused one is left alone).
pub(super) const PAUSE_SCHEDULE: &str = concat!("
UPDATE schedules SET paused_at = ", p!(1), ", updated_at = ", p!(1), "
WHERE id = ", p!(2), " AND paused_at IS NULL RETURNING id");

/// ?1 its next tick, ?2 now, ?3 id: resumes it from its next tick after now (the ticks it
/// was paused for make no run).
pub(super) const RESUME_SCHEDULE: &str = concat!("
UPDATE schedules SET paused_at = NULL, next_tick_at = ", p!(1), ", updated_at = ", p!(2), "
WHERE id = ", p!(3), " AND paused_at IS NOT NULL RETURNING id");

/// ?1 id.
pub(super) const DELETE_SCHEDULE: &str =
    concat!("DELETE FROM schedules WHERE id = ", p!(1), " RETURNING id");

/// ?1 the new end, ?2 worker id, ?3 now: extends the worker's lease if it is live, returning
/// its epoch (a lapsed or revoked one may have lost runs: the worker checks each attempt).
pub(super) const EXTEND_WORKER_LEASE: &str = concat!("
UPDATE worker_leases SET lease_until = ", p!(1), "
WHERE worker_id = ", p!(2), " AND lease_until >= ", p!(3), " RETURNING epoch");

/// ?1 worker id, ?2 the new end, ?3 a new epoch (random): the worker's lease, taken again
/// after it checked each of its attempts; every process that saw it before checks again.
pub(super) const HOLD_WORKER_LEASE: &str = concat!("
INSERT INTO worker_leases (worker_id, lease_until, epoch) VALUES (", p!(1), ", ", p!(2), ", ", p!(3), ")
ON CONFLICT (worker_id) DO UPDATE SET lease_until = excluded.lease_until, epoch = excluded.epoch
RETURNING epoch");

/// ?1 worker id, ?2 a new epoch (random): a renewal changed what the lease covers (a run it
/// no longer sends, a notice dropped): every other process checks each attempt again.
pub(super) const NEW_EPOCH: &str = concat!("
UPDATE worker_leases SET epoch = ", p!(2), " WHERE worker_id = ", p!(1), " RETURNING epoch");

/// ?1 worker id: the covered runs it lost (cancelled), told until it stops sending them.
pub(super) const READ_NOTICES: &str = concat!("
SELECT run_id, claims FROM worker_notices WHERE worker_id = ", p!(1));

pub(super) const REVOKED_WORKERS: &str =
    "SELECT worker_id FROM worker_leases WHERE lease_until < 0";

/// Revoked leases that cover no running run any more go, and so do notices to workers
/// without a live lease (their next renewal checks every attempt).
pub(super) const FORGET_REVOKED: [&str; 2] = [
    concat!("DELETE FROM worker_leases WHERE lease_until < 0 AND NOT EXISTS (
    SELECT 1 FROM runs WHERE runs.worker_id = worker_leases.worker_id
      AND runs.status = 'running' AND runs.lease_until = ", covered!(), ")"),
    "DELETE FROM worker_notices WHERE NOT EXISTS (
    SELECT 1 FROM worker_leases w WHERE w.worker_id = worker_notices.worker_id
      AND w.lease_until >= 0)",
];

/// ?1 worker id: a stopping worker's lease is revoked (a run it covers that the release
/// did not see is taken back by the sweep) and its notices go.
pub(super) const DROP_WORKER_LEASE: [&str; 2] = [
    concat!("UPDATE worker_leases SET lease_until = -1 WHERE worker_id = ", p!(1)),
    concat!("DELETE FROM worker_notices WHERE worker_id = ", p!(1)),
];

/// The statements of both dialects by name (each dialect's own text), for `sql::all()`.
#[cfg(test)]
fn in_both_dialects() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("BEGIN", vec![BEGIN]),
        ("RECLAIM_SPACE", vec![RECLAIM_SPACE]),
        ("NOTIFY_READY", NOTIFY_READY.into_iter().collect()),
        ("LOCK_RUN", LOCK_RUN.into_iter().collect()),
        ("GET_RUN", vec![GET_RUN]),
        ("LIST_RUNS", vec![LIST_RUNS]),
        ("COUNT_RUNS", vec![COUNT_RUNS]),
        ("QUEUE_STATES", vec![QUEUE_STATES]),
        ("THROUGHPUT", vec![THROUGHPUT]),
        ("RUN_EXISTS", vec![RUN_EXISTS]),
        ("LIST_EVENTS", vec![LIST_EVENTS]),
        ("PRUNE_PROGRESS", vec![PRUNE_PROGRESS]),
        ("EVENT_HEADS", vec![EVENT_HEADS]),
        ("HAS_DUE_WEBHOOKS", vec![HAS_DUE_WEBHOOKS]),
        ("INSERT_RUNS", vec![INSERT_RUNS]),
        ("FIND_KEY", vec![FIND_KEY]),
        ("FREE_KEY", vec![FREE_KEY]),
        ("INSERT_EVENTS", vec![INSERT_EVENTS]),
        ("CLAIM", vec![CLAIM]),
        ("COVER_LEASES", vec![COVER_LEASES]),
        ("EXTEND_WORKER_LEASE", vec![EXTEND_WORKER_LEASE]),
        ("HOLD_WORKER_LEASE", vec![HOLD_WORKER_LEASE]),
        ("READ_NOTICES", vec![READ_NOTICES]),
        ("DROP_NOTICES", vec![DROP_NOTICES]),
        ("NEW_EPOCH", vec![NEW_EPOCH]),
        ("UNCOVER_OTHERS", vec![UNCOVER_OTHERS]),
        ("NOTICE_LOST", vec![NOTICE_LOST]),
        ("REVOKE_WORKER_LEASES", vec![REVOKE_WORKER_LEASES]),
        ("REVOKED_WORKERS", vec![REVOKED_WORKERS]),
        ("SWEEP_REVOKED", vec![SWEEP_REVOKED]),
        ("FORGET_REVOKED", FORGET_REVOKED.to_vec()),
        ("DROP_WORKER_LEASE", DROP_WORKER_LEASE.to_vec()),
        ("STREAM_APPEND_MANY", vec![STREAM_APPEND_MANY]),
        ("TOUCH_RUNNING", vec![TOUCH_RUNNING]),
        ("CHECKPOINT", vec![CHECKPOINT]),
        ("FINISH", vec![FINISH]),
        ("RELEASE", vec![RELEASE]),
        ("HAND_BACK", vec![HAND_BACK]),
        ("SWEEP_EXPIRED", vec![SWEEP_EXPIRED]),
        ("CANCEL", vec![CANCEL]),
        ("REQUEUE", vec![REQUEUE]),
        ("FAILED_MATCHING", vec![FAILED_MATCHING]),
        ("STATUS_OF", vec![STATUS_OF]),
        ("FAIL_PAST_DEADLINE", vec![FAIL_PAST_DEADLINE]),
        ("FAIL_EXPIRED", vec![FAIL_EXPIRED]),
        ("TO_COMPENSATE", vec![TO_COMPENSATE]),
        ("LINK_COMPENSATION", vec![LINK_COMPENSATION]),
        ("STATUSES_OF", vec![STATUSES_OF]),
        ("INSERT_DEPENDENCIES", vec![INSERT_DEPENDENCIES]),
        ("COUNT_DEPENDENTS", vec![COUNT_DEPENDENTS]),
        ("BLOCKED_DEPENDENTS", vec![BLOCKED_DEPENDENTS]),
        ("UNBLOCK", vec![UNBLOCK]),
        ("KEY_LOCK", KEY_LOCK.into_iter().collect()),
        ("KEY_USE", vec![KEY_USE]),
        ("KEY_OLDEST", vec![KEY_OLDEST]),
        ("KEYS_OF", vec![KEYS_OF]),
        ("KEYS_WAITED_FOR", vec![KEYS_WAITED_FOR]),
        ("ADMIT_KEY", vec![ADMIT_KEY]),
        ("INSERT_SCHEDULE", vec![INSERT_SCHEDULE]),
        ("GET_SCHEDULE", vec![GET_SCHEDULE]),
        ("LIST_SCHEDULES", vec![LIST_SCHEDULES]),
        ("DUE_SCHEDULES", vec![DUE_SCHEDULES]),
        ("NEXT_SCHEDULE_TICK", vec![NEXT_SCHEDULE_TICK]),
        ("FIRE_SCHEDULE", vec![FIRE_SCHEDULE]),
        ("SCHEDULE_RAN", vec![SCHEDULE_RAN]),
        ("SCHEDULE_MISSED", vec![SCHEDULE_MISSED]),
        ("PAUSE_SCHEDULE", vec![PAUSE_SCHEDULE]),
        ("RESUME_SCHEDULE", vec![RESUME_SCHEDULE]),
        ("DELETE_SCHEDULE", vec![DELETE_SCHEDULE]),
        ("SETTLE_BLOCKED", vec![SETTLE_BLOCKED]),
        ("DEPENDENCY_RESULTS", vec![DEPENDENCY_RESULTS]),
        ("TAKE_SIGNAL", vec![TAKE_SIGNAL]),
        ("SIGNAL_TAKEN_BY", vec![SIGNAL_TAKEN_BY]),
        ("WAIT", vec![WAIT]),
        ("INSERT_SIGNAL", vec![INSERT_SIGNAL]),
        ("NEXT_EVENT", vec![NEXT_EVENT]),
        ("RESUME", vec![RESUME]),
        ("WAITS_ENDED", vec![WAITS_ENDED]),
        ("FAIL_WAIT", vec![FAIL_WAIT]),
        ("SCHEDULE_WEBHOOKS", vec![SCHEDULE_WEBHOOKS]),
        ("CLAIM_WEBHOOKS", vec![CLAIM_WEBHOOKS]),
        ("CALLBACK_URL", vec![CALLBACK_URL]),
        ("WEBHOOK_DELIVERED", vec![WEBHOOK_DELIVERED]),
        ("WEBHOOK_FAILED", vec![WEBHOOK_FAILED]),
        ("UPSERT_WORKER", vec![UPSERT_WORKER]),
        ("FORGET_WORKERS", vec![FORGET_WORKERS]),
        ("LIST_WORKERS", vec![LIST_WORKERS]),
        ("DECLARE_AGENT", vec![DECLARE_AGENT]),
        ("STREAM_APPEND", vec![STREAM_APPEND]),
        ("FENCE_HOLDS", vec![FENCE_HOLDS]),
        ("RECORD_AGENT_SCHEMA", vec![RECORD_AGENT_SCHEMA]),
        ("DECLARED_AGENTS", vec![DECLARED_AGENTS]),
        ("AGENT_SCHEMA_CHANGES", vec![AGENT_SCHEMA_CHANGES]),
        ("PAUSE_AGENT", vec![PAUSE_AGENT]),
        ("CHANGE_RUN", vec![CHANGE_RUN]),
        ("RESUME_AGENT", vec![RESUME_AGENT]),
        ("UNDISPATCH_AGENT", vec![UNDISPATCH_AGENT]),
        ("PAUSED_AGENTS", vec![PAUSED_AGENTS]),
        ("DISPATCH_LOCK", DISPATCH_LOCK.into_iter().collect()),
        ("COUNT_DISPATCHED", vec![COUNT_DISPATCHED]),
        ("DISPATCH", vec![DISPATCH]),
        ("CLAIM_DISPATCHED", vec![CLAIM_DISPATCHED]),
        ("UNDISPATCH", vec![UNDISPATCH]),
        ("DISPATCHED_BEFORE", vec![DISPATCHED_BEFORE]),
        ("SCHEMA_BEGIN", SCHEMA_BEGIN.into_iter().collect()),
        ("APPLIED_MIGRATIONS", vec![APPLIED_MIGRATIONS]),
        ("SCHEMA_LOCK", SCHEMA_LOCK.into_iter().collect()),
        ("REDIS_INDEXES", REDIS_INDEXES.to_vec()),
        ("INSERT_KEY", vec![INSERT_KEY]),
        ("LIST_KEYS", vec![LIST_KEYS]),
        ("REVOKE_KEY", vec![REVOKE_KEY]),
        ("FIND_API_KEY", vec![FIND_API_KEY]),
        ("COUNT_KEYS", vec![COUNT_KEYS]),
        ("INSERT_SECRET", vec![INSERT_SECRET]),
        ("GET_SECRET", vec![GET_SECRET]),
        ("COUNT_ACTIVE_RUNS", vec![COUNT_ACTIVE_RUNS]),
        ("OLDEST_KEPT", vec![OLDEST_KEPT]),
        ("PURGE_CANDIDATES", vec![PURGE_CANDIDATES]),
        ("PURGE_RUNS", vec![PURGE_RUNS]),
        ("PURGE_CHILDREN", PURGE_CHILDREN.to_vec()),
        ("AGENTS_OF", vec![AGENTS_OF]),
        ("RUN_GAUGES", vec![RUN_GAUGES]),
        ("WORKERS_ALIVE", vec![WORKERS_ALIVE]),
        ("AGENT_LIMIT_LOCK", AGENT_LIMIT_LOCK.into_iter().collect()),
        ("RUNNING_BY_AGENT", vec![RUNNING_BY_AGENT]),
        ("RUNNING_OR_SENT", vec![RUNNING_OR_SENT]),
    ]
}
