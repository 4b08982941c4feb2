//! Settings: command-line flags, each with an `AGENTQ_*` environment fallback, and a
//! settings file under both (see [`file`]).

pub mod file;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::{HttpOptions, RunDefaults};
use crate::domain::{Backoff, NamedSecrets};
use crate::jobs::egress::HostPattern;
use crate::jobs::{
    EgressPolicy, MAX_DISPATCH_WINDOW, RedisOptions, RedisTls, RetentionOptions, WorkerOptions,
};
use crate::store::StoreOptions;
use crate::telemetry::{LogFormat, OtlpOptions};

#[derive(Debug, Parser)]
#[command(
    name = "agentq",
    version,
    about = "Runs agent jobs in the background for web applications"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// API and workers in one process (the default).
    Serve,
    /// Only the HTTP API (stateless; run any number).
    Api,
    /// Only workers (run any number).
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the OpenAPI document and exit.
    Openapi,
    /// Manage API keys (stored in the database at --database-url).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check the settings.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ConfigCommand {
    /// Check the settings (flags, environment, --config file) and print them as resolved,
    /// each with where it came from; secrets are hidden. Exits 2 on a bad one.
    Check,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum KeysCommand {
    /// Make a key for a tenant and print it once (only its hash is kept).
    Create {
        /// The tenant whose runs the key acts on: 1 to 63 of a-z, 0-9, _ and -.
        #[arg(long)]
        tenant: String,
        /// Comma-separated: runs:read, runs:write, admin (admin implies the others), worker
        /// (an external worker: declare agents, claim and report; nothing else).
        #[arg(long, default_value = "runs:read,runs:write")]
        scopes: String,
        /// A label to recognise the key by in `keys list`.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by its id (the 12 hex digits after `aq_`); it stops working within 5 s.
    Revoke { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqliteSync {
    /// Durable across a crashed process (WAL + synchronous=NORMAL).
    Normal,
    /// Also durable across power loss (an fsync per commit).
    Full,
}

/// Which parts of agentq this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// API and workers.
    Serve,
    Api,
    Worker,
}

impl Role {
    pub(crate) fn serves_http(self) -> bool {
        matches!(self, Role::Serve | Role::Api)
    }

    pub(crate) fn runs_workers(self) -> bool {
        matches!(self, Role::Serve | Role::Worker)
    }
}

/// Everything `Application::build` needs; see `config::Settings` for the defaults.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub role: Role,
    pub listen: SocketAddr,
    /// A second listener serving only `GET /metrics`, without a key.
    pub metrics_listen: Option<SocketAddr>,
    pub database_url: String,
    pub store: StoreOptions,
    pub worker: WorkerOptions,
    pub http: HttpOptions,
    pub defaults: RunDefaults,
}

/// `agent=N`: an agent's limit of runs running at once.
fn agent_limit(s: &str) -> Result<(String, u32), String> {
    let (agent, n) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not agent=N (like http=20)"))?;
    let n: u32 =
        n.trim().parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
            format!("the limit of `{agent}` must be a whole number of at least 1")
        })?;
    Ok((agent.trim().to_owned(), n))
}

/// `agent=LIMIT[:POLICY]`: the concurrency key settings of an agent's runs.
fn key_concurrency(s: &str) -> Result<(String, crate::domain::KeySettings), String> {
    let (agent, settings) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not agent=LIMIT[:POLICY] (like chat=1:cancel_running)"))?;
    let settings = settings
        .parse()
        .map_err(|e| format!("the key concurrency of `{}`: {e}", agent.trim()))?;
    Ok((agent.trim().to_owned(), settings))
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use a duration like 500ms, 3s, 5m)"))
}

fn otlp_endpoint(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s)
        .map_err(|e| format!("{e} (use a URL like http://collector:4318)"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(s.to_owned()),
        _ => Err("use an http:// or https:// URL, like http://collector:4318".into()),
    }
}

