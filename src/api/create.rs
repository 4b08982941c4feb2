//! The `POST /v1/runs` body and its conversion into a validated `NewRun`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use validator::{Validate, ValidationError};

use crate::domain::{
    AgentDefaults, Backoff, Compensation, Concurrency, IdempotencyKey, KeyPolicy, KeySettings,
    MAX_KEY_CHARS, MAX_KEY_LIMIT, NewRun, RunId, Tenant,
};
use crate::jobs::{AgentRegistry, DeclaredSnapshot};
use crate::store::StoreError;

use super::error::{ApiError, FieldError};

/// Defaults applied to runs that do not set their own.
#[derive(Debug, Clone)]
pub struct RunDefaults {
    pub max_attempts: u32,
    pub timeout: Duration,
    pub backoff: Backoff,
    /// How long an Idempotency-Key keeps naming the run it created.
    pub idempotency_ttl: Duration,
    /// Per agent, the limit and policy of runs' concurrency keys where a run sets none
    /// (`--key-concurrency`).
    pub key_concurrency: std::sync::Arc<BTreeMap<String, KeySettings>>,
}

impl Default for RunDefaults {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            timeout: Duration::from_secs(300),
            backoff: Backoff {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(300),
            },
            idempotency_ttl: Duration::from_secs(24 * 3600),
            key_concurrency: Default::default(),
        }
    }
}

/// The `Idempotency-Key` header, checked: 1–255 visible ASCII characters.
pub fn idempotency_key(
    headers: &axum::http::HeaderMap,
    body: &Value,
    ttl: Duration,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new(
                "Idempotency-Key",
                "invalid_value",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )])
        })?;
    Ok(Some(IdempotencyKey {
        key: key.to_owned(),
        fingerprint: fingerprint(body),
        expires_at: Utc::now() + ttl,
    }))
}

/// SHA-256 of the body's canonical JSON (object keys sorted, no whitespace), so a retry
/// that sends the same JSON differently laid out is the same request.
fn fingerprint(body: &Value) -> String {
    crate::domain::sha256_hex(&serde_json::to_vec(body).expect("a JSON value serialises"))
}

