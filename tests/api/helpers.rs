//! `TestApp`: the real application (same `Application::build` as `main`) on port 0 with a
//! fresh database, plus a few agents that only tests need.
//!
//! The database is a SQLite file by default. With `AGENTQ_TEST_DB=postgres` every test gets
//! a fresh schema in the PostgreSQL server at `AGENTQ_TEST_DATABASE_URL` (or
//! `DATABASE_URL`), so the same suite checks both dialects. With
//! `AGENTQ_TEST_DELIVERY=redis` every app (and every child process, see `process.rs`)
//! delivers through the Redis at `AGENTQ_TEST_QUEUE_URL` (or `REDIS_URL`), under a key
//! namespace of its database's own. `scripts/test.sh` runs all four combinations.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentq::api::{HttpOptions, RunDefaults};
use agentq::app::{AppConfig, Application, Role, builtin_agents};
use agentq::domain::Backoff;
use agentq::jobs::{Agent, AgentError, AgentRegistry, RedisOptions, RunContext, WorkerOptions};
use agentq::store::{Store, StoreOptions};
use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::support::db::TestDb;
use crate::support::eventually::eventually;
pub use crate::support::store::{echo_only, insert, new_run, open_store, temp_store};

pub struct TestApp {
    pub addr: SocketAddr,
    /// The app's database URL, for a second process or a direct `Store`.
    pub db_url: String,
    pub client: reqwest::Client,
    pub probe: Arc<Probe>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    db: Option<TestDb>,
}

/// What the test agents saw, for assertions.
#[derive(Default)]
pub struct Probe {
    pub cancelled: AtomicUsize,
    pub started: AtomicUsize,
    /// Steps the `stepper` agent has run, over all attempts.
    pub steps_run: AtomicUsize,
    /// While set, the `switch` agent fails permanently.
    pub failing: std::sync::atomic::AtomicBool,
}

