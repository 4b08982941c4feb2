//! `http`: calls an HTTP endpoint. Network errors, 429 and 5xx are retryable; other 4xx
//! are permanent. The response body is returned as JSON when it parses, else as text,
//! capped in size.
//!
//! Requests go through the worker's egress client (`ctx.http()`), so a destination the
//! egress policy refuses (`--http-allow`) fails the attempt permanently, saying why.
//!
//! A header's value may be a named secret, `{"secret": "NAME", "prefix": "Bearer "}`: the
//! run keeps only the reference; the worker puts the value in (marked sensitive) and
//! scrubs it from whatever the called service echoes back.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::jobs::egress::Refused;
use crate::jobs::{Agent, AgentError, RunContext};

/// Limits of the `http` agent.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest response body kept in the result; the rest is cut and `truncated` set.
    pub max_body_bytes: usize,
    /// Request timeout when the input gives none.
    pub default_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            default_timeout: Duration::from_secs(30),
        }
    }
}

pub struct Http {
    options: HttpOptions,
}

impl Http {
    pub fn new(options: HttpOptions) -> Self {
        Self { options }
    }
}

#[derive(Deserialize)]
struct HttpInput {
    #[serde(default = "default_method")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, HeaderInput>,
    body: Option<Value>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum HeaderInput {
    Plain(String),
    Secret(SecretRef),
}

/// A header value taken from a named secret: `prefix` then the secret's value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRef {
    secret: String,
    #[serde(default)]
    prefix: String,
}

/// Whether the named secret may be sent to `url`: one of the hosts it is bound to
/// (`--secret-hosts`) matches the URL's host and port. The message says why not.
pub fn secret_may_go_to(
    secrets: &crate::domain::NamedSecrets,
    name: &str,
    url: &str,
) -> Result<(), String> {
    let hosts = secrets.hosts(name);
    if hosts.is_empty() {
        return Err(format!(
            "the secret `{name}` is bound to no host, so it is sent nowhere: --secret-hosts {name}=HOST lets it go to HOST"
        ));
    }
    let patterns = hosts.iter().filter_map(|h| h.parse().ok()).collect();
    let url = reqwest::Url::parse(url).map_err(|e| format!("the url does not parse: {e}"))?;
    crate::jobs::EgressPolicy::new(patterns)
        .check_url(&url)
        .map_err(|_| {
            format!(
                "the secret `{name}` may be sent only to {} (--secret-hosts), not to {}",
                hosts.join(", "),
                url.host_str().unwrap_or_default()
            )
        })
}

/// The named secrets an `http` run's input refers to, as (header, secret name): the API
/// checks them against the secrets it was given when the run is created.
pub fn secret_references(input: &Value) -> Vec<(String, String)> {
    let Some(headers) = input.get("headers").and_then(Value::as_object) else {
        return Vec::new();
    };
    headers
        .iter()
        .filter_map(|(header, value)| {
            let name = value.get("secret")?.as_str()?;
            Some((header.clone(), name.to_owned()))
        })
        .collect()
}

fn default_method() -> String {
    "GET".into()
}

#[async_trait]
impl Agent for Http {
    fn name(&self) -> &str {
        "http"
    }

