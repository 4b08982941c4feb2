//! Authentication and the per-request `Caller`.
//!
//! Requests to `/v1/…` (and `/metrics`) carry `Authorization: Bearer <credential>`: an
//! API key (`aq_…`, made with `agentq keys create`) acting for its tenant with its
//! scopes, or a run token (`rt.…`, returned by `POST /v1/runs`) that reads one run,
//! follows its events and sends the signals it waits for. A browser's `EventSource`
//! cannot set headers, so a run token may also come as `?access_token=`.
//!
//! Before any key is made the server is open (every caller acts for the `default`
//! tenant with every scope), which start-up allows only on a loopback address or with
//! `--insecure-no-auth`. Once a key exists, every request needs a credential, even after
//! every key is revoked. Key lookups are cached for [`KEY_CACHE_TTL`], so a new first
//! key takes effect and a revoked key stops working within it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use crate::domain::{
    Run, RunId, RunToken, Scope, Scopes, Tenant, is_run_token, secret_matches, split_key,
};
use crate::store::{KeyRecord, Store};

use super::error::ApiError;
use super::limits::Limits;

/// How long a key lookup (found, missing or revoked) is trusted.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// The name of the generated run token secret in the database.
const TOKEN_SECRET_NAME: &str = "run_token";

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No key was ever made and the server may run open: the `default` tenant, every
    /// scope.
    Open,
    Key {
        /// The key's public id (`aq_<id>_…`).
        id: String,
        tenant: Tenant,
        scopes: Scopes,
    },
    Token(RunToken),
}

impl Caller {
    /// The tenant whose runs this caller sees; `None` when it sees every run (open).
    pub fn tenant_filter(&self) -> Option<String> {
        match self {
            Caller::Open => None,
            Caller::Key { tenant, .. } => Some(tenant.to_string()),
            Caller::Token(t) => Some(t.tenant.to_string()),
        }
    }

    /// The tenant a run this caller creates belongs to.
    pub fn tenant(&self) -> Tenant {
        match self {
            Caller::Open => Tenant::default_tenant(),
            Caller::Key { tenant, .. } => tenant.clone(),
            Caller::Token(t) => t.tenant.clone(),
        }
    }

    /// Refuses a caller without `scope`; a run token has none of them.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        match self {
            Caller::Open => Ok(()),
            Caller::Key { scopes, .. } if scopes.allow(scope) => Ok(()),
            Caller::Key { .. } => Err(ApiError::Forbidden(match scope {
                Scope::RunsRead => "this key lacks the runs:read scope",
                Scope::RunsWrite => "this key lacks the runs:write scope",
                Scope::Admin => "this key lacks the admin scope",
                Scope::Worker => "this key lacks the worker scope",
            })),
            Caller::Token(_) => Err(ApiError::Forbidden(
                "a run token only reads its run, follows its events, sends the signals it waits for and lists the agents",
            )),
        }
    }

    /// Refuses a caller with none of `scopes` (naming the first).
    pub fn require_any(&self, scopes: &[Scope]) -> Result<(), ApiError> {
        match scopes.iter().find(|s| self.require(**s).is_ok()) {
            Some(_) => Ok(()),
            None => self.require(scopes[0]),
        }
    }

    /// Who is calling, as run events and runs record it: `key:<key id>`,
    /// `run_token:<run id>` or `open`.
    pub fn actor(&self) -> String {
        match self {
            Caller::Open => "open".to_owned(),
            Caller::Key { id, .. } => format!("key:{id}"),
            Caller::Token(t) => format!("run_token:{}", t.run),
        }
    }

    /// The id of the API key calling, if a key is.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Caller::Key { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Whether the caller may see the run at all: another tenant's run, or another run
    /// than a token's, does not exist for it (404, never 403).
    pub fn sees(&self, id: RunId, tenant: &str) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key { tenant: own, .. } => own.as_str() == tenant,
            Caller::Token(t) => t.run == id && t.tenant.as_str() == tenant,
        }
    }

    /// Reading a run and its events: `runs:read` of its tenant, or its run token.
    pub fn may_read(&self, run: &Run) -> Result<(), ApiError> {
        if !self.sees(run.id, &run.tenant) {
            return Err(ApiError::NotFound("run"));
        }
        match self {
            Caller::Token(_) => Ok(()),
            other => other.require(Scope::RunsRead),
        }
    }

    /// A run as this caller may see it in the answer to a change it made: whole with
    /// `runs:read` (or its run token), else without what it holds (see
    /// [`Run::without_content`]).
    pub fn shown(&self, run: Run) -> Run {
        let reads = match self {
            Caller::Token(t) => t.run == run.id,
            other => other.require(Scope::RunsRead).is_ok(),
        };
        if reads { run } else { run.without_content() }
    }

    /// A schedule as this caller may see it in the answer to a pause or resume: without
    /// its run template (null) unless it has `runs:read`.
    pub fn shown_schedule(&self, mut schedule: crate::domain::Schedule) -> crate::domain::Schedule {
        if self.require(Scope::RunsRead).is_err() {
            schedule.run = serde_json::Value::Null;
        }
        schedule
    }

    /// Changing a run (cancel, retry): `runs:write` of its tenant.
    pub fn may_write(&self, run: &Run) -> Result<(), ApiError> {
        if !self.sees(run.id, &run.tenant) {
            return Err(ApiError::NotFound("run"));
        }
        self.require(Scope::RunsWrite)
    }

    /// Signalling a run: `runs:write` of its tenant, or its run token for a signal the
    /// run waits for right now.
    pub fn may_signal(&self, run: &Run, name: &str) -> Result<(), ApiError> {
        if !self.sees(run.id, &run.tenant) {
            return Err(ApiError::NotFound("run"));
        }
        match self {
            Caller::Token(_) => {
                let waits_for = run
                    .waiting_for
                    .as_ref()
                    .is_some_and(|w| w.signals.iter().any(|s| s == name));
                if waits_for {
                    Ok(())
                } else {
                    Err(ApiError::Forbidden(
                        "a run token sends only a signal its run is waiting for now",
                    ))
                }
            }
            other => other.require(Scope::RunsWrite),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthenticated("no credential"))
    }
}

