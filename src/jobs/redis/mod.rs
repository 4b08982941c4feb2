//! Redis delivery (`--queue-url redis://…`): apalis-redis carries "run X (dispatch N) is
//! ready" messages; the runs table stays the record.
//!
//! - The feeder ([`feeder`]) keeps at most `dispatch_window` messages per agent queue in
//!   Redis, topping the window up from the runs table in claim order. It marks runs first
//!   and pushes second, so a failed push leaves marks the reconciler frees.
//! - A worker per agent queue ([`worker`]) claims each message's run with a claim fenced
//!   on (run id, dispatch seq) and runs the attempt through the same path as the
//!   table-polling backend. apalis is only ever told success, or `AbortError` for a
//!   payload that is not a dispatch message: retries are agentq's.
//! - The reconciler ([`reconcile`]) frees marks whose message Redis no longer holds
//!   (Redis restarted without persistence, flushed, or a push that never landed), and
//!   deletes what apalis-redis keeps of finished messages.
//!
//! Why a window: apalis-redis moves every due message in one Lua `unpack`, which fails
//! beyond ~8,000, and Redis would otherwise hold a second copy of the backlog.

mod conn;
mod feeder;
mod reconcile;
mod wake;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apalis_redis::{Client, Config};
use redis::{ClientTlsConfig, IntoConnectionInfo, TlsCertificates};
use tokio_util::sync::CancellationToken;

use super::WorkerStatus;
use super::execute::Executor;
use crate::telemetry::redacted;

pub(crate) use conn::QueueConn;
use conn::Target;
pub(crate) use worker::supervise_queues;

/// The largest `--dispatch-window`: apalis-redis fails to fetch beyond ~8,000 due
/// messages of one queue (a Lua `unpack` limit), and a window is per queue.
pub const MAX_DISPATCH_WINDOW: usize = 5000;

/// Messages this process's workers took from Redis since the feeder last topped up: once
/// a quarter of the window is gone the feeder tops up at once, rather than at its next
/// poll, so a busy queue never runs dry between polls.
#[derive(Default)]
pub(crate) struct Consumed {
    count: std::sync::atomic::AtomicUsize,
    notify: tokio::sync::Notify,
}

impl Consumed {
    fn took_one(&self, window: usize) {
        let n = self
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n >= (window / 4).max(1) {
            self.notify.notify_one();
        }
    }

    fn reset(&self) {
        self.count.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What Redis delivery takes from the worker's options (`WorkerOptions`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacing {
    /// Attempts run at once by this process.
    pub(crate) concurrency: usize,
    pub(crate) lease: Duration,
    /// How long in-flight attempts get to finish at shutdown.
    pub(crate) shutdown_timeout: Duration,
    /// How often the feeder tops the queues up when nothing wakes it.
    pub(crate) poll_interval: Duration,
}

/// How to reach Redis and how much to keep there.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://…`, `rediss://…` or `redis+sentinel://…`; may hold a password, so `Debug`
    /// hides it.
    pub url: String,
    /// With `rediss://`: whom to trust and who we are, beyond the system's roots.
    pub tls: RedisTls,
    /// Messages kept in Redis per agent queue (1..=[`MAX_DISPATCH_WINDOW`]).
    pub dispatch_window: usize,
    /// How often an idle worker asks Redis for messages it was not woken for (a lost
    /// wake-up: see `wake`).
    pub poll_interval: Duration,
    /// Key prefix: the queue of agent `a` is `<namespace>:<a>`. Processes that share
    /// runs must share it; tests use their own.
    pub namespace: String,
}

/// TLS files for a `rediss://` URL (PEM). Without a CA file the server's certificate is
/// checked against the system's roots; `#insecure` at the end of the URL checks nothing.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    /// `--queue-ca-file`: the authority that signed the server's certificate, trusted in
    /// place of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// `--queue-client-cert` and `--queue-client-key`: for a server that asks clients for
    /// a certificate (`tls-auth-clients yes`).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl RedisOptions {
    /// Checks the URL and reads the TLS files (nothing is connected); the error names the
    /// setting that is wrong.
    pub fn check(&self) -> Result<(), String> {
        self.target().map(drop)
    }

    /// Where to connect: a server (with its TLS files read and checked), or Sentinel.
    fn target(&self) -> Result<Target, String> {
        if self.url.starts_with("redis+sentinel://") {
            let files = [
                &self.tls.ca_file,
                &self.tls.client_cert,
                &self.tls.client_key,
            ];
            if files.iter().any(|f| f.is_some()) {
                return Err("--queue-ca-file, --queue-client-cert and --queue-client-key need a rediss:// --queue-url (TLS through Sentinel is not supported)".into());
            }
            return conn::parse_sentinel_url(&self.url);
        }
        self.client().map(Target::Server)
    }

    /// The client for one server, with its TLS files read and checked.
    fn client(&self) -> Result<Client, String> {
        let tls = &self.tls;
        let files = [
            ("--queue-ca-file", &tls.ca_file),
            ("--queue-client-cert", &tls.client_cert),
            ("--queue-client-key", &tls.client_key),
        ];
        let tls_url = self.url.starts_with("rediss://");
        if tls_url && self.url.ends_with("#insecure") && tls.ca_file.is_some() {
            return Err("--queue-ca-file is not used with an `#insecure` --queue-url, which checks no certificate: drop one of them".into());
        }
        if let Some((flag, _)) = files.iter().find(|(_, f)| f.is_some())
            && !tls_url
        {
            return Err(format!("{flag} needs a rediss:// --queue-url"));
        }
        let read = |flag: &str, path: &Option<PathBuf>, holds: &str| {
            let Some(path) = path else { return Ok(None) };
            let pem = std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
            if !String::from_utf8_lossy(&pem).contains(holds) {
                return Err(format!(
                    "{flag} {}: holds no PEM `{holds}` block",
                    path.display()
                ));
            }
            Ok(Some(pem))
        };
        let root_cert = read(files[0].0, files[0].1, "CERTIFICATE-----")?;
        let client_cert = read(files[1].0, files[1].1, "CERTIFICATE-----")?;
        let client_key = read(files[2].0, files[2].1, "PRIVATE KEY-----")?;
        let client_tls = match (client_cert, client_key) {
            (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
                client_cert,
                client_key,
            }),
            (None, None) => None,
            (Some(_), None) => return Err("--queue-client-cert needs --queue-client-key".into()),
            (None, Some(_)) => return Err("--queue-client-key needs --queue-client-cert".into()),
        };
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("--queue-url {}: {e}", redacted(&self.url)))?;
        if !tls_url {
            return Client::open(info).map_err(|e| format!("--queue-url: {e}"));
        }
        if self.url.ends_with("#insecure") {
            tracing::warn!(redis = %redacted(&self.url), "Redis's certificate is not checked (#insecure): for tests only");
        }
        let certificates = TlsCertificates {
            client_tls,
            root_cert,
        };
        Client::build_with_tls(info, certificates).map_err(|e| {
            format!("--queue-ca-file, --queue-client-cert or --queue-client-key do not parse: {e}")
        })
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redacted(&self.url))
            .field("tls", &self.tls)
            .field("dispatch_window", &self.dispatch_window)
            .field("poll_interval", &self.poll_interval)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// The apalis queue (key prefix) of one agent.
