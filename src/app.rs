//! Wiring: one construction path (`Application::build`) used by `main` and by every test.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::process::ExitCode;

use anyhow::Context;
use clap::error::ErrorKind;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState, Auth};
use crate::config::file::ParseError;
pub use crate::config::{AppConfig, Role};
use crate::config::{Cli, Command, ConfigCommand, Settings};
use crate::jobs::builtin::{Echo, Http, HttpOptions as HttpAgentOptions};
use crate::jobs::{AgentRegistry, WorkerStatus, run_worker, served_agents};
use crate::store::Store;
use crate::telemetry::{Metrics, redacted};

/// The registry with the built-in agents (`echo`, `http`).
pub fn builtin_agents() -> AgentRegistry {
    let mut registry = AgentRegistry::new();
    registry
        .register(Echo)
        .and_then(|r| r.register(Http::new(HttpAgentOptions::default())))
        .expect("built-in agents have valid names and schemas");
    registry
}

/// How long the database connections get to close at the end.
const STORE_CLOSE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Application {
    config: AppConfig,
    store: Store,
    metrics: Metrics,
    registry: Arc<AgentRegistry>,
    listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    auth: Option<Auth>,
}

/// With metrics over OTLP, what the writer counted and the queue's gauges are read at each
/// export, on the exporter's own thread: the queue is read on the runtime and waited for
/// (up to 5 s; without it the gauges are left out, as in a scrape).
fn observe_over_otlp(store: &Store) {
    let (store, runtime) = (store.clone(), tokio::runtime::Handle::current());
    crate::telemetry::observe_over_otlp(move || {
        let (tx, rx) = std::sync::mpsc::channel();
        let reading = store.clone();
        runtime.spawn(async move {
            let _ = tx.send(reading.queue_load(crate::jobs::GONE_AFTER).await);
        });
        let load = match rx.recv_timeout(std::time::Duration::from_secs(5)) {
            Ok(Ok(load)) => Some(load),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "OTLP metrics: could not read the queue's gauges");
                None
            }
            Err(_) => None,
        };
        api::metrics_snapshot(&store, load)
    });
}

/// Connects to the database, naming `--database-url` (and for PostgreSQL its TLS
/// parameters, which most failures to reach a managed server come down to) on failure.
pub(crate) async fn open_store(config: &AppConfig) -> anyhow::Result<Store> {
    let url = &config.database_url;
    Store::connect(url, &config.store).await.with_context(|| {
        let tls = if url.starts_with("postgres") {
            " (with its sslmode, sslrootcert, sslcert and sslkey)"
        } else {
            ""
        };
        format!("--database-url {}{tls}: cannot open it", redacted(url))
    })
}

impl Application {
    /// `--max-connections` and `--idle-timeout`, the cap lowered to fit the open-files
    /// limit (raised to its hard limit first).
    fn connection_limits(&self) -> api::connections::ConnectionLimits {
        let files = api::connections::raise_open_files_limit();
        let http = &self.config.http;
        let limits =
            api::connections::ConnectionLimits::new(http.max_connections, http.idle_timeout, files);
        if limits.max < http.max_connections {
            tracing::warn!(
                max_connections = limits.max,
                open_files = files,
                "--max-connections lowered to fit the open-files limit (raise it with `ulimit -n` or LimitNOFILE=)"
            );
        }
        limits
    }

