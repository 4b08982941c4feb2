-- Retention (--retain-*): a finished run's signals and webhook deliveries are deleted with
-- it, and a run whose completion webhook is still to be delivered is kept; both look
-- these rows up by run.
CREATE INDEX run_signals_run ON run_signals (run_id);
CREATE INDEX webhook_deliveries_run ON webhook_deliveries (run_id);
-- The janitor's own index (finished runs by status and finish time) is created by the
-- first worker process started with a retention setting (`Store::enable_retention`):
-- written by every finish, it would cost deployments that keep every run for nothing.
