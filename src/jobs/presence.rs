//! The worker registry, from the worker's side: who this process is, what it is doing,
//! and why it cannot work when it cannot. A heartbeat writes it to the `workers` table
//! every [`HEARTBEAT_EVERY`]; `/readyz` of the same process reads it directly.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::domain::WorkerBeat;
use crate::store::Store;

use super::execute::InFlight;

/// How often a worker process heartbeats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// A worker not heard from for this long is shown as gone.
pub const GONE_AFTER: Duration = Duration::from_secs(10);

/// One worker process: its identity and live counters.
#[derive(Debug)]
pub struct WorkerStatus {
    id: Arc<str>,
    host: String,
    agents: Vec<String>,
    concurrency: u32,
    started_at: DateTime<Utc>,
    processed: AtomicU64,
    restarts: AtomicU32,
    /// Counts claims and fetches that worked: the proof a restarted loop works again.
    work_seq: AtomicU64,
    last_restart_at: Mutex<Option<DateTime<Utc>>>,
    /// Why claiming runs last failed, while it keeps failing.
    claim_error: Mutex<Option<String>>,
    /// Why Redis delivery (connecting, feeding, reconciling) last failed, until it works.
    delivery_error: Mutex<Option<String>>,
    /// Why the Redis reconciler last failed, until it works (apart from the feeder's, so
    /// one does not clear the other's).
    reconcile_error: Mutex<Option<String>>,
    /// Why the last heartbeat failed, until one succeeds.
    heartbeat_error: Mutex<Option<String>>,
}

impl WorkerStatus {
    pub fn new(agents: Vec<String>, concurrency: usize) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let suffix: u32 = rand::random();
        Self {
            id: format!("{host}-{}-{suffix:08x}", std::process::id()).into(),
            host,
            agents,
            concurrency: concurrency as u32,
            started_at: Utc::now(),
            processed: AtomicU64::new(0),
            restarts: AtomicU32::new(0),
            work_seq: AtomicU64::new(0),
            last_restart_at: Mutex::new(None),
            claim_error: Mutex::new(None),
            delivery_error: Mutex::new(None),
            reconcile_error: Mutex::new(None),
            heartbeat_error: Mutex::new(None),
        }
    }

    /// Unique per process: host, pid and a random suffix.
    pub fn id(&self) -> Arc<str> {
        self.id.clone()
    }

    /// Why this worker cannot work right now, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let claim = self.claim_error.lock().expect("status lock").clone();
        claim
            .or_else(|| self.delivery_error.lock().expect("status lock").clone())
            .or_else(|| self.reconcile_error.lock().expect("status lock").clone())
            .or_else(|| self.heartbeat_error.lock().expect("status lock").clone())
    }

    pub(crate) fn claim_failed(&self, error: Option<String>) {
        *self.claim_error.lock().expect("status lock") = error;
    }

    pub(crate) fn delivery_failed(&self, error: Option<String>) {
        *self.delivery_error.lock().expect("status lock") = error;
    }

    pub(crate) fn reconcile_failed(&self, error: Option<String>) {
        *self.reconcile_error.lock().expect("status lock") = error;
    }

    pub(crate) fn processed_one(&self) {
        self.processed.fetch_add(1, Ordering::Relaxed);
    }

    /// A claim or a fetch of runs worked (even one that found none).
    pub(crate) fn worked(&self) {
        self.work_seq.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn work_seq(&self) -> u64 {
        self.work_seq.load(Ordering::Relaxed)
    }

    pub(crate) fn restarted(&self, reason: String) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        *self.last_restart_at.lock().expect("status lock") = Some(Utc::now());
        *self.claim_error.lock().expect("status lock") = Some(reason);
    }

    fn beat(&self, running: usize, stopped: bool) -> WorkerBeat {
        WorkerBeat {
            id: self.id.to_string(),
            host: self.host.clone(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            agents: self.agents.clone(),
            concurrency: self.concurrency,
            started_at: self.started_at,
            running: running as u64,
            processed: self.processed.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            last_restart_at: *self.last_restart_at.lock().expect("status lock"),
            last_error: self.problem(),
            stopped,
            language: "rust".into(),
        }
    }
}

/// Heartbeats until `stop` fires, then writes the goodbye (`stopped`).
pub(crate) async fn heartbeat(
    store: Store,
    status: Arc<WorkerStatus>,
    inflight: InFlight,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let result = store.heartbeat(status.beat(inflight.len(), false)).await;
        let error = result.err().map(|e| format!("heartbeat failed: {e}"));
        if let Some(e) = &error {
            tracing::warn!(error = %e, "worker heartbeat failed");
        }
        *status.heartbeat_error.lock().expect("status lock") = error;
    }
    if let Err(e) = store.heartbeat(status.beat(0, true)).await {
        tracing::warn!(error = %e, "could not mark the worker stopped; it shows as gone");
    }
}