/// A run to create.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    /// A registered agent (see `GET /v1/agents`).
    #[validate(length(min = 1, max = 64))]
    #[schema(example = "echo", min_length = 1, max_length = 64)]
    pub agent: String,
    /// The agent's input; checked against its JSON Schema.
    #[serde(default)]
    #[schema(example = json!({"value": "hello"}))]
    pub input: Value,
    /// Attempts before the run fails for good (default 3).
    #[validate(range(min = 1, max = 100))]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Time limit of each attempt (default 300000: 5 minutes).
    #[validate(range(min = 1, max = 86_400_000))]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
    /// Higher runs first among due runs (default 0).
    #[validate(range(min = -1000, max = 1000))]
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    /// Do not start before this time (RFC 3339).
    pub run_at: Option<DateTime<Utc>>,
    /// The whole run must finish by this time, across retries: no retry is scheduled to
    /// start after it, a running attempt is stopped at it, and the run fails as
    /// `deadline_exceeded`.
    pub deadline: Option<DateTime<Utc>>,
    /// The run must start by this time, or it fails as `expired`.
    pub expires_at: Option<DateTime<Utc>>,
    /// A compensation: when this run fails for good, a run of `agent` is created with
    /// `{"input": input, "failed_run": {"id", "agent", "input", "error"}}`, and the two
    /// runs link to each other (`compensation_run_id`, `compensates_run_id`).
    pub on_failure: Option<Compensation>,
    /// Where to POST the run (JSON) when it finishes: `succeeded`, `failed` or `cancelled`.
    /// Signed with `--webhook-secret` when set; retried with backoff for up to 24 h. A
    /// destination the workers' egress policy refuses (`--http-allow`; by default loopback,
    /// private, link-local and metadata addresses) is not sent to: a `webhook_failed`
    /// event says why.
    #[validate(length(min = 8, max = 2048), custom(function = "check_callback_url"))]
    #[schema(min_length = 8, max_length = 2048)]
    pub callback_url: Option<String>,
    /// Runs (ids, at most 100) that must succeed first: until then this run is `blocked`.
    /// If one fails this run fails (`dependency_failed`); if one is cancelled, so is this.
    #[schema(max_items = 100)]
    pub depends_on: Option<Vec<String>>,
    /// Retry backoff base: the first retry waits up to this long (default 1000).
    #[validate(range(min = 0, max = 3_600_000))]
    #[schema(maximum = 3_600_000)]
    pub backoff_base_ms: Option<u64>,
    /// Retry backoff cap (default 300000).
    #[validate(range(min = 0, max = 86_400_000))]
    #[schema(maximum = 86_400_000)]
    pub backoff_cap_ms: Option<u64>,
    /// Free-form string labels: at most 32 keys of 1–64 characters, values up to 512.
    #[validate(custom(function = "check_metadata"))]
    pub metadata: Option<BTreeMap<String, String>>,
    /// A concurrency key (1–255 characters, like `user:42` or `thread:9`): at most
    /// `concurrency_limit` runs of the key (same tenant and agent) hold it at once. A run
    /// holds its key from when it is let in until it finishes (retries and waits
    /// included); one that finds its key full does what `concurrency_policy` says.
    #[schema(min_length = 1, max_length = 255, example = "user:42")]
    pub concurrency_key: Option<String>,
    /// How many runs of the key may hold it at once (default: the agent's
    /// `--key-concurrency`, else 1). Only with `concurrency_key`.
    #[validate(range(min = 1, max = 1000))]
    #[schema(minimum = 1, maximum = 1000)]
    pub concurrency_limit: Option<u32>,
    /// What this run does when its key is full (default: the agent's `--key-concurrency`,
    /// else `queue`): `queue` waits its turn (`blocked`, let in oldest first); `reject` is
    /// refused with `409 concurrency_key_busy`; `cancel_running` cancels the key's oldest
    /// unfinished runs until it fits, then starts; `drop_queued` cancels the key's runs
    /// that have not started, then waits its turn (debounce). Only with `concurrency_key`.
    pub concurrency_policy: Option<KeyPolicy>,
}

fn check_callback_url(url: &str) -> Result<(), ValidationError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(ValidationError::new("url").with_message("callback_url must be an http(s) URL".into()))
    }
}

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    let fits = metadata.len() <= 32
        && metadata
            .iter()
            .all(|(k, v)| (1..=64).contains(&k.chars().count()) && v.chars().count() <= 512);
    if fits {
        Ok(())
    } else {
        Err(ValidationError::new("metadata_limits").with_message(
            "metadata takes at most 32 keys of 1–64 characters with values up to 512".into(),
        ))
    }
}

/// Parses `depends_on`, naming each bad entry; duplicates are dropped.
fn parse_dependencies(raw: Option<&[String]>, problems: &mut Vec<FieldError>) -> Vec<RunId> {
    let raw = raw.unwrap_or_default();
    if raw.len() > 100 {
        problems.push(FieldError::new(
            "depends_on",
            "length",
            "depends_on takes at most 100 runs",
        ));
        return Vec::new();
    }
    let mut ids = Vec::with_capacity(raw.len());
    for (i, id) in raw.iter().enumerate() {
        match id.parse::<RunId>() {
            Ok(id) if !ids.contains(&id) => ids.push(id),
            Ok(_) => {}
            Err(_) => problems.push(FieldError::new(
                format!("depends_on/{i}"),
                "invalid_value",
                "not a run id",
            )),
        }
    }
    ids
}

/// The store names a bad dependency by its index in the list without duplicates; the
/// request's own list may hold some, so the problem is moved to where the id was first given.
pub(super) fn at_given_positions(e: StoreError, kept: &[RunId], given: &[String]) -> StoreError {
    let StoreError::BadDependencies(problems) = e else {
        return e;
    };
    let given_at = |i: usize| {
        let id = kept.get(i)?;
        given
            .iter()
            .position(|g| g.parse::<RunId>().is_ok_and(|g| g == *id))
    };
    StoreError::BadDependencies(
        problems
            .into_iter()
            .map(|(i, code, message)| (given_at(i).unwrap_or(i), code, message))
            .collect(),
    )
}

