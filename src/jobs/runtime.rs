//! A worker process's runtime: the apalis worker over the runs table, the lease renewer,
//! the sweeper of expired leases, the retention janitor, and shutdown.
//!
//! Shutdown: when `shutdown` fires the worker stops claiming and in-flight attempts get
//! `shutdown_timeout` to finish. Attempts still running are then told to stop and, within
//! a short grace, hand their runs back; finally every run this worker still holds is
//! handed back. A handed-back run keeps its attempt number: the interrupted attempt is not
//! counted.

use std::sync::Arc;
use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis_core::monitor::Monitor;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::ext::parallelize::ParallelizeExt;
use tokio_util::sync::CancellationToken;

use crate::store::{AgentLimits, Fence, Store};
use crate::telemetry::Metrics;

use super::backend::{ClaimsAhead, FetchConfig, runs_backend};
use super::execute::{Executor, InFlight, STOP_GRACE, execute};
use super::presence::{WorkerStatus, heartbeat};
use super::redis::RedisOptions;
use super::retention::{RetentionOptions, keep_tidy};
use super::stop::stop_signal;
use super::supervise::{GiveUp, Supervisor};
use super::webhooks::{WebhookOptions, deliver_webhooks};
use super::{AgentRegistry, EgressClient, EgressPolicy, QueueError};

/// How a worker process runs attempts.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Attempts run at once by this process.
    pub concurrency: usize,
    /// How long a claimed run stays owned without a heartbeat.
    pub lease: Duration,
    /// How long in-flight attempts get to finish at shutdown.
    pub shutdown_timeout: Duration,
    /// How often an idle worker looks for runs it was not woken for.
    pub poll_interval: Duration,
    /// The agents to serve; `None` serves every registered agent.
    pub agents: Option<Vec<String>>,
    /// How completion webhooks are delivered.
    pub webhooks: WebhookOptions,
    /// Deliver through Redis (apalis-redis) instead of claiming from the runs table.
    pub redis: Option<RedisOptions>,
    /// The largest result an agent may return, as JSON bytes; a bigger one fails the
    /// run (permanently: the agent would return it again).
    pub max_result_bytes: usize,
    /// What outbound HTTP (the `http` agent, `ctx.http()`, webhooks) may reach.
    pub egress: EgressPolicy,
    /// How long finished runs are kept (the janitor runs in every worker process).
    pub retention: RetentionOptions,
    /// The most runs of an agent running at once over all workers (`--agent-limit`);
    /// every worker process must be given the same limits.
    pub agent_limits: AgentLimits,
    /// How many times in a row a worker loop that stops on its own is started again
    /// before the worker gives up and the process exits non-zero (`--max-restarts`).
    pub max_restarts: u32,
    /// Named secrets (`--secret`): attempts read them with `ctx.secret(name)`, the `http`
    /// agent puts them in headers; the API checks a run's references against them.
    pub secrets: crate::domain::NamedSecrets,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            lease: Duration::from_secs(15),
            shutdown_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            agents: None,
            webhooks: WebhookOptions::default(),
            redis: None,
            max_result_bytes: 1024 * 1024,
            egress: EgressPolicy::default(),
            retention: RetentionOptions::default(),
            agent_limits: AgentLimits::default(),
            max_restarts: 10,
            secrets: Default::default(),
        }
    }
}

/// The agents a worker will serve, checked against the registry.
pub fn served_agents(
    registry: &AgentRegistry,
    wanted: Option<&[String]>,
) -> Result<Arc<[String]>, QueueError> {
    match wanted {
        None => Ok(registry.names().map(str::to_owned).collect()),
        Some(names) => {
            if let Some(unknown) = names.iter().find(|n| !registry.contains(n)) {
                return Err(QueueError::UnknownAgent(unknown.clone()));
            }
            Ok(names.iter().cloned().collect())
        }
    }
}