fn queue_name(options: &RedisOptions, agent: &str) -> String {
    format!("{}:{agent}", options.namespace)
}

/// apalis-redis settings for one agent queue (see the module docs for why each).
fn queue_config(options: &RedisOptions, agent: &str) -> Config {
    Config::default()
        .queue(queue_name(options, agent))
        // messages fetched per script call; unstarted ones wait in this worker's inflight
        // set, so a small batch keeps one process from hoarding the window
        .batch_size(8)
        // a dead process's unclaimed messages return after heartbeat × missed
        .heartbeat_interval(Duration::from_secs(2))
        .missed_heartbeats(3)
        // the lease step is an LREM per message and buys nothing: the claim is the lease
        .lock_tasks(false)
        .emit_events(false)
        // the ack: without it messages stay in flight and come back as orphans
        .persist_results(true)
}

/// One connection per process (clones share it).
async fn connect(options: &RedisOptions) -> Result<QueueConn, String> {
    QueueConn::connect(options.target()?).await
}

/// Connects, trying again as the supervisor says (1 s doubling to 60 s, each failure a
/// restart toward `--max-restarts`) until Redis answers, shutdown, or the worker gives
/// up; the reason shows in `/readyz` meanwhile.
async fn connect_until(
    options: &RedisOptions,
    status: &WorkerStatus,
    shutdown: &CancellationToken,
    mut supervisor: super::supervise::Supervisor,
) -> Option<QueueConn> {
    loop {
        let reason = match connect(options).await {
            Ok(conn) => {
                status.delivery_failed(None);
                status.claim_failed(None);
                return Some(conn);
            }
            Err(e) => format!("cannot connect to Redis at {}: {e}", redacted(&options.url)),
        };
        let wait = supervisor.stopped(&reason)?;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Delivers through Redis until `shutdown`: the feeder, the reconciler and one
/// supervised apalis worker per served agent. Returns once the workers have stopped
/// (in-flight attempts given `shutdown_timeout`).
pub(crate) async fn deliver(
    redis: &RedisOptions,
    executor: &Arc<Executor>,
    agents: &Arc<[String]>,
    options: Pacing,
    status: &Arc<WorkerStatus>,
    shutdown: &CancellationToken,
    supervisor: &(dyn Fn() -> super::supervise::Supervisor + Sync),
) {
    let Some(conn) = connect_until(redis, status, shutdown, supervisor()).await else {
        return;
    };
    tracing::info!(redis = %redacted(&redis.url), server = %conn.address(), window = redis.dispatch_window, "delivering runs through Redis");
    let background = CancellationToken::new();
    let consumed = Arc::new(Consumed::default());
    let feeder = tokio::spawn(feeder::feed(
        executor.clone(),
        conn.clone(),
        redis.clone(),
        agents.clone(),
        options.poll_interval,
        consumed.clone(),
        background.clone(),
    ));
    let reconciler = tokio::spawn(reconcile::reconcile(
        executor.store.clone(),
        conn.clone(),
        redis.clone(),
        agents.clone(),
        status.clone(),
        background.clone(),
    ));
    let wakes: std::collections::HashMap<String, wake::Wake> = agents
        .iter()
        .map(|agent| (queue_name(redis, agent), wake::Wake::default()))
        .collect();
    let listener = tokio::spawn(wake::listen(
        conn.clone(),
        wake::channel(redis),
        wakes.clone(),
        background.clone(),
    ));
    let delivery =
        worker::Delivery::new(executor, options, redis.dispatch_window, consumed, shutdown);
    supervise_queues(conn, redis, delivery, agents, &wakes, options, supervisor).await;
    background.cancel();
    let _ = tokio::join!(feeder, reconciler, listener);
}