/// With `AGENTQ_TEST_DELIVERY=redis`: the Redis to deliver through and the key namespace
/// of this database (the same for every process on it, distinct between tests).
pub fn redis_delivery(db_url: &str) -> Option<(String, String)> {
    match std::env::var("AGENTQ_TEST_DELIVERY").as_deref() {
        Ok("redis") => {}
        Ok("db") | Err(_) => return None,
        Ok(other) => panic!("AGENTQ_TEST_DELIVERY must be db or redis, not {other}"),
    }
    let url = std::env::var("AGENTQ_TEST_QUEUE_URL")
        .or_else(|_| std::env::var("REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let digest = sha2::Sha256::digest(db_url.as_bytes());
    let namespace = format!("agentq-test-{:x}", digest)[..28].to_owned();
    Some((url, namespace))
}

pub fn config(db_url: &str) -> AppConfig {
    AppConfig {
        role: Role::Serve,
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        database_url: db_url.to_owned(),
        store: StoreOptions::default(),
        worker: WorkerOptions {
            concurrency: 8,
            lease: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            agents: None,
            webhooks: Default::default(),
            max_result_bytes: 512 * 1024,
            agent_limits: Default::default(),
            retention: Default::default(),
            redis: redis_delivery(db_url).map(|(url, namespace)| RedisOptions {
                tls: Default::default(),
                url,
                dispatch_window: 1000,
                poll_interval: Duration::from_millis(25),
                namespace,
            }),
            egress: Default::default(),
            secrets: Default::default(),
            max_restarts: 10,
        },
        http: HttpOptions::default(),
        defaults: RunDefaults {
            max_attempts: 3,
            timeout: Duration::from_secs(60),
            backoff: Backoff {
                base: Duration::from_millis(10),
                cap: Duration::from_millis(50),
            },
            idempotency_ttl: Duration::from_secs(3600),
            key_concurrency: Default::default(),
        },
    }
}

/// `--http-allow` with these patterns, for `TestApp::spawn_with` (test servers listen on
/// 127.0.0.1, which the default egress policy refuses).
pub fn allow(patterns: &[&str]) -> impl FnOnce(&mut AppConfig) + use<> {
    let policy = agentq::jobs::EgressPolicy::new(
        patterns
            .iter()
            .map(|p| p.parse().expect("a valid pattern"))
            .collect(),
    );
    move |c| c.worker.egress = policy
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut AppConfig)) -> Self {
        let db = TestDb::new().await;
        let mut app = Self::spawn_on(&db.url, adjust).await;
        app.db = Some(db);
        app
    }

    /// Starts an app whose database already holds API keys for these (tenant, scopes);
    /// returns the keys in the same order. With keys, every API request needs one.
    pub async fn spawn_with_keys(keys: &[(&str, &str)]) -> (Self, Vec<String>) {
        Self::spawn_with_keys_and(keys, |_| {}).await
    }

    /// `spawn_with_keys` with the configuration adjusted.
    pub async fn spawn_with_keys_and(
        keys: &[(&str, &str)],
        adjust: impl FnOnce(&mut AppConfig),
    ) -> (Self, Vec<String>) {
        let db = TestDb::new().await;
        let store = Store::connect(&db.url, &Default::default()).await.unwrap();
        store.migrate().await.unwrap();
        let mut tokens = Vec::new();
        for (tenant, scopes) in keys {
            tokens.push(create_key(&store, tenant, scopes).await);
        }
        store.close().await;
        let mut app = Self::spawn_on(&db.url, adjust).await;
        app.db = Some(db);
        (app, tokens)
    }

    /// Starts an app on an existing database (a restart).
    pub async fn spawn_on(db_url: &str, adjust: impl FnOnce(&mut AppConfig)) -> Self {
        let mut config = config(db_url);
        adjust(&mut config);
        let probe = Arc::new(Probe::default());
        let app = Application::build(config, test_agents(probe.clone()))
            .await
            .expect("the application builds");
        let addr = app.local_addr().expect("serve role listens");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            db_url: db_url.to_owned(),
            client: reqwest::Client::new(),
            probe,
            stop: Some(stop),
            task: Some(task),
            db: None,
        }
    }

    /// Graceful shutdown, as on SIGTERM; returns once the app has stopped.
    pub async fn shutdown(mut self) -> Option<TestDb> {
        self.stop.take().map(|s| s.send(()));
        if let Some(task) = self.task.take() {
            task.await
                .expect("app task")
                .expect("app shuts down cleanly");
        }
        self.db.take()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post_run(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/runs"))
            .json(&body)
            .send()
            .await
            .expect("POST /v1/runs")
    }

    /// `POST /v1/runs/{id}/cancel`, whatever the answer.
    pub async fn cancel(&self, id: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/runs/{id}/cancel")))
            .send()
            .await
            .expect("POST cancel")
    }

    /// Creates a run and returns its id, asserting the 202.
    pub async fn create(&self, body: Value) -> String {
        let response = self.post_run(body).await;
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        let run: Value = response.json().await.unwrap();
        run["id"].as_str().unwrap().to_owned()
    }

    /// GETs `path` and parses the JSON body, whatever the status.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("a JSON body")
    }

    pub async fn get_run(&self, id: &str) -> Value {
        let response = self
            .client
            .get(self.url(&format!("/v1/runs/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        let body = self.get_json(&format!("/v1/runs/{id}/events")).await;
        body["events"].as_array().unwrap().clone()
    }

    /// Polls the run until `done` holds, failing after `within`.
    pub async fn wait_for(
        &self,
        id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let what = format!("run {id} reaches the expected state");
        let run = eventually(within, &what, || async {
            let run = self.get_run(id).await;
            if done(&run) { Ok(run) } else { Err(run) }
        })
        .await;
        crate::support::lifecycle::assert_lifecycle(&run, &self.events(id).await);
        run
    }

    pub async fn wait_for_status(&self, id: &str, status: &str, within: Duration) -> Value {
        self.wait_for(id, within, |r| r["status"] == status).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A request with `Authorization: Bearer <credential>` (none when empty).
pub fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    credential: &str,
) -> reqwest::RequestBuilder {
    let request = app.client.request(method, app.url(path));
    if credential.is_empty() {
        request
    } else {
        request.bearer_auth(credential)
    }
}

pub async fn status_of(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
) -> reqwest::StatusCode {
    call(app, method, path, key).send().await.unwrap().status()
}

pub async fn create_as(app: &TestApp, key: &str, body: Value) -> Value {
    let response = call(app, reqwest::Method::POST, "/v1/runs", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    response.json().await.unwrap()
}

pub async fn signal_as(app: &TestApp, key: &str, id: &str, name: &str) -> reqwest::StatusCode {
    call(
        app,
        reqwest::Method::POST,
        &format!("/v1/runs/{id}/signals"),
        key,
    )
    .json(&json!({"name": name}))
    .send()
    .await
    .unwrap()
    .status()
}

/// Polls the run (with `key`) until it has `status`, for up to 5 s; the run then.
pub async fn wait_status(app: &TestApp, key: &str, id: &str, status: &str) -> Value {
    let what = format!("run {id} becomes {status}");
    eventually(Duration::from_secs(5), &what, || async {
        let run: Value = call(app, reqwest::Method::GET, &format!("/v1/runs/{id}"), key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["status"] == status {
            Ok(run)
        } else {
            Err(run)
        }
    })
    .await
}

/// The worker's readiness problem once it has one (cannot reach Redis, say).
pub async fn worker_problem(app: &TestApp) -> String {
    eventually(Duration::from_secs(10), "the worker is unready", || async {
        let ready: Value = app.get_json("/readyz").await;
        match ready["checks"]["worker"].as_str() {
            Some(problem) if problem != "ok" => Ok(problem.to_owned()),
            _ => Err(ready),
        }
    })
    .await
}

pub fn event_types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

pub fn test_agents(probe: Arc<Probe>) -> AgentRegistry {
    let mut registry = builtin_agents();
    registry
        .register(Patient {
            probe: probe.clone(),
        })
        .unwrap()
        .register(Panicker)
        .unwrap()
        .register(Switch {
            probe: probe.clone(),
        })
        .unwrap()
        .register(Stepper { probe })
        .unwrap()
        .register(Undo)
        .unwrap()
        .register(Gather)
        .unwrap()
        .register(Waiter)
        .unwrap()
        .register(crate::approval_flow::ApprovalFlow)
        .unwrap()
        .register(NulWriter)
        .unwrap()
        .register(Witness)
        .unwrap();
    registry
}

/// Answers what its context tells of the run: tenant, metadata and who created it.
struct Witness;

#[async_trait]
impl Agent for Witness {
    fn name(&self) -> &str {
        "witness"
    }

    async fn run(&self, ctx: RunContext, _input: Value) -> Result<Value, AgentError> {
        Ok(json!({
            "tenant": ctx.tenant(),
            "metadata": ctx.metadata(),
            "created_by": ctx.created_by(),
        }))
    }
}

/// Hands agentq text holding NUL characters (U+0000), which PostgreSQL cannot store: a
/// progress and a log message and a checkpoint, then an error (`input.fail`) or a result.
struct NulWriter;

#[async_trait]
impl Agent for NulWriter {
    fn name(&self) -> &str {
        "nul_writer"
    }

    async fn run(&self, ctx: RunContext, input: Value) -> Result<Value, AgentError> {
        ctx.progress(50, Some("half\u{0}way".to_owned())).await;
        ctx.log("info", "a\u{0}b").await;
        let refused = ctx.checkpoint(json!({"note": "x\u{0}"})).await.unwrap_err();
        if input["fail"] == true {
            let message = format!("broke\u{0}here; checkpoint: {}", refused.message);
            return Err(AgentError::permanent(message));
        }
        Ok(json!({"text": "a\u{0}b"}))
    }
}

/// Waits `input.ms` unless cancelled first; counts starts and cancellations.
struct Patient {
    probe: Arc<Probe>,
}

#[async_trait]
impl Agent for Patient {
    fn name(&self) -> &str {
        "patient"
    }

    fn input_schema(&self) -> Value {
        json!({"type": "object", "required": ["ms"], "properties": {"ms": {"type": "integer"}}})
    }

    async fn run(&self, ctx: RunContext, input: Value) -> Result<Value, AgentError> {
        self.probe.started.fetch_add(1, Ordering::SeqCst);
        let ms = input["ms"].as_u64().unwrap_or(0);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!({"waited_ms": ms})),
            _ = ctx.cancelled().cancelled() => {
                self.probe.cancelled.fetch_add(1, Ordering::SeqCst);
                Err(AgentError::retryable("stopped by cancellation"))
            }
        }
    }
}

struct Panicker;

#[async_trait]
impl Agent for Panicker {
    fn name(&self) -> &str {
        "panicker"
    }

    async fn run(&self, _ctx: RunContext, _input: Value) -> Result<Value, AgentError> {
        panic!("the agent fell over")
    }
}

/// Fails permanently while `probe.failing` is set, succeeds otherwise.
struct Switch {
    probe: Arc<Probe>,
}

#[async_trait]
impl Agent for Switch {
    fn name(&self) -> &str {
        "switch"
    }

    async fn run(&self, _ctx: RunContext, _input: Value) -> Result<Value, AgentError> {
        if self.probe.failing.load(Ordering::SeqCst) {
            Err(AgentError::permanent("switched off"))
        } else {
            Ok(json!("switched on"))
        }
    }
}

/// Runs one step per attempt, saving a checkpoint after each, and fails (retryably) until
/// `input.steps` are done: a retry must resume after the saved step.
struct Stepper {
    probe: Arc<Probe>,
}

#[async_trait]
impl Agent for Stepper {
    fn name(&self) -> &str {
        "stepper"
    }

    async fn run(&self, ctx: RunContext, input: Value) -> Result<Value, AgentError> {
        let steps = input["steps"].as_u64().unwrap_or(1);
        let start = ctx
            .saved_checkpoint()
            .and_then(|c| c["done"].as_u64())
            .unwrap_or(0);
        let done = start + 1;
        self.probe.steps_run.fetch_add(1, Ordering::SeqCst);
        ctx.checkpoint(json!({ "done": done })).await?;
        if done < steps {
            return Err(AgentError::retryable(format!(
                "step {done} of {steps} saved"
            )));
        }
        Ok(json!({ "done": done, "resumed_from": start }))
    }
}

/// A compensation agent: reports which failed run it undid.
struct Undo;

#[async_trait]
impl Agent for Undo {
    fn name(&self) -> &str {
        "undo"
    }

    fn input_schema(&self) -> Value {
        json!({"type": "object", "required": ["failed_run"],
               "properties": {"failed_run": {"type": "object", "required": ["id", "error"]}}})
    }

    async fn run(&self, _ctx: RunContext, input: Value) -> Result<Value, AgentError> {
        Ok(json!({
            "undid": input["failed_run"]["id"],
            "because": input["failed_run"]["error"]["message"],
            "note": input["input"],
        }))
    }
}

/// Returns the results of the runs it depends on.
struct Gather;

#[async_trait]
impl Agent for Gather {
    fn name(&self) -> &str {
        "gather"
    }

    async fn run(&self, ctx: RunContext, _input: Value) -> Result<Value, AgentError> {
        Ok(json!(ctx.dependencies()))
    }
}

/// Waits for the signal `go` (`input.timeout_ms`, `input.resume` on timeout) and returns
/// what it got.
struct Waiter;

#[async_trait]
impl Agent for Waiter {
    fn name(&self) -> &str {
        "waiter"
    }

    async fn run(&self, ctx: RunContext, input: Value) -> Result<Value, AgentError> {
        let timeout = Duration::from_millis(input["timeout_ms"].as_u64().unwrap_or(60_000));
        let on_timeout = if input["resume"].as_bool().unwrap_or(false) {
            agentq::jobs::OnTimeout::Resume
        } else {
            agentq::jobs::OnTimeout::Fail
        };
        let signal = ctx.wait_for_any(&["go"], timeout, on_timeout).await?;
        Ok(json!({ "got": signal.payload, "timed_out": signal.timed_out }))
    }
}

/// Stores a new API key, as `agentq keys create` does, and returns it.
pub async fn create_key(store: &Store, tenant: &str, scopes: &str) -> String {
    let key = agentq::domain::NewKey::generate();
    let info = agentq::store::ApiKeyInfo {
        id: key.id.clone(),
        tenant: tenant.to_owned(),
        scopes: agentq::domain::Scopes::parse(scopes).unwrap().to_string(),
        name: None,
        created_at: chrono::Utc::now().timestamp_millis(),
        revoked_at: None,
    };
    store.insert_key(&info, &key.secret_hash).await.unwrap();
    key.token
}

/// One block of a server-sent event stream that carries data: its fields.
pub struct SseBlock {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Reads a whole `text/event-stream` response (it must end within `within`) into its
/// blocks with data; keep-alive comments are left out.
pub async fn sse_blocks(response: reqwest::Response, within: Duration) -> Vec<SseBlock> {
    use futures::StreamExt;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = tokio::time::timeout(within, async {
        let mut text = String::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        text
    })
    .await
    .expect("the stream ends");
    body.split("\n\n")
        .filter(|block| block.contains("data:"))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            SseBlock {
                id: field("id:"),
                event: field("event:"),
                data: field("data:").unwrap_or_default(),
            }
        })
        .collect()
}