    /// Opens and migrates the database and binds the listener (port 0 picks a free port).
    pub async fn build(config: AppConfig, registry: AgentRegistry) -> anyhow::Result<Self> {
        if config.role.runs_workers() {
            served_agents(&registry, config.worker.agents.as_deref())?;
            limited_agents_exist(&registry, config.worker.agent_limits.keys())
                .map_err(anyhow::Error::msg)?;
        }
        let store = open_store(&config).await?;
        store.migrate().await.context("applying migrations")?;
        if config.role.runs_workers() && config.worker.redis.is_some() {
            store
                .enable_redis_delivery()
                .await
                .context("creating the indexes of Redis delivery")?;
        }
        let (listener, auth) = if config.role.serves_http() {
            let auth = auth_for(&config, &store).await?;
            let listener = TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("listening on {}", config.listen))?;
            (Some(listener), Some(auth))
        } else {
            (None, None)
        };
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening on {addr} (--metrics-listen)"))?,
            ),
            None => None,
        };
        observe_over_otlp(&store);
        Ok(Self {
            config,
            store,
            metrics: Metrics::new(),
            registry: Arc::new(registry),
            listener,
            metrics_listener,
            auth,
        })
    }

    /// The bound address, when this process serves HTTP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` completes, then stops accepting requests and claims, lets
    /// in-flight work finish (up to the shutdown timeout), hands the rest back and closes
    /// the database.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        let worker_status = match self.config.role.runs_workers() {
            true => {
                let agents = served_agents(&self.registry, self.config.worker.agents.as_deref())?;
                let status = WorkerStatus::new(agents.to_vec(), self.config.worker.concurrency);
                Some(Arc::new(status))
            }
            false => None,
        };
        let limits = self.connection_limits();
        let http = self.listener.zip(self.auth).map(|(listener, auth)| {
            let state = ApiState {
                store: self.store.clone(),
                registry: self.registry.clone(),
                declared: crate::jobs::DeclaredAgents::new(self.store.clone()),
                work: Arc::new(api::WorkOptions {
                    lease: self.config.worker.lease,
                    poll_interval: self.config.worker.poll_interval,
                    agent_limits: (!self.config.worker.agent_limits.is_empty())
                        .then(|| self.config.worker.agent_limits.clone()),
                    max_result_bytes: self.config.worker.max_result_bytes,
                    max_claim_wait: self
                        .config
                        .http
                        .request_timeout
                        .saturating_sub(std::time::Duration::from_secs(2))
                        .min(std::time::Duration::from_millis(api::MAX_CLAIM_WAIT_MS)),
                    stopping: token.clone(),
                    claimed: Default::default(),
                }),
                defaults: Arc::new(self.config.defaults.clone()),
                signal_secret: self.config.http.signal_secret.clone(),
                signature_tolerance: self.config.http.signature_tolerance,
                secrets: self.config.worker.secrets.clone(),
                worker: worker_status.clone(),
                auth,
                limits: Arc::new(api::Limits::new(
                    self.config.http.tenant_rate_limit,
                    self.config.http.tenant_max_active_runs,
                )),
                metrics: self.metrics.clone(),
                streams: Arc::new(api::StreamSlots::new(self.config.http.max_streams)),
            };
            let app = api::router(state, &self.config.http);
            let metrics = self.metrics.clone();
            if let Ok(addr) = listener.local_addr() {
                // where a newcomer goes next (0.0.0.0 is reached as localhost)
                let host = match addr.ip() {
                    ip if ip.is_unspecified() => format!("localhost:{}", addr.port()),
                    _ => addr.to_string(),
                };
                tracing::info!(
                    dashboard = %format!("http://{host}/ui/"),
                    docs = %format!("http://{host}/docs"),
                    health = %format!("http://{host}/readyz"),
                    "agentq is up"
                );
            }
            spawn_server(listener, app, limits, token.clone(), Some(metrics), "HTTP")
        });
        let scrape_stop = CancellationToken::new();
        let scrape = self.metrics_listener.map(|listener| {
            let app = api::metrics_router(api::Scrape {
                store: self.store.clone(),
                registry: self.registry.clone(),
                metrics: self.metrics.clone(),
                one_at_a_time: Default::default(),
            });
            if !listener.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
                tracing::warn!("--metrics-listen serves without a key: keep its address private");
            }
            // stopped after the worker, so what it counts while it drains can be scraped
            spawn_server(listener, app, limits, scrape_stop.clone(), None, "metrics")
        });
        let worker = worker_status.map(|status| {
            tokio::spawn(run_worker(
                self.store.clone(),
                self.registry.clone(),
                self.config.worker.clone(),
                status,
                self.metrics.clone(),
                token.clone(),
            ))
        });
        // without a worker here, this process still takes back the runs of external workers
        // that stopped heartbeating (and ends runs past their time limits)
        let sweeper = (worker.is_none() && http.is_some()).then(|| {
            tokio::spawn(crate::jobs::sweep(
                self.store.clone(),
                self.config.worker.lease,
                token.clone(),
            ))
        });
        // every process fires the schedules that are due (each tick once over all of them)
        let ticker = tokio::spawn(crate::jobs::tick_schedules(
            self.store.clone(),
            token.clone(),
        ));
        // the worker ends before shutdown only when it gave up (--max-restarts): then the
        // whole process stops, and exits non-zero
        let mut worker = worker;
        let gave_up = match worker.as_mut() {
            Some(running) => tokio::select! {
                () = shutdown => None,
                ended = running => Some(ended),
            },
            None => {
                shutdown.await;
                None
            }
        };
        tracing::info!("shutting down");
        token.cancel();
        if let Some(http) = http {
            http.await.context("HTTP server task")??;
        }
        // a worker that gave up is an error, reported once the rest has stopped cleanly
        let worker_ended: anyhow::Result<()> = match (gave_up, worker) {
            (Some(ended), _) => match ended.context("worker task")? {
                Err(e) => Err(e.into()),
                Ok(()) => Err(anyhow::anyhow!("the worker stopped on its own")),
            },
            (None, Some(worker)) => worker.await.context("worker task")?.map_err(Into::into),
            (None, None) => Ok(()),
        };
        if let Some(sweeper) = sweeper {
            sweeper.await.context("sweeper task")?;
        }
        ticker.await.context("schedule ticker task")?;
        scrape_stop.cancel();
        if let Some(scrape) = scrape {
            scrape.await.context("metrics server task")??;
        }
        // a database that is away (why a worker gives up) must not hold the exit forever
        if tokio::time::timeout(STORE_CLOSE_WITHIN, self.store.close())
            .await
            .is_err()
        {
            tracing::warn!("the database connections did not close in time; exiting anyway");
        }
        worker_ended?;
        Ok(())
    }
}

