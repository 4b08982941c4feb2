-- See migrations/sqlite/0008_requeued_at.sql. A nullable column without a default does
-- not rewrite the table.
ALTER TABLE runs ADD COLUMN requeued_at BIGINT;
