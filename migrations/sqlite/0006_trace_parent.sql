-- The W3C `traceparent` of the request that created a run, so that its attempts' spans
-- continue that trace. NULL when there was none to continue (tracing off, no header).
ALTER TABLE runs ADD COLUMN trace_parent TEXT;
