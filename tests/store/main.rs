//! The store's conformance suite: fencing, claims, Redis delivery's dispatch and declared
//! agents, driven
//! through `Store` directly on the backend `scripts/test.sh` selects (SQLite, or
//! PostgreSQL with `AGENTQ_TEST_DB=postgres`), every run's transitions checked against
//! `RunStatus::can_become`.

#[path = "../support/mod.rs"]
mod support;

mod agents;
mod claims;
mod dispatch;
mod events;
mod fencing;
mod leases;
mod streams;