/// Runs the worker until `shutdown` fires, then shuts down as described above.
/// `status` is this process's registry entry (see [`WorkerStatus::new`]); its attempts are
/// counted in `metrics`.
pub async fn run_worker(
    store: Store,
    registry: Arc<AgentRegistry>,
    options: WorkerOptions,
    status: Arc<WorkerStatus>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), QueueError> {
    let agents = served_agents(&registry, options.agents.as_deref())?;
    let worker_id = status.id();
    tracing::info!(worker.id = %worker_id, agents = ?agents, concurrency = options.concurrency, "worker starting");
    let inflight = InFlight::default();
    let fetch = FetchConfig {
        store: store.clone(),
        worker_id: worker_id.clone(),
        agents: agents.clone(),
        concurrency: options.concurrency,
        lease: options.lease,
        poll_interval: options.poll_interval,
        status: status.clone(),
        agent_limits: (!options.agent_limits.is_empty()).then(|| options.agent_limits.clone()),
        ahead: Default::default(),
    };
    // the worker loops stop at shutdown, or when one of them gives up
    let stop = shutdown.child_token();
    let claims_ahead = options.redis.is_none().then(|| ClaimsAhead {
        config: fetch.clone(),
        inflight: inflight.clone(),
        stop: stop.clone(),
    });
    let executor = Arc::new(Executor {
        store: store.clone(),
        registry,
        inflight: inflight.clone(),
        status: status.clone(),
        max_result_bytes: options.max_result_bytes,
        agent_limits: options.agent_limits.clone(),
        http: EgressClient::new(
            options.egress.clone(),
            reqwest::Client::builder().user_agent(super::egress::USER_AGENT),
        )
        .expect("a client with default TLS settings builds"),
        metrics,
        secrets: options.secrets.clone(),
        claims_ahead,
    });
    let background = CancellationToken::new();
    let renewer = tokio::spawn(renew_leases(
        store.clone(),
        inflight.clone(),
        options.lease,
        background.clone(),
    ));
    let presence = tokio::spawn(heartbeat(
        store.clone(),
        status.clone(),
        inflight.clone(),
        background.clone(),
    ));
    let sweeper = tokio::spawn(sweep(store.clone(), options.lease, background.clone()));
    let webhooks = tokio::spawn(deliver_webhooks(
        store.clone(),
        options.webhooks.clone(),
        options.egress.clone(),
        background.clone(),
    ));
    let janitor = tokio::spawn(keep_tidy(
        store.clone(),
        options.retention.clone(),
        background.clone(),
    ));

    let give_up = GiveUp::new(stop.clone());
    let supervisor = || {
        Supervisor::new(
            options.max_restarts,
            status.clone(),
            executor.metrics.clone(),
            give_up.clone(),
        )
    };
    match &options.redis {
        None => supervise(&fetch, &executor, &options, supervisor(), &stop).await,
        Some(redis) => {
            let pacing = super::redis::Pacing {
                concurrency: options.concurrency,
                lease: options.lease,
                shutdown_timeout: options.shutdown_timeout,
                poll_interval: options.poll_interval,
            };
            super::redis::deliver(
                redis,
                &executor,
                &agents,
                pacing,
                &status,
                &stop,
                &supervisor,
            )
            .await
        }
    }

    // Attempts still running past the shutdown timeout are told to stop and get a short
    // grace to hand their runs back themselves; whatever this worker still holds after
    // that (agents ignoring their token, runs claimed but never started) is handed back
    // here. Stopping agents first keeps another worker from starting a run while the
    // agent that held it is still working.
    let stopping = inflight.shut_down();
    if stopping > 0 {
        tracing::info!(attempts = stopping, "telling unfinished attempts to stop");
        if !inflight.wait_empty(STOP_GRACE).await {
            tracing::warn!(
                "some agents ignored their cancellation token; handing their runs back anyway"
            );
        }
    }
    match store.release_worker(worker_id.clone()).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(worker.id = %worker_id, runs = n, "handed unfinished runs back to the queue")
        }
        Err(e) => {
            tracing::error!(worker.id = %worker_id, error = %e, "could not hand runs back; they return when their lease expires")
        }
    }
    background.cancel();
    let _ = tokio::join!(renewer, sweeper, webhooks, presence, janitor);
    tracing::info!(worker.id = %worker_id, "worker stopped");
    match give_up.reason() {
        Some(reason) => Err(QueueError::GaveUp(reason)),
        None => Ok(()),
    }
}

