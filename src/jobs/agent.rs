//! The agent interface applications implement, and the context a run's attempt gets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use crate::domain::{Progress, RunId, Signal, StreamPart};
use crate::store::{ClaimedRun, Fence, Store, Streamed};

use super::EgressClient;

/// A named unit of work registered in-process.
///
/// `run` is called once per attempt. Return `Ok(result)` to succeed,
/// [`AgentError::retryable`] for a failure worth retrying (network, rate limit, a flaky
/// dependency) or [`AgentError::permanent`] when retrying cannot help (bad input, a 4xx).
/// Long-running agents should watch [`RunContext::cancelled`]: it fires on timeout and when
/// the worker hands the run back at shutdown. Blocking or CPU-heavy work belongs in
/// `tokio::task::spawn_blocking`, off the async threads.
#[async_trait]
pub trait Agent: Send + Sync + 'static {
    /// The name clients use in `POST /v1/runs` (`[a-z0-9_.-]`, at most 64 characters).
    fn name(&self) -> &str;

    /// One line for `GET /v1/agents`.
    fn description(&self) -> &str {
        ""
    }

    /// A JSON Schema the run's `input` must satisfy; checked when the run is created.
    fn input_schema(&self) -> Value {
        serde_json::json!({})
    }

    async fn run(&self, ctx: RunContext, input: Value) -> Result<Value, AgentError>;
}

/// Why an attempt failed, and whether another attempt may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub message: String,
    pub retryable: bool,
    /// Set by [`RunContext::wait_for`]: not a failure, the run suspends.
    pub(crate) wait: Option<WaitRequest>,
}

/// A run suspending itself until a signal arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WaitRequest {
    pub(crate) signals: Vec<String>,
    pub(crate) timeout: Duration,
    pub(crate) resume_on_timeout: bool,
}

/// What a wait does when no signal arrives in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// The run fails as `wait_timeout`.
    Fail,
    /// The agent is called again and the wait returns a signal with `timed_out` set.
    Resume,
}

impl AgentError {
    /// A failure another attempt may fix; retried while attempts remain.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            wait: None,
        }
    }

    /// A failure no retry can fix; the run fails at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            wait: None,
        }
    }
}

/// What an attempt can see of its run and report back. Cheap to clone.
#[derive(Clone)]
pub struct RunContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    fence: Fence,
    max_attempts: u32,
    tenant: String,
    metadata: BTreeMap<String, String>,
    created_by: Option<String>,
    store: Store,
    cancel: CancellationToken,
    saved: Mutex<Option<Value>>,
    dependencies: BTreeMap<RunId, Value>,
    http: EgressClient,
    secrets: crate::domain::NamedSecrets,
}

/// The largest checkpoint an agent may save, serialised.
pub const MAX_CHECKPOINT_BYTES: usize = 1024 * 1024;

/// Why `state` cannot be saved as a checkpoint, if it cannot: larger than
/// [`MAX_CHECKPOINT_BYTES`], or holding a NUL character no database stores.
pub(crate) fn check_checkpoint(state: &Value) -> Result<(), String> {
    let text = state.to_string();
    if text.len() > MAX_CHECKPOINT_BYTES {
        return Err("checkpoint is larger than 1 MiB".into());
    }
    if let Some(at) = crate::domain::may_hold_nul(text.as_bytes())
        .then(|| crate::domain::nul_in(state))
        .flatten()
    {
        return Err(format!(
            "checkpoint holds a NUL character (U+0000) at `{at}`, which the database cannot store"
        ));
    }
    Ok(())
}