/// When the server may answer without credentials (before any key is made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Never: keys are required from the start.
    Never,
    /// Only requests addressed to a loopback host (the server listens on loopback).
    Loopback,
    /// Any request (`--insecure-no-auth`).
    Anyone,
}

/// How the server authenticates; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Whether and to whom to answer without credentials while no key was ever made.
    open: OpenMode,
    token_secret: Vec<u8>,
    token_ttl: Duration,
    keys: Mutex<HashMap<String, (Instant, Option<KeyRecord>)>>,
    keys_made: Mutex<Option<(Instant, bool)>>,
    /// Origins whose pages may call without keys besides this machine's own
    /// (`--cors-origins`; `*` is any).
    page_origins: Vec<String>,
}

impl Auth {
    /// `token_secret` as configured, or else the one the database keeps (made by the
    /// first process that asks), so every API process verifies every other's tokens.
    pub async fn new(
        store: Store,
        open: OpenMode,
        token_secret: Option<&str>,
        token_ttl: Duration,
        page_origins: &[String],
    ) -> Result<Self, crate::store::StoreError> {
        let secret = match token_secret {
            Some(s) => s.to_owned(),
            None => {
                let candidate = crate::domain::NewKey::generate().secret_hash;
                store.server_secret(TOKEN_SECRET_NAME, &candidate).await?
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                open,
                token_secret: secret.into_bytes(),
                token_ttl,
                keys: Mutex::new(HashMap::new()),
                keys_made: Mutex::new(None),
                page_origins: page_origins.to_vec(),
            }),
        })
    }

    /// A token for one run, valid for the configured time.
    pub fn run_token(&self, run: &Run) -> (String, chrono::DateTime<Utc>) {
        let tenant = Tenant::parse(&run.tenant).unwrap_or_else(|_| Tenant::default_tenant());
        let token = RunToken {
            run: run.id,
            tenant,
            expires_at: Utc::now() + self.inner.token_ttl,
        };
        (token.sign(&self.inner.token_secret), token.expires_at)
    }

    async fn is_open(&self) -> Result<bool, ApiError> {
        if self.inner.open == OpenMode::Never {
            return Ok(false);
        }
        let cached = *self.inner.keys_made.lock().expect("auth cache lock");
        let any = match cached {
            // keys are revoked, never deleted: once one was made, that is for good
            Some((_, true)) => true,
            Some((at, false)) if at.elapsed() < KEY_CACHE_TTL => false,
            _ => {
                let any = self.inner.store.count_keys().await? > 0;
                *self.inner.keys_made.lock().expect("auth cache lock") =
                    Some((Instant::now(), any));
                any
            }
        };
        Ok(!any)
    }

    async fn key(&self, id: &str) -> Result<Option<KeyRecord>, ApiError> {
        if let Some((at, record)) = self.inner.keys.lock().expect("auth cache lock").get(id)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(record.clone());
        }
        let record = self.inner.store.find_key(id).await?;
        let mut cache = self.inner.keys.lock().expect("auth cache lock");
        // presented ids are attacker-chosen: keep the cache bounded
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < KEY_CACHE_TTL);
            if cache.len() > 10_000 {
                cache.clear();
            }
        }
        cache.insert(id.to_owned(), (Instant::now(), record.clone()));
        Ok(record)
    }

    /// Who presents `credential`.
    async fn caller(&self, credential: &str) -> Result<Caller, ApiError> {
        if is_run_token(credential) {
            return RunToken::verify(credential, &self.inner.token_secret, Utc::now())
                .map(Caller::Token)
                .map_err(ApiError::Unauthenticated);
        }
        let invalid = ApiError::Unauthenticated("the API key is not valid");
        let (id, secret) = split_key(credential).ok_or(ApiError::Unauthenticated(
            "the credential is neither an API key (aq_…) nor a run token (rt.…)",
        ))?;
        let record = self.key(id).await?.ok_or(invalid)?;
        if !secret_matches(secret, &record.secret_hash) {
            return Err(ApiError::Unauthenticated("the API key is not valid"));
        }
        if record.revoked {
            return Err(ApiError::Unauthenticated("the API key was revoked"));
        }
        let tenant = Tenant::parse(&record.tenant)
            .map_err(|_| ApiError::Unauthenticated("the API key is not valid"))?;
        let scopes = Scopes::parse(&record.scopes)
            .map_err(|_| ApiError::Unauthenticated("the API key is not valid"))?;
        Ok(Caller::Key {
            id: id.to_owned(),
            tenant,
            scopes,
        })
    }
}

