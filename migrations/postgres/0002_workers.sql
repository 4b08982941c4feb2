-- Worker processes: each registers at start and heartbeats; silent ones are shown as gone.
-- Times are milliseconds since the Unix epoch (UTC).
CREATE TABLE workers (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          BIGINT  NOT NULL,
    version      TEXT    NOT NULL,
    -- JSON array of the agents it serves
    agents       TEXT    NOT NULL,
    concurrency  BIGINT  NOT NULL,
    started_at   BIGINT  NOT NULL,
    heartbeat_at BIGINT  NOT NULL,
    running      BIGINT  NOT NULL DEFAULT 0,
    processed    BIGINT  NOT NULL DEFAULT 0,
    -- how often its worker loop was restarted, and the last reason it could not work
    restarts     BIGINT  NOT NULL DEFAULT 0,
    last_error   TEXT,
    stopped_at   BIGINT 
);
CREATE INDEX workers_heartbeat ON workers (heartbeat_at);
