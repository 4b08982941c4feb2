-- Who did it: an event made through the API names the caller that made it (`key:<id>`,
-- `run_token:<run id>` or `open`); a run keeps the caller that created it, which its
-- agent can read. A signed signal keeps its signature, so the same signed request is
-- taken once (replay within the tolerance window is refused).
ALTER TABLE run_events ADD COLUMN actor TEXT;
ALTER TABLE runs ADD COLUMN created_by TEXT;
ALTER TABLE run_signals ADD COLUMN signature TEXT;
CREATE UNIQUE INDEX run_signals_signature ON run_signals (run_id, signature)
    WHERE signature IS NOT NULL;