impl RunContext {
    pub(crate) fn new(
        run: &ClaimedRun,
        store: Store,
        cancel: CancellationToken,
        http: EgressClient,
        secrets: crate::domain::NamedSecrets,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                fence: run.fence(),
                max_attempts: run.max_attempts,
                tenant: run.tenant.clone(),
                metadata: run.metadata.clone(),
                created_by: run.created_by.clone(),
                store,
                cancel,
                saved: Mutex::new(run.checkpoint.clone()),
                dependencies: run.dependencies.clone(),
                http,
                secrets,
            }),
        }
    }

    /// An HTTP client for the agent's outbound calls that reaches only what this worker's
    /// egress policy allows (`--http-allow`; by default no loopback, private, link-local
    /// or metadata address), checked after DNS resolution and on every redirect. Its
    /// `request` refuses a URL at once; a refusal found later (after resolution, on a
    /// redirect) is in the `send` error's chain: see [`Refused::find_in`](super::egress::Refused::find_in).
    pub fn http(&self) -> &EgressClient {
        &self.inner.http
    }

    /// The results of the runs this one depends on (`depends_on`), by run id.
    pub fn dependencies(&self) -> &BTreeMap<RunId, Value> {
        &self.inner.dependencies
    }

    /// The state last saved with [`checkpoint`](Self::checkpoint), by this attempt or an
    /// earlier one of the same run: start from it to skip the steps already done.
    pub fn saved_checkpoint(&self) -> Option<Value> {
        self.saved().clone()
    }

    /// Waits for the signal `name` (see [`wait_for_any`](Self::wait_for_any)).
    pub async fn wait_for(&self, name: &str, timeout: Duration) -> Result<Signal, AgentError> {
        self.wait_for_any(&[name], timeout, OnTimeout::Fail).await
    }

    /// Returns the oldest pending signal among `names` (one sent before the wait started
    /// counts). When none is there yet, returns an error the agent must pass on (`?`): the
    /// run then becomes `waiting` and frees its worker slot, without counting the attempt.
    /// When a signal arrives the agent is called again from the start: it should resume
    /// from its checkpoint (save one before waiting) and call this again, which then
    /// returns the signal.
    pub async fn wait_for_any(
        &self,
        names: &[&str],
        timeout: Duration,
        on_timeout: OnTimeout,
    ) -> Result<Signal, AgentError> {
        if names.is_empty() {
            return Err(AgentError::permanent(
                "wait_for_any needs at least one signal name",
            ));
        }
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let fence = self.inner.fence.clone();
        match self
            .inner
            .store
            .take_signal(fence, names.clone(), None)
            .await
        {
            Ok(Some(signal)) => Ok(signal),
            Ok(None) => Err(AgentError {
                message: format!("waiting for {}", names.join(" or ")),
                retryable: true,
                wait: Some(WaitRequest {
                    signals: names,
                    timeout,
                    resume_on_timeout: on_timeout == OnTimeout::Resume,
                }),
            }),
            Err(e) => Err(AgentError::retryable(format!(
                "could not read signals: {e}"
            ))),
        }
    }

    /// Saves `state` for the attempts that follow (after a retry, a timeout, a crash or a
    /// hand-back), returning once it is stored. Fails, retryably, when the attempt no longer
    /// owns its run or the state could not be stored; permanently when it is not JSON or
    /// larger than [`MAX_CHECKPOINT_BYTES`].
    pub async fn checkpoint(&self, state: impl Serialize) -> Result<(), AgentError> {
        let state = serde_json::to_value(state)
            .map_err(|e| AgentError::permanent(format!("checkpoint is not JSON: {e}")))?;
        check_checkpoint(&state).map_err(AgentError::permanent)?;
        let fence = self.inner.fence.clone();
        match self.inner.store.checkpoint(fence, state.clone()).await {
            Ok(true) => {
                *self.saved() = Some(state);
                Ok(())
            }
            Ok(false) => {
                self.inner.cancel.cancel();
                Err(AgentError::retryable("the attempt no longer owns its run"))
            }
            Err(e) => Err(AgentError::retryable(format!(
                "could not save the checkpoint: {e}"
            ))),
        }
    }

    fn saved(&self) -> std::sync::MutexGuard<'_, Option<Value>> {
        // a panic while holding this lock cannot leave the value inconsistent
        self.inner.saved.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn run_id(&self) -> RunId {
        self.inner.fence.run_id
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.inner.fence.attempt
    }

    pub fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// The value of a named secret this worker process was given (`--secret NAME=VALUE`,
    /// `AGENTQ_SECRET_<NAME>`, `--secrets-file`), if it was. Never write it where the run
    /// keeps things (result, progress, logs, checkpoint, stream): those are shown.
    pub fn secret(&self, name: &str) -> Option<&str> {
        self.inner.secrets.get(name)
    }

    /// The worker's named secrets (to scrub their values from what is kept).
    pub(crate) fn secrets(&self) -> &crate::domain::NamedSecrets {
        &self.inner.secrets
    }

    /// The tenant the run belongs to (`default` without API keys).
    pub fn tenant(&self) -> &str {
        &self.inner.tenant
    }

    /// The run's metadata, as it was created with.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.inner.metadata
    }

    /// Who created the run: `key:<key id>`, `run_token:<run id>` or `open`; `None` for a
    /// run the engine made (a compensation run).
    pub fn created_by(&self) -> Option<&str> {
        self.inner.created_by.as_deref()
    }

    /// Fires when the attempt should stop: timeout, shutdown hand-back, or lost lease.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// Reports progress (percent is clamped to 0–100). Returns once it is stored. If the
    /// attempt no longer owns its run, the cancellation token fires.
    pub async fn progress(&self, percent: u8, message: impl Into<Option<String>>) {
        let progress = Progress {
            percent: percent.min(100),
            message: message.into().map(crate::domain::storable),
        };
        let written = self
            .inner
            .store
            .progress(self.inner.fence.clone(), progress)
            .await;
        self.after_write(written);
    }

    /// Appends a `log` event to the run (`level`: debug, info, warn, error).
    pub async fn log(&self, level: &str, message: impl Into<String>) {
        let written = self
            .inner
            .store
            .log(
                self.inner.fence.clone(),
                &crate::domain::storable(level.to_owned()),
                crate::domain::storable(message.into()),
            )
            .await;
        self.after_write(written);
    }

    /// Appends `text` to the run's output stream (see [`RunContext::stream_part`]).
    pub async fn stream(&self, text: impl Into<String>) -> Result<(), AgentError> {
        self.stream_part(StreamPart::Text { text: text.into() })
            .await
    }

    /// Appends a part to the run's output stream, returning once it is stored: clients
    /// following `GET /v1/runs/{id}/stream` or its events see it at once, and after a
    /// crash it is still there. Fails, retryably, when the attempt no longer owns its run
    /// (the cancellation token fires too) or the part could not be stored; permanently
    /// when the part is invalid or the run's stream is full (`--max-stream-bytes`).
    pub async fn stream_part(&self, part: StreamPart) -> Result<(), AgentError> {
        let part = part.checked().map_err(AgentError::permanent)?;
        let fence = self.inner.fence.clone();
        match self.inner.store.stream(fence, vec![part]).await {
            Ok(Streamed::Written) => Ok(()),
            Ok(Streamed::Lost) => {
                self.inner.cancel.cancel();
                Err(AgentError::retryable("the attempt no longer owns its run"))
            }
            Ok(Streamed::Full { limit }) => Err(AgentError::permanent(format!(
                "the run's output stream is full: it may hold {limit} bytes (--max-stream-bytes)"
            ))),
            Err(e) => Err(AgentError::retryable(format!(
                "could not append to the stream: {e}"
            ))),
        }
    }

    fn after_write(&self, written: Result<bool, crate::store::StoreError>) {
        match written {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(run.id = %self.run_id(), run.attempt = self.attempt(), "attempt no longer owns its run; cancelling it");
                self.inner.cancel.cancel();
            }
            Err(e) => {
                tracing::warn!(run.id = %self.run_id(), error = %e, "could not record agent report")
            }
        }
    }
}
