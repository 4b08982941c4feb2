-- Tenants and API keys. Every run belongs to a tenant; runs made before keys existed, or
-- while the server runs without auth, belong to `default`.
ALTER TABLE runs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';

-- API keys: `aq_<id>_<secret>`; only the SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    id          TEXT    PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    -- comma-separated: runs:read, runs:write, admin
    scopes      TEXT    NOT NULL,
    name        TEXT,
    secret_hash TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

-- Secrets the server makes for itself and every process shares (the run token key).
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