/// Serves `app` on `listener` within `limits` until `stop` is cancelled, then finishes the
/// open requests.
fn spawn_server(
    listener: TcpListener,
    app: axum::Router,
    limits: api::connections::ConnectionLimits,
    stop: CancellationToken,
    metrics: Option<Metrics>,
    what: &'static str,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, max_connections = limits.max, "serving {what}");
    tokio::spawn(async move {
        api::connections::serve(listener, app, limits, stop, metrics).await;
        Ok(())
    })
}

/// The `agentq` command line over `agents`: what the binary runs, and what an application
/// with its own agents calls from its `main`. Parses the settings (a bad one prints one line
/// and exits with code 2), runs the chosen role until SIGINT or SIGTERM, shuts down
/// gracefully, and returns the process exit code.
pub fn main_with(agents: AgentRegistry) -> ExitCode {
    let parsed = match crate::config::file::parse(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(ParseError::Clap(e))
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(ParseError::Clap(e)) => {
            return usage_error(e.to_string().lines().next().unwrap_or("invalid arguments"));
        }
        Err(ParseError::File(message)) => return usage_error(&message),
    };
    let cli = &parsed.cli;
    if let Err(message) = cli.settings.validate() {
        return usage_error(&message);
    }
    if let Err(e) = served_agents(&agents, cli.settings.agents.as_deref()) {
        return usage_error(&format!("--agents: {e}"));
    }
    // a setting naming no agent is a usage error (exit 2, not restarted by systemd)
    if let Err(e) = limited_agents_exist(&agents, cli.settings.agent_limit.iter().map(|(a, _)| a)) {
        return usage_error(&e);
    }
    if cli.command == Some(Command::Config(ConfigCommand::Check)) {
        let names = cli
            .settings
            .secrets()
            .map(|s| s.names().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default();
        print!("{}", parsed.describe(&names));
        return ExitCode::SUCCESS;
    }
    let cli = parsed.cli;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match runtime.block_on(run(cli, agents)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How the API authenticates. Without live API keys it serves openly only on a loopback
/// address or with `--insecure-no-auth`, and says so; elsewhere it refuses to start.
async fn auth_for(config: &AppConfig, store: &Store) -> anyhow::Result<Auth> {
    let http = &config.http;
    let loopback = config.listen.ip().is_loopback();
    let keys = store.count_keys().await.context("reading API keys")?;
    if keys == 0 {
        if loopback {
            tracing::warn!(listen = %config.listen, "no API keys: serving without auth on a loopback address; `agentq keys create --tenant NAME` makes one and then every request needs a key");
        } else if http.insecure_no_auth {
            tracing::warn!(listen = %config.listen, "no API keys and --insecure-no-auth: anyone who reaches this address can create, read and cancel runs");
        } else {
            anyhow::bail!(
                "refusing to serve on {} without API keys: create one with `agentq keys create --tenant NAME`, listen on a loopback address, or pass --insecure-no-auth",
                config.listen
            );
        }
    }
    let open = if http.insecure_no_auth {
        api::OpenMode::Anyone
    } else if loopback {
        api::OpenMode::Loopback
    } else {
        api::OpenMode::Never
    };
    Auth::new(
        store.clone(),
        open,
        http.token_secret.as_ref().map(|s| s.0.as_str()),
        http.run_token_ttl,
        &http.cors_origins,
    )
    .await
    .context("reading the run token secret")
}

/// `--agent-limit` names agents: compiled in, or (any valid name) declared by external
/// workers, whose claims through the API obey it too.
fn limited_agents_exist<'a>(
    _registry: &AgentRegistry,
    mut limited: impl Iterator<Item = &'a String>,
) -> Result<(), String> {
    match limited.find(|a| !crate::jobs::valid_agent_name(a)) {
        Some(bad) => Err(format!(
            "--agent-limit names `{bad}`, which is not an agent name (1–64 of a-z, 0-9, `_`, `-`, `.`)"
        )),
        None => Ok(()),
    }
}

/// A bad setting: one line on stderr and exit code 2.
fn usage_error(message: &str) -> ExitCode {
    let message = message.trim_start_matches("error: ");
    eprintln!("agentq: {message} (see agentq --help)");
    ExitCode::from(2)
}

async fn run(cli: Cli, agents: AgentRegistry) -> anyhow::Result<()> {
    let role = match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&crate::api::openapi())?);
            return Ok(());
        }
        Command::Migrate => {
            crate::telemetry::init(cli.settings.log_format, None)?;
            let config = cli.settings.app_config(Role::Worker);
            let store = open_store(&config).await?;
            store.migrate().await?;
            store.close().await;
            tracing::info!(database = %redacted(&config.database_url), "migrations applied");
            return Ok(());
        }
        Command::Keys(command) => {
            let config = cli.settings.app_config(Role::Worker);
            return crate::keys::run(command, &config).await;
        }
        // answered by `main_with`, which has the parsed matches, before any runtime starts
        Command::Config(ConfigCommand::Check) => return Ok(()),
        Command::Serve => Role::Serve,
        Command::Api => Role::Api,
        Command::Worker => Role::Worker,
    };
    let tracing = crate::telemetry::init(cli.settings.log_format, cli.settings.otlp().as_ref())?;
    let served = serve(cli.settings, role, agents).await;
    if let Some(tracing) = tracing {
        // after the graceful shutdown, so the last requests' and attempts' spans go too
        let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
    }
    served
}

async fn serve(settings: Settings, role: Role, agents: AgentRegistry) -> anyhow::Result<()> {
    let app = Application::build(settings.app_config(role), agents).await?;
    app.run_until(shutdown_signal()).await
}

/// SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a signal that arrives while the server starts up (it may
/// already answer `/healthz`) then shuts it down gracefully instead of killing it.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => {}
                _ = wait(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