/// The bearer credential of a request, or a run token in `?access_token=`.
fn credential(req: &Request) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    // only where a browser cannot send headers: `EventSource` on the events and stream
    // endpoints
    let path = req.uri().path();
    if !(path.ends_with("/events") || path.ends_with("/stream")) {
        return None;
    }
    req.uri()
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "access_token")
        .map(|(_, v)| v.to_owned())
        // API keys never travel in URLs (they end up in logs and histories)
        .filter(|v| is_run_token(v))
}

/// Whether the request names a loopback host (`localhost`, `127.0.0.1`, `[::1]`, any
/// port). Open mode answers only those: a DNS-rebinding web page sends its own host name,
/// and so does a request a local reverse proxy passes on with its `Host`.
fn addressed_to_loopback(req: &Request) -> bool {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or_default();
    loopback_name(host)
}

/// Whether `host` (`name`, `name:port`, `[v6]:port`) names this machine.
fn loopback_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a browser sent the request for a page of a site that may not call without
/// keys. Without keys nothing else tells the dashboard's requests (or a local frontend's)
/// from those a web page makes the visitor's browser send here: a cancel by a page that
/// learnt a run id, say. A page's request names its `Origin`, which the page cannot
/// choose: allowed are this machine's pages, the server's own origin and `page_origins`
/// (`--cors-origins`). A request without `Origin` (a program, or a browser's navigation)
/// is refused only when the browser says it comes from another site (`Sec-Fetch-Site`).
fn from_another_site(req: &Request, page_origins: &[String]) -> bool {
    let headers = req.headers();
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|site| site.eq_ignore_ascii_case("cross-site"));
    };
    let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let own = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| host.eq_ignore_ascii_case(authority));
    let listed = page_origins
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin));
    !(own || listed || loopback_name(authority))
}