fn host_pattern(s: &str) -> Result<HostPattern, String> {
    s.parse()
        .map_err(|e: crate::jobs::egress::PatternError| e.to_string())
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address the HTTP API listens on.
    #[arg(
        long,
        env = "AGENTQ_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,
    /// Also serve `GET /metrics` on this address, without a key, for a Prometheus scraper:
    /// the one way to read a worker process's counters (an `agentq worker` serves no API).
    /// Bind it to a private address. Unset: no such listener.
    #[arg(long, env = "AGENTQ_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<SocketAddr>,
    /// Where runs are kept: sqlite://PATH (created if missing) or postgres://USER@HOST/DB.
    #[arg(
        long,
        env = "AGENTQ_DATABASE_URL",
        default_value = "sqlite://agentq.db",
        global = true
    )]
    pub database_url: String,
    /// Deliver runs through Redis (redis://… or rediss://…) instead of workers claiming
    /// them from the runs table, which stays the record. Unset: no Redis.
    #[arg(long, env = "AGENTQ_QUEUE_URL", hide_env_values = true, global = true)]
    pub queue_url: Option<String>,
    /// With a rediss:// --queue-url: the PEM file of the authority that signed Redis's
    /// certificate, trusted in place of the system's roots. (`#insecure` at the end of the
    /// URL skips the check: for tests only.)
    #[arg(long, env = "AGENTQ_QUEUE_CA_FILE", global = true)]
    pub queue_ca_file: Option<PathBuf>,
    /// With a rediss:// --queue-url: a client certificate (PEM), for a Redis that asks
    /// for one (`tls-auth-clients yes`); with --queue-client-key.
    #[arg(long, env = "AGENTQ_QUEUE_CLIENT_CERT", global = true)]
    pub queue_client_cert: Option<PathBuf>,
    /// With --queue-client-cert: its private key (PEM).
    #[arg(long, env = "AGENTQ_QUEUE_CLIENT_KEY", global = true)]
    pub queue_client_key: Option<PathBuf>,
    /// With --queue-url: ready runs kept in Redis per agent queue, topped up from the runs
    /// table in priority order. A new high-priority run waits behind at most this many.
    #[arg(long, env = "AGENTQ_DISPATCH_WINDOW", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=MAX_DISPATCH_WINDOW as i64), global = true)]
    pub dispatch_window: u32,
    /// With --queue-url: how often an idle worker asks Redis for messages it was not woken
    /// for (a push wakes it at once, through a Redis subscription; this covers a wake-up
    /// lost while that subscription was down). Each ask is one script call per agent queue
    /// and process.
    #[arg(long, env = "AGENTQ_QUEUE_POLL_INTERVAL", default_value = "500ms", value_parser = duration, global = true)]
    pub queue_poll_interval: Duration,
    /// With --queue-url: the prefix of agentq's Redis keys (`<namespace>:<agent>:…`), so
    /// several agentq deployments can share one Redis. Processes sharing a database must
    /// share it.
    #[arg(
        long,
        env = "AGENTQ_QUEUE_NAMESPACE",
        default_value = "agentq",
        global = true
    )]
    pub queue_namespace: String,
    /// Attempts a worker process runs at once.
    #[arg(long, env = "AGENTQ_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub concurrency: u32,
    /// How long a worker owns a run without renewing its lease; a killed worker's runs
    /// are retried this long after it stopped.
    #[arg(long, env = "AGENTQ_LEASE", default_value = "15s", value_parser = duration, global = true)]
    pub lease: Duration,
    /// How long in-flight runs get to finish on SIGTERM/SIGINT before they are handed back.
    #[arg(long, env = "AGENTQ_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = duration, global = true)]
    pub shutdown_timeout: Duration,
    /// How often an idle worker checks for runs it was not woken for (other processes'
    /// inserts, delayed runs coming due).
    #[arg(long, env = "AGENTQ_POLL_INTERVAL", default_value = "1s", value_parser = duration, global = true)]
    pub poll_interval: Duration,
    /// Agents this worker serves, comma-separated (default: all registered).
    #[arg(long, env = "AGENTQ_AGENTS", value_delimiter = ',', global = true)]
    pub agents: Option<Vec<String>>,
    /// Attempts per run when the run does not say.
    #[arg(long, env = "AGENTQ_MAX_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100), global = true)]
    pub max_attempts: u32,
    /// Per-attempt time limit when the run does not say.
    #[arg(long, env = "AGENTQ_RUN_TIMEOUT", default_value = "5m", value_parser = duration, global = true)]
    pub run_timeout: Duration,
    /// Retry backoff base: the first retry waits a random time up to this.
    #[arg(long, env = "AGENTQ_BACKOFF_BASE", default_value = "1s", value_parser = duration, global = true)]
    pub backoff_base: Duration,
    /// Retry backoff cap: no retry waits longer.
    #[arg(long, env = "AGENTQ_BACKOFF_CAP", default_value = "5m", value_parser = duration, global = true)]
    pub backoff_cap: Duration,
    /// How long an Idempotency-Key keeps naming the run it created.
    #[arg(long, env = "AGENTQ_IDEMPOTENCY_TTL", default_value = "24h", value_parser = duration, global = true)]
    pub idempotency_ttl: Duration,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "AGENTQ_BODY_LIMIT", default_value_t = 1024 * 1024, global = true)]
    pub body_limit: usize,
    /// Time limit of one HTTP request.
    #[arg(long, env = "AGENTQ_REQUEST_TIMEOUT", default_value = "30s", value_parser = duration, global = true)]
    pub request_timeout: Duration,
    /// Closes an HTTP connection that sends no complete request head for this long: a
    /// silent socket, half-sent headers, or a keep-alive connection left idle.
    #[arg(long, env = "AGENTQ_IDLE_TIMEOUT", default_value = "20s", value_parser = duration, global = true)]
    pub idle_timeout: Duration,
    /// The most HTTP connections served at once (lowered to fit the open-file limit).
    /// Past it, a small reserve answers only `/healthz` and `/readyz`, the rest `503
    /// too_many_connections`.
    #[arg(
        long,
        env = "AGENTQ_MAX_CONNECTIONS",
        default_value_t = 8192,
        global = true
    )]
    pub max_connections: usize,
    /// What the request bodies being read and handled may cost at once, in bytes (a body's
    /// length, then about 4 bytes per byte and 448 per JSON value to handle it). A request
    /// that finds no room within 250 ms is answered `503 too_busy`.
    #[arg(long, env = "AGENTQ_MAX_INFLIGHT_BYTES", default_value_t = 256 * 1024 * 1024, global = true)]
    pub max_inflight_bytes: usize,
    /// The most live event streams (`text/event-stream` reads of a run's events or its
    /// output) this process serves at once; past it `503 too_many_streams`.
    #[arg(
        long,
        env = "AGENTQ_MAX_STREAMS",
        default_value_t = 5000,
        global = true
    )]
    pub max_streams: usize,
    /// The most JSON values one request body may hold (objects, arrays, strings, numbers,
    /// literals); more is a `413` before the body is parsed.
    #[arg(
        long,
        env = "AGENTQ_MAX_BODY_VALUES",
        default_value_t = 100_000,
        global = true
    )]
    pub max_body_values: usize,
    /// Origins allowed to call the API from a browser (CORS), comma-separated; `*` for any.
    #[arg(
        long,
        env = "AGENTQ_CORS_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub cors_origins: Vec<String>,
    /// Shared secret for signals from outside systems: `POST /v1/runs/{id}/signals` then
    /// needs `X-Agentq-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of "<t>.<run id>.<body>">`,
    /// signed within --signature-tolerance of now, and each signed request is taken once.
    #[arg(
        long,
        env = "AGENTQ_SIGNAL_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub signal_secret: Option<String>,
    /// Secret for signing completion webhooks (`Agentq-Signature: t=…,v1=<hex HMAC-SHA256
    /// of "<t>.<run id>.<body>">`, the run id also in `Agentq-Run-Id`); unsigned when not set.
    #[arg(
        long,
        env = "AGENTQ_WEBHOOK_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub webhook_secret: Option<String>,
    /// How far from now a signed signal's `t` may be (either way) before it is refused
    /// as stale.
    #[arg(long, env = "AGENTQ_SIGNATURE_TOLERANCE", default_value = "5m", value_parser = duration, global = true)]
    pub signature_tolerance: Duration,
    /// Serve without API keys on a non-loopback address. Without it, a server that
    /// listens beyond loopback refuses to start until a key exists.
    #[arg(long, env = "AGENTQ_INSECURE_NO_AUTH", global = true)]
    pub insecure_no_auth: bool,
    /// Secret that signs run tokens; all API processes must share it. Unset: a secret
    /// generated once and kept in the database (shared automatically).
    #[arg(
        long,
        env = "AGENTQ_TOKEN_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub token_secret: Option<String>,
    /// How long the run token returned by `POST /v1/runs` is valid.
    #[arg(long, env = "AGENTQ_RUN_TOKEN_TTL", default_value = "1h", value_parser = duration, global = true)]
    pub run_token_ttl: Duration,
    /// Requests per second each tenant may make to one API process (also its burst);
    /// over it, `429` with `Retry-After`. Unset: no limit.
    #[arg(long, env = "AGENTQ_TENANT_RATE_LIMIT", value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub tenant_rate_limit: Option<u32>,
    /// Runs not yet finished each tenant may have; `POST /v1/runs` over it is a `429`.
    /// Unset: no cap.
    #[arg(long, env = "AGENTQ_TENANT_MAX_ACTIVE_RUNS", value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub tenant_max_active_runs: Option<u64>,
    /// The largest result an agent may return, in bytes of JSON; a bigger one fails the
    /// run. (Inputs are capped by --body-limit.)
    #[arg(long, env = "AGENTQ_MAX_RESULT_BYTES", default_value_t = 1024 * 1024, global = true)]
    pub max_result_bytes: usize,
    /// The most bytes of output stream one run may hold over all its attempts (the text
    /// of text and reasoning parts, the JSON of others); an append past it is refused.
    #[arg(long, env = "AGENTQ_MAX_STREAM_BYTES", default_value_t = crate::domain::DEFAULT_MAX_STREAM_BYTES, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub max_stream_bytes: u64,
    /// Hosts outbound HTTP (the `http` agent, completion webhooks) may reach,
    /// comma-separated: `api.example.com`, `*.example.com`, `10.0.0.0/8`, `127.0.0.1`, or
    /// `*` for any host, each optionally with `:port` (`[::1]:8080` for IPv6). When set,
    /// only matching hosts are reached, and an address in a blocked range (loopback,
    /// private, link-local, cloud metadata, …) only when an address or network pattern
    /// covers it. Unset: any public host, never a blocked address.
    #[arg(long, env = "AGENTQ_HTTP_ALLOW", value_delimiter = ',', value_parser = host_pattern, global = true)]
    pub http_allow: Vec<HostPattern>,
    /// The most runs of an agent running at once over all workers, like `http=20`
    /// (comma-separated or repeated). Give every worker process the same limits.
    #[arg(long, env = "AGENTQ_AGENT_LIMIT", value_delimiter = ',', value_parser = agent_limit, global = true)]
    pub agent_limit: Vec<(String, u32)>,
    /// An agent's concurrency key limit and policy for runs that set a
    /// `concurrency_key` but no `concurrency_limit` or `concurrency_policy`, like
    /// `chat=1:cancel_running`, `summarize=3` or `search=drop_queued` (comma-separated or
    /// repeated; policies: queue, reject, cancel_running, drop_queued). Without one: 1 and
    /// queue. Give every API process the same settings.
    #[arg(long, env = "AGENTQ_KEY_CONCURRENCY", value_delimiter = ',', value_parser = key_concurrency, global = true)]
    pub key_concurrency: Vec<(String, crate::domain::KeySettings)>,
    /// Log format.
    #[arg(
        long,
        env = "AGENTQ_LOG_FORMAT",
        value_enum,
        default_value = "human",
        global = true
    )]
    pub log_format: LogFormat,
    /// Export spans to this OpenTelemetry collector over OTLP/HTTP (protobuf), e.g.
    /// `http://collector:4318` (spans go to its `/v1/traces`). Unset: no span export, and
    /// no cost for it.
    #[arg(long, env = "AGENTQ_OTLP_ENDPOINT", value_parser = otlp_endpoint, global = true)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` spans are exported under.
    #[arg(
        long,
        env = "AGENTQ_OTLP_SERVICE_NAME",
        default_value = "agentq",
        global = true
    )]
    pub otlp_service_name: String,
    /// SQLite durability.
    #[arg(
        long,
        env = "AGENTQ_SQLITE_SYNC",
        value_enum,
        default_value = "normal",
        global = true
    )]
    pub sqlite_sync: SqliteSync,
    /// SQLite: the largest the database file may grow, in bytes. Past it writes are
    /// refused as on a full disk (`503 storage_full`). Unset: as large as the disk allows.
    #[arg(long, env = "AGENTQ_SQLITE_MAX_SIZE", global = true)]
    pub sqlite_max_size: Option<u64>,
    /// Delete succeeded runs (with their events) this long after they finished. Unset:
    /// keep them for good.
    #[arg(long, env = "AGENTQ_RETAIN_SUCCEEDED", value_parser = duration, global = true)]
    pub retain_succeeded: Option<Duration>,
    /// Delete failed runs this long after they failed. Unset: keep them for good.
    #[arg(long, env = "AGENTQ_RETAIN_FAILED", value_parser = duration, global = true)]
    pub retain_failed: Option<Duration>,
    /// Delete cancelled runs this long after they were cancelled. Unset: keep them for good.
    #[arg(long, env = "AGENTQ_RETAIN_CANCELLED", value_parser = duration, global = true)]
    pub retain_cancelled: Option<Duration>,
    /// Keep at most this many finished runs of each status (succeeded, failed, cancelled),
    /// deleting the oldest finished first. Unset: no limit.
    #[arg(long, env = "AGENTQ_RETAIN_MAX_RUNS", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub retain_max_runs: Option<u64>,
    /// Connections each process keeps for reads (besides its one writing connection).
    #[arg(long, env = "AGENTQ_READ_CONNECTIONS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=256), global = true)]
    pub read_connections: u32,
    /// How many times in a row a worker loop that stops on its own (claims failing for
    /// seconds, Redis lost) is started again, 1 s doubling to 60 s apart, before the
    /// process gives up and exits non-zero for systemd or the orchestrator to restart it. A
    /// loop that then runs 5 s counts as healthy and the count starts over. 0: exit at the
    /// first stop.
    #[arg(long, env = "AGENTQ_MAX_RESTARTS", default_value_t = 10, global = true)]
    pub max_restarts: u32,
    /// A settings file (TOML) whose keys are these flags' names: `lease = "15s"`,
    /// `http-allow = ["api.example.com"]`. A flag wins over its environment variable, which
    /// wins over the file. `agentq config check` prints the result.
    #[arg(long, env = "AGENTQ_CONFIG", value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// A named secret, `NAME=VALUE` (repeat for more): an `http` run's header may say
    /// `{"secret": "NAME"}` instead of the value, and Rust agents read it with
    /// `ctx.secret("NAME")`. Kept in memory only, never stored, returned or logged. Prefer
    /// `AGENTQ_SECRET_<NAME>` or --secrets-file: a flag shows in the process list.
    #[arg(
        long = "secret",
        value_name = "NAME=VALUE",
        hide_env_values = true,
        global = true
    )]
    pub secret: Vec<String>,
    /// A file of `NAME=VALUE` lines (blank lines and `#` comments skipped): more named
    /// secrets. A name set by --secret or AGENTQ_SECRET_<NAME> wins.
    #[arg(long, env = "AGENTQ_SECRETS_FILE", value_name = "PATH", global = true)]
    pub secrets_file: Option<PathBuf>,
    /// The hosts a named secret may be sent to by the `http` agent, `NAME=HOST[,HOST…]`
    /// with the patterns of --http-allow (repeat for more secrets; `;` between them in the
    /// variable). A secret bound to no host is sent nowhere; a request carrying one follows
    /// no redirect.
    #[arg(
        long,
        env = "AGENTQ_SECRET_HOSTS",
        value_name = "NAME=HOSTS",
        value_delimiter = ';',
        global = true
    )]
    pub secret_hosts: Vec<String>,
    /// The named secrets, gathered once.
    #[arg(skip)]
    gathered: std::sync::OnceLock<Result<NamedSecrets, String>>,
}

