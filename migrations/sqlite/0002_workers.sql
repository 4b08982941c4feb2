-- Worker processes: each registers at start and heartbeats; silent ones are shown as gone.
-- Times are milliseconds since the Unix epoch (UTC).
CREATE TABLE workers (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    version      TEXT    NOT NULL,
    -- JSON array of the agents it serves
    agents       TEXT    NOT NULL,
    concurrency  INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    running      INTEGER NOT NULL DEFAULT 0,
    processed    INTEGER NOT NULL DEFAULT 0,
    -- how often its worker loop was restarted, and the last reason it could not work
    restarts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    stopped_at   INTEGER
) STRICT;
CREATE INDEX workers_heartbeat ON workers (heartbeat_at);