/// The middleware: puts the `Caller` in the request, or answers 401 (or 429 when the
/// tenant is over its request rate).
pub(super) async fn authenticate(
    State((auth, limits)): State<(Auth, Arc<Limits>)>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = match auth.is_open().await {
        Ok(true) if auth.inner.open == OpenMode::Loopback && !addressed_to_loopback(&req) => {
            Err(ApiError::Forbidden(
                "without API keys the server only answers requests addressed to localhost (a web page or a proxy must not reach it): create a key with `agentq keys create`",
            ))
        }
        Ok(true) if from_another_site(&req, &auth.inner.page_origins) => Err(ApiError::Forbidden(
            "without API keys the server answers no page of another site (its requests would act with the visitor's access): create a key with `agentq keys create`",
        )),
        Ok(true) => Ok(Caller::Open),
        Ok(false) => match credential(&req) {
            Some(c) => auth.caller(&c).await,
            None => Err(ApiError::Unauthenticated(
                "send Authorization: Bearer <API key or run token>",
            )),
        },
        Err(e) => Err(e),
    };
    let admitted = caller.and_then(|caller| {
        let tenant = caller.tenant();
        limits.take_request(tenant.as_str()).map(|()| caller)
    });
    match admitted {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, auth: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder().uri(uri);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn pages_of_other_sites_are_told_apart_from_local_pages_and_programs() {
        let with = |headers: &[(&str, &str)]| {
            let mut b = axum::http::Request::builder()
                .uri("/v1/runs")
                .header(header::HOST, "localhost:8080");
            for (name, value) in headers {
                b = b.header(*name, *value);
            }
            let listed = ["https://app.example.com".to_owned()];
            from_another_site(&b.body(axum::body::Body::empty()).unwrap(), &listed)
        };
        // curl, SDKs, workers
        assert!(!with(&[]));
        // the dashboard, and a local frontend on another port or loopback name
        assert!(!with(&[("sec-fetch-site", "same-origin")]));
        assert!(!with(&[
            ("sec-fetch-site", "same-site"),
            ("origin", "http://localhost:3000")
        ]));
        assert!(!with(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://127.0.0.1:3000")
        ]));
        assert!(!with(&[("origin", "http://127.0.0.1:3000")]));
        assert!(!with(&[("sec-fetch-site", "none")]));
        // the server's own origin, whatever its name (--insecure-no-auth on a LAN address)
        let own = axum::http::Request::builder()
            .uri("/v1/runs")
            .header(header::HOST, "10.0.0.5:8080")
            .header(header::ORIGIN, "http://10.0.0.5:8080")
            .body(axum::body::Body::empty())
            .unwrap();
        assert!(!from_another_site(&own, &[]));
        // a frontend allowed by --cors-origins
        assert!(!with(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://app.example.com")
        ]));
        // somebody else's page
        assert!(with(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example")
        ]));
        assert!(with(&[("origin", "https://evil.example")]));
        assert!(with(&[("origin", "null")]));
        assert!(with(&[("sec-fetch-site", "cross-site")]));
    }

    #[test]
    fn only_loopback_hosts_count_as_local() {
        let with_host = |host: &str| {
            let req = axum::http::Request::builder()
                .uri("/v1/runs")
                .header(header::HOST, host)
                .body(axum::body::Body::empty())
                .unwrap();
            addressed_to_loopback(&req)
        };
        for local in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "127.0.0.2",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(with_host(local), "{local}");
        }
        for remote in [
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[fe80::1]:80",
            "",
        ] {
            assert!(!with_host(remote), "{remote}");
        }
    }

    #[test]
    fn credentials_come_from_the_bearer_header_or_a_run_token_in_the_query() {
        assert_eq!(
            credential(&request("/v1/runs", Some("Bearer aq_x"))).as_deref(),
            Some("aq_x")
        );
        assert_eq!(
            credential(&request("/v1/runs", Some("bearer  rt.y"))).as_deref(),
            Some("rt.y")
        );
        assert_eq!(credential(&request("/v1/runs", Some("Basic abc"))), None);
        assert_eq!(
            credential(&request("/v1/runs/1/events?access_token=rt.z", None)).as_deref(),
            Some("rt.z")
        );
        // an API key in a URL is not taken
        assert_eq!(
            credential(&request("/v1/runs?access_token=aq_k", None)),
            None
        );
        // a run token in the query only where EventSource needs it
        assert_eq!(
            credential(&request("/v1/runs/1?access_token=rt.z", None)),
            None
        );
    }
}