    fn description(&self) -> &str {
        "Calls an HTTP endpoint; returns status, headers and body. 5xx, 429 and network errors are retried."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["url"],
            "additionalProperties": false,
            "properties": {
                "method": { "type": "string",
                            "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] },
                "url": { "type": "string", "pattern": "^https?://", "maxLength": 8192 },
                "headers": { "type": "object", "additionalProperties": { "oneOf": [
                    { "type": "string" },
                    { "type": "object", "required": ["secret"], "additionalProperties": false,
                      "description": "A named secret of the workers (--secret NAME=VALUE): the run keeps only its name.",
                      "properties": {
                          "secret": { "type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$" },
                          "prefix": { "type": "string", "maxLength": 256,
                                      "description": "Put before the value, like `Bearer `." } } }
                ] } },
                "body": { "description": "A string is sent as is; any other JSON value as JSON." },
                "timeout_ms": { "type": "integer", "minimum": 1, "maximum": 3_600_000 }
            }
        })
    }

    async fn run(&self, ctx: RunContext, input: Value) -> Result<Value, AgentError> {
        let input: HttpInput = serde_json::from_value(input)
            .map_err(|e| AgentError::permanent(format!("invalid input: {e}")))?;
        let method = reqwest::Method::from_bytes(input.method.as_bytes())
            .map_err(|_| AgentError::permanent(format!("invalid method `{}`", input.method)))?;
        let timeout = input
            .timeout_ms
            .map_or(self.options.default_timeout, Duration::from_millis);
        // a request carrying a secret goes only where the secret may go, and no further
        let carries_secret = input
            .headers
            .values()
            .any(|h| matches!(h, HeaderInput::Secret(_)));
        let request = if carries_secret {
            ctx.http().request_without_redirects(method, &input.url)
        } else {
            ctx.http().request(method, &input.url)
        };
        let mut request = request
            .map_err(|refused| refusal(&refused))?
            .timeout(timeout);
        let mut used = Vec::new();
        for (name, value) in &input.headers {
            request = match value {
                HeaderInput::Plain(value) => request.header(name, value),
                HeaderInput::Secret(SecretRef { secret, prefix }) => {
                    secret_may_go_to(ctx.secrets(), secret, &input.url)
                        .map_err(AgentError::permanent)?;
                    let value = ctx.secret(secret).ok_or_else(|| {
                        AgentError::permanent(format!(
                            "the header `{name}` names the secret `{secret}`, which this worker was not given (--secret {secret}=…, AGENTQ_SECRET_{secret} or --secrets-file)"
                        ))
                    })?;
                    let mut value = reqwest::header::HeaderValue::try_from(format!("{prefix}{value}"))
                        .map_err(|_| {
                            AgentError::permanent(format!(
                                "the header `{name}`: the secret `{secret}` (with its prefix) is not a valid header value"
                            ))
                        })?;
                    value.set_sensitive(true);
                    used.push(secret.as_str());
                    request.header(name, value)
                }
            };
        }
        request = match input.body {
            Some(Value::String(text)) => request.body(text),
            Some(body) => request.json(&body),
            None => request,
        };
        let response = tokio::select! {
            r = request.send() => r.map_err(|e| classify_send_error(&e))?,
            _ = ctx.cancelled().cancelled() => return Err(AgentError::retryable("cancelled")),
        };
        let status = response.status();
        let headers: BTreeMap<String, String> = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
            .collect();
        let (bytes, truncated) = read_capped(response, self.options.max_body_bytes).await?;
        let body = serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        let mut result = json!({
            "status": status.as_u16(),
            "headers": headers,
            "body": body,
            "truncated": truncated,
        });
        // a service that echoes the request back does not get the secret kept with the run
        if !used.is_empty() {
            scrub(&mut result, ctx.secrets(), &used);
        }
        let summary = format!("{} answered {}", input.url, status);
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(AgentError::retryable(summary))
        } else if status.is_client_error() {
            Err(AgentError::permanent(summary))
        } else {
            Ok(result)
        }
    }
}

/// Replaces the named secrets' values in every string of `value`.
fn scrub(value: &mut Value, secrets: &crate::domain::NamedSecrets, names: &[&str]) {
    match value {
        Value::String(text) => *text = secrets.scrub(text, names),
        Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, secrets, names)),
        Value::Object(fields) => fields.values_mut().for_each(|v| scrub(v, secrets, names)),
        _ => {}
    }
}

/// Permanent: the same destination is refused on every attempt.
fn refusal(refused: &Refused) -> AgentError {
    AgentError::permanent(format!("http agent {refused}"))
}

fn classify_send_error(e: &reqwest::Error) -> AgentError {
    if let Some(refused) = Refused::find_in(e) {
        refusal(refused)
    } else if e.is_builder() {
        AgentError::permanent(format!("invalid request: {}", with_causes(e)))
    } else {
        AgentError::retryable(format!("request failed: {}", with_causes(e)))
    }
}

/// The error and what caused it, down the chain: reqwest's "error sending request" alone
/// hides a name that does not resolve or a refused connection.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        // hyper and reqwest often repeat their inner error in their own message
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

async fn read_capped(
    response: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), AgentError> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| AgentError::retryable(format!("reading body: {e}")))?;
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}