impl Settings {
    /// Checks what the types alone cannot; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        let at_least = |flag: &str, d: Duration, min: Duration| {
            if d < min {
                Err(format!(
                    "--{flag} must be at least {}",
                    humantime::format_duration(min)
                ))
            } else {
                Ok(())
            }
        };
        at_least("lease", self.lease, Duration::from_secs(1))?;
        at_least(
            "poll-interval",
            self.poll_interval,
            Duration::from_millis(10),
        )?;
        at_least("run-timeout", self.run_timeout, Duration::from_millis(1))?;
        if self.queue_namespace.is_empty()
            || !self
                .queue_namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(
                "--queue-namespace must be letters, digits, '-', '_' or '.' (at least one)".into(),
            );
        }
        at_least(
            "queue-poll-interval",
            self.queue_poll_interval,
            Duration::from_millis(1),
        )?;
        at_least(
            "request-timeout",
            self.request_timeout,
            Duration::from_millis(100),
        )?;
        at_least(
            "idle-timeout",
            self.idle_timeout,
            Duration::from_millis(100),
        )?;
        if self.max_connections < 16 {
            return Err("--max-connections must be at least 16".into());
        }
        if self.max_inflight_bytes < self.body_limit.saturating_mul(4) {
            return Err("--max-inflight-bytes must be at least 4 times --body-limit".into());
        }
        if self.max_streams < 1 {
            return Err("--max-streams must be at least 1".into());
        }
        if self.max_body_values < 100 {
            return Err("--max-body-values must be at least 100".into());
        }
        for (flag, retention) in [
            ("retain-succeeded", self.retain_succeeded),
            ("retain-failed", self.retain_failed),
            ("retain-cancelled", self.retain_cancelled),
        ] {
            if let Some(retention) = retention {
                at_least(flag, retention, Duration::from_secs(1))?;
            }
        }
        if self.backoff_cap < self.backoff_base {
            return Err("--backoff-cap must not be below --backoff-base".into());
        }
        at_least("run-token-ttl", self.run_token_ttl, Duration::from_secs(10))?;
        at_least(
            "signature-tolerance",
            self.signature_tolerance,
            Duration::from_secs(1),
        )?;
        if self.run_token_ttl > Duration::from_secs(7 * 24 * 3600) {
            return Err(
                "--run-token-ttl must be at most 7 days: run tokens are meant to be short-lived"
                    .into(),
            );
        }
        if self.token_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err("--token-secret must be at least 32 characters".into());
        }
        if self.body_limit < 1024 {
            return Err("--body-limit must be at least 1024 bytes".into());
        }
        if !["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|scheme| self.database_url.starts_with(scheme))
        {
            // the scheme only: a URL may carry a password
            return Err(format!(
                "--database-url must be sqlite://PATH or postgres://…, got a `{}:` URL",
                self.database_url.split(':').next().unwrap_or_default()
            ));
        }
        if let Some(url) = &self.queue_url
            && !["redis://", "rediss://", "redis+sentinel://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            // the scheme only: a URL may carry a password
            return Err(format!(
                "--queue-url must be redis://…, rediss://… or redis+sentinel://…, got a `{}:` URL",
                url.split(':').next().unwrap_or_default()
            ));
        }
        if self.database_url.starts_with("postgres") {
            crate::store::check_postgres_url(&self.database_url)?;
        }
        self.secrets()?;
        match self.redis() {
            // reads and checks the TLS files: a wrong one is named at start
            Some(redis) => redis.check(),
            None if self.queue_ca_file.is_some() => {
                Err("--queue-ca-file needs a rediss:// --queue-url".into())
            }
            None if self.queue_client_cert.is_some() || self.queue_client_key.is_some() => Err(
                "--queue-client-cert and --queue-client-key need a rediss:// --queue-url".into(),
            ),
            None => Ok(()),
        }
    }

    /// The named secrets from --secret, `AGENTQ_SECRET_<NAME>` and --secrets-file, bound
    /// to their --secret-hosts; gathered once (validation and the settings use the same).
    pub fn secrets(&self) -> Result<NamedSecrets, String> {
        self.gathered.get_or_init(|| self.gather_secrets()).clone()
    }

    fn gather_secrets(&self) -> Result<NamedSecrets, String> {
        for binding in &self.secret_hosts {
            let patterns = binding.split_once('=').map_or("", |(_, p)| p);
            for pattern in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                pattern
                    .parse::<HostPattern>()
                    .map_err(|e| format!("--secret-hosts `{pattern}`: {e}"))?;
            }
        }
        let file = match &self.secrets_file {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read_to_string(path)
                    .map_err(|e| format!("--secrets-file {}: {e}", path.display()))?,
            )),
            None => None,
        };
        // only AGENTQ_SECRET_* is read: another variable that is not UTF-8 is no concern
        // of ours (`std::env::vars` would panic on it)
        // (AGENTQ_SECRET_HOSTS is the setting above, not a secret named HOSTS)
        let env = std::env::vars_os().filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            (k.starts_with(crate::domain::SECRET_ENV_PREFIX) && k != "AGENTQ_SECRET_HOSTS")
                .then_some(())?;
            Some((k, v.into_string().unwrap_or_default()))
        });
        NamedSecrets::gather(
            &self.secret,
            env,
            file.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
        )?
        .bound(&self.secret_hosts)
    }

    /// Redis delivery, when `--queue-url` is set.
    fn redis(&self) -> Option<RedisOptions> {
        self.queue_url.clone().map(|url| RedisOptions {
            url,
            tls: RedisTls {
                ca_file: self.queue_ca_file.clone(),
                client_cert: self.queue_client_cert.clone(),
                client_key: self.queue_client_key.clone(),
            },
            dispatch_window: self.dispatch_window as usize,
            poll_interval: self.queue_poll_interval,
            namespace: self.queue_namespace.clone(),
        })
    }

    /// Where to export spans, when `--otlp-endpoint` is set.
    pub fn otlp(&self) -> Option<OtlpOptions> {
        self.otlp_endpoint.as_ref().map(|endpoint| OtlpOptions {
            endpoint: endpoint.clone(),
            service_name: self.otlp_service_name.clone(),
        })
    }

    pub fn app_config(&self, role: Role) -> AppConfig {
        AppConfig {
            role,
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            database_url: self.database_url.clone(),
            store: StoreOptions {
                clock: Default::default(),
                sqlite_synchronous_full: self.sqlite_sync == SqliteSync::Full,
                sqlite_max_size: self.sqlite_max_size,
                read_connections: self.read_connections,
                max_stream_bytes: self.max_stream_bytes,
            },
            worker: WorkerOptions {
                concurrency: self.concurrency as usize,
                lease: self.lease,
                shutdown_timeout: self.shutdown_timeout,
                poll_interval: self.poll_interval,
                agents: self.agents.clone(),
                webhooks: crate::jobs::WebhookOptions {
                    secret: self.webhook_secret.clone().map(crate::domain::Secret),
                    ..Default::default()
                },
                max_result_bytes: self.max_result_bytes,
                agent_limits: std::sync::Arc::new(self.agent_limit.iter().cloned().collect()),
                secrets: self.secrets().expect("checked by `validate`"),
                max_restarts: self.max_restarts,
                redis: self.redis(),
                egress: EgressPolicy::new(self.http_allow.clone()),
                retention: RetentionOptions {
                    succeeded: self.retain_succeeded,
                    failed: self.retain_failed,
                    cancelled: self.retain_cancelled,
                    max_runs: self.retain_max_runs,
                    ..Default::default()
                },
            },
            http: HttpOptions {
                body_limit: self.body_limit,
                request_timeout: self.request_timeout,
                idle_timeout: self.idle_timeout,
                max_connections: self.max_connections,
                max_inflight_bytes: self.max_inflight_bytes,
                max_streams: self.max_streams,
                max_body_values: self.max_body_values,
                cors_origins: self.cors_origins.clone(),
                signal_secret: self.signal_secret.clone().map(crate::api::Secret),
                signature_tolerance: self.signature_tolerance,
                insecure_no_auth: self.insecure_no_auth,
                token_secret: self.token_secret.clone().map(crate::api::Secret),
                run_token_ttl: self.run_token_ttl,
                tenant_rate_limit: self.tenant_rate_limit,
                tenant_max_active_runs: self.tenant_max_active_runs,
            },
            defaults: RunDefaults {
                max_attempts: self.max_attempts,
                timeout: self.run_timeout,
                backoff: Backoff {
                    base: self.backoff_base,
                    cap: self.backoff_cap,
                },
                idempotency_ttl: self.idempotency_ttl,
                key_concurrency: std::sync::Arc::new(
                    self.key_concurrency.iter().cloned().collect(),
                ),
            },
        }
    }
}