/// Runs the apalis monitor until shutdown; if the worker loop stops on its own (claims
/// kept failing), starts it again as its [`Supervisor`] says, or gives up.
async fn supervise(
    fetch: &FetchConfig,
    executor: &Arc<Executor>,
    options: &WorkerOptions,
    mut supervisor: Supervisor,
    shutdown: &CancellationToken,
) {
    loop {
        let (fetch, executor, concurrency) = (fetch.clone(), executor.clone(), options.concurrency);
        let name = fetch.worker_id.to_string();
        let monitor = Monitor::new()
            .register(move |_restarts| {
                WorkerBuilder::new(name.as_str())
                    .backend(runs_backend(fetch.clone()))
                    .concurrency(concurrency)
                    .parallelize(tokio::spawn)
                    .data(executor.clone())
                    .build(execute)
            })
            .should_restart(|_, _| false)
            .shutdown_timeout(options.shutdown_timeout);
        let ended = supervisor
            .watch(monitor.run_with_signal(stop_signal(shutdown)))
            .await;
        if shutdown.is_cancelled() {
            return;
        }
        let reason = match ended {
            Err(e) => format!("the worker loop failed: {e}"),
            Ok(()) => "the worker loop stopped on its own".to_owned(),
        };
        let Some(wait) = supervisor.stopped(&reason) else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// How often executing attempts renew their leases and learn whether they still own their
/// runs: a run cancelled from any process stops its agent within this long.
const RENEW_EVERY: Duration = Duration::from_millis(500);

/// Renews the leases of the attempts this worker is executing, at least three times per
/// lease, and stops any attempt that has lost its run (cancelled, or its lease expired
/// and it was swept).
async fn renew_leases(store: Store, inflight: InFlight, lease: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval((lease / 3).min(RENEW_EVERY));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let fences = inflight.fences();
        if fences.is_empty() {
            continue;
        }
        match store.renew_leases(fences.clone(), lease).await {
            Ok(held) => {
                let held: std::collections::HashSet<Fence> = held.into_iter().collect();
                // an attempt whose outcome committed while its lease was being renewed is
                // not held either; only attempts whose agent still executes lost their run
                for lost in fences.iter().filter(|f| !held.contains(f)) {
                    if inflight.cancel(lost) {
                        let cancelled = store
                            .get_run(lost.run_id)
                            .await
                            .is_ok_and(|r| r.status == crate::domain::RunStatus::Cancelled);
                        if cancelled {
                            tracing::info!(run.id = %lost.run_id, run.attempt = lost.attempt, "run cancelled; stopping its attempt");
                        } else {
                            tracing::warn!(run.id = %lost.run_id, run.attempt = lost.attempt, "attempt lost its run; stopping it");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "renewing leases failed"),
        }
    }
}

/// Takes back runs whose worker stopped heartbeating, and fails due runs past their
/// deadline or expiry.
/// Takes back runs whose lease ran out and ends runs past a time limit, until `stop`. Every
/// worker process runs it, and so does an API process without a worker (the external
/// workers it serves hold leases too).
pub async fn sweep(store: Store, lease: Duration, stop: CancellationToken) {
    let every = (lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match store.sweep_expired().await {
            Ok(s) => {
                if s.retried + s.failed > 0 {
                    tracing::warn!(
                        retried = s.retried,
                        failed = s.failed,
                        "took back runs whose worker stopped heartbeating"
                    )
                }
                if s.timed_out > 0 {
                    tracing::info!(
                        runs = s.timed_out,
                        "ended runs past a time limit (deadline, expiry, wait)"
                    )
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweeping expired leases failed"),
        }
    }
}
