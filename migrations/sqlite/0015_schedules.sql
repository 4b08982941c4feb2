-- Schedules: a run made on a cron expression (in a time zone) or at a fixed interval.
-- A process fires a due tick by moving next_tick_at on from it in the transaction that
-- stores the tick's run, so each tick makes one run however many processes tick.
CREATE TABLE schedules (
    id           TEXT NOT NULL PRIMARY KEY,
    tenant       TEXT NOT NULL,
    name         TEXT,
    agent        TEXT NOT NULL,
    cron         TEXT,
    timezone     TEXT,
    interval_ms  INTEGER,
    catch_up     TEXT NOT NULL CHECK (catch_up IN ('skip', 'one')),
    -- the run each tick makes (RunTemplate, JSON)
    template     TEXT NOT NULL,
    -- NULL once a cron expression has no more ticks
    next_tick_at INTEGER,
    paused_at    INTEGER,
    last_tick_at INTEGER,
    last_run_id  TEXT,
    missed_ticks INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    created_by   TEXT,
    updated_at   INTEGER NOT NULL,
    CHECK ((cron IS NULL) <> (interval_ms IS NULL))
) STRICT;

CREATE UNIQUE INDEX schedules_name ON schedules (tenant, name) WHERE name IS NOT NULL;
CREATE INDEX schedules_due ON schedules (next_tick_at) WHERE paused_at IS NULL AND next_tick_at IS NOT NULL;
