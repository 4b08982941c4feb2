-- See migrations/sqlite/0006_trace_parent.sql. A nullable column without a default does
-- not rewrite the table.
ALTER TABLE runs ADD COLUMN trace_parent TEXT;