/// The agents a run may name: this process's own, then those external workers declared.
pub struct KnownAgents<'a> {
    pub registry: &'a AgentRegistry,
    pub declared: &'a DeclaredSnapshot,
    /// The named secrets this process was given: an `http` run may refer only to those.
    pub secrets: &'a crate::domain::NamedSecrets,
}

impl KnownAgents<'_> {
    /// Checks `input` against the agent's schema. `None` when no such agent is known.
    fn check_input(&self, name: &str, input: &Value) -> Option<Vec<crate::jobs::InputProblem>> {
        self.registry
            .check_input(name, input)
            .or_else(|| self.declared.check_input(name, input))
    }

    /// What a declared agent gives its runs where they set nothing.
    fn defaults(&self, name: &str) -> AgentDefaults {
        if self.registry.contains(name) {
            return AgentDefaults::default();
        }
        self.declared.defaults(name).cloned().unwrap_or_default()
    }
}

impl CreateRunRequest {
    /// The agents this request names: its own, and its compensation's.
    pub fn agents_named(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.agent.as_str()).chain(self.on_failure.iter().map(|c| c.agent.as_str()))
    }

    /// The compensation agent must exist and accept the input it will get.
    fn check_compensation(
        &self,
        registry: &KnownAgents<'_>,
        spec: &Compensation,
    ) -> Vec<FieldError> {
        let envelope = serde_json::json!({
            "input": spec.input,
            "failed_run": {
                "id": RunId::new().to_string(),
                "agent": self.agent,
                "input": self.input,
                "error": {"kind": "agent_error", "message": ""},
            },
        });
        match registry.check_input(&spec.agent, &envelope) {
            None => vec![FieldError::new(
                "on_failure/agent",
                "unknown_agent",
                format!("no agent named `{}` is registered", spec.agent),
            )],
            Some(problems) => problems
                .into_iter()
                .map(|p| FieldError::new(format!("on_failure{}", p.pointer), "schema", p.message))
                .collect(),
        }
    }

    /// Validates every field (all problems at once) and applies the defaults.
    pub fn into_new_run(
        self,
        registry: &KnownAgents<'_>,
        defaults: &RunDefaults,
        idempotency: Option<IdempotencyKey>,
        tenant: Tenant,
    ) -> Result<NewRun, ApiError> {
        let mut problems = match self.validate() {
            Ok(()) => Vec::new(),
            Err(e) => match ApiError::from(e) {
                ApiError::Validation(fields) => fields,
                other => return Err(other),
            },
        };
        match registry.check_input(&self.agent, &self.input) {
            None => problems.push(FieldError::new(
                "agent",
                "unknown_agent",
                format!("no agent named `{}` is registered", self.agent),
            )),
            Some(input_problems) => problems.extend(
                input_problems
                    .into_iter()
                    .map(|p| FieldError::new(format!("input{}", p.pointer), "schema", p.message)),
            ),
        }
        // the built-in `http` agent's headers may name secrets: only ones that are set
        if self.agent.as_str() == "http" {
            let url = self
                .input
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or_default();
            for (header, name) in crate::jobs::builtin::secret_references(&self.input) {
                let field = format!("input/headers/{header}");
                if !registry.secrets.contains(&name) {
                    problems.push(FieldError::new(
                        field,
                        "unknown_secret",
                        format!("no secret named `{name}` is set (--secret {name}=…, AGENTQ_SECRET_{name} or --secrets-file, on API and worker processes alike)"),
                    ));
                } else if let Err(why) =
                    crate::jobs::builtin::secret_may_go_to(registry.secrets, &name, url)
                {
                    problems.push(FieldError::new(field, "secret_host", why));
                }
            }
        }
        let depends_on = parse_dependencies(self.depends_on.as_deref(), &mut problems);
        if let Some(spec) = &self.on_failure {
            problems.extend(self.check_compensation(registry, spec));
        }
        // the run's own settings, then its agent's declared defaults, then the server's
        let agent_defaults = registry.defaults(&self.agent);
        let backoff = Backoff {
            base: self
                .backoff_base_ms
                .or(agent_defaults.backoff_base_ms)
                .map_or(defaults.backoff.base, Duration::from_millis),
            cap: self
                .backoff_cap_ms
                .or(agent_defaults.backoff_cap_ms)
                .map_or(defaults.backoff.cap, Duration::from_millis),
        };
        let now = Utc::now();
        let starts = self.run_at.map_or(now, |at| at.max(now));
        for (field, limit) in [("deadline", self.deadline), ("expires_at", self.expires_at)] {
            if limit.is_some_and(|t| t <= starts) {
                problems.push(FieldError::new(
                    field,
                    "range",
                    format!("{field} must be later than now and than run_at"),
                ));
            }
        }
        let concurrency = self.concurrency(defaults, &mut problems);
        if backoff.cap < backoff.base {
            problems.push(FieldError::new(
                "backoff_cap_ms",
                "range",
                "backoff_cap_ms must not be below backoff_base_ms",
            ));
        }
        if !problems.is_empty() {
            return Err(ApiError::Validation(problems));
        }
        Ok(NewRun {
            id: RunId::new(),
            agent: self.agent,
            input: self.input,
            priority: self.priority.unwrap_or(0),
            max_attempts: self
                .max_attempts
                .or(agent_defaults.max_attempts)
                .unwrap_or(defaults.max_attempts),
            timeout: self
                .timeout_ms
                .or(agent_defaults.timeout_ms)
                .map_or(defaults.timeout, Duration::from_millis),
            backoff,
            run_at: self.run_at,
            deadline: self.deadline,
            expires_at: self.expires_at,
            on_failure: self.on_failure,
            compensates: None,
            depends_on,
            callback_url: self.callback_url,
            metadata: self.metadata.unwrap_or_default(),
            idempotency,
            tenant,
            trace_parent: None,
            created_by: None,
            concurrency,
        })
    }

    /// The run's concurrency key with its limit and policy: its own, else its agent's
    /// `--key-concurrency`, else 1 and `queue`.
    fn concurrency(
        &self,
        defaults: &RunDefaults,
        problems: &mut Vec<FieldError>,
    ) -> Option<Concurrency> {
        let Some(key) = &self.concurrency_key else {
            for (field, set) in [
                ("concurrency_limit", self.concurrency_limit.is_some()),
                ("concurrency_policy", self.concurrency_policy.is_some()),
            ] {
                if set {
                    problems.push(FieldError::new(
                        field,
                        "requires_concurrency_key",
                        format!("{field} applies only to a run with a concurrency_key"),
                    ));
                }
            }
            return None;
        };
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_KEY_CHARS || key.contains('\0') {
            problems.push(FieldError::new(
                "concurrency_key",
                "invalid_value",
                format!("concurrency_key must be 1 to {MAX_KEY_CHARS} characters, without NUL"),
            ));
            return None;
        }
        let agent = defaults
            .key_concurrency
            .get(&self.agent)
            .copied()
            .unwrap_or_default();
        Some(Concurrency {
            key: key.clone(),
            limit: self
                .concurrency_limit
                .or(agent.limit)
                .unwrap_or(1)
                .clamp(1, MAX_KEY_LIMIT),
            policy: self.concurrency_policy.or(agent.policy).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fingerprint;
    use serde_json::json;

    #[test]
    fn fingerprint_ignores_key_order_and_layout_but_not_values() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"agent": "echo", "input": {"x": 1, "y": [1, 2]}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"input":{"y":[1,2],"x":1},"agent":"echo"}"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(
            fingerprint(&a),
            fingerprint(&json!({"agent": "echo", "input": {"x": 2}}))
        );
        assert_eq!(fingerprint(&a).len(), 64);
    }
}
