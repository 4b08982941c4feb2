-- Tenants and API keys (see migrations/sqlite/0005_tenants.sql). Adding a column with a
-- constant default does not rewrite the table.
ALTER TABLE runs ADD COLUMN tenant TEXT COLLATE "C" NOT NULL DEFAULT 'default';

CREATE TABLE api_keys (
    id          TEXT    PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    scopes      TEXT    NOT NULL,
    name        TEXT,
    secret_hash TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
