//! The HTTP API: router, handlers, extractors, problem+json errors, OpenAPI document.
//!
//! Knows HTTP and nothing of apalis: runs enter through `Store::insert_run`.

mod actions;
mod auth;
mod batch;
pub mod budget;
mod conditional;
pub mod connections;
mod create;
mod error;
pub mod event_data;
mod extract;
mod limits;
mod list;
mod message_stream;
mod metrics;
mod middleware;
mod pause;
mod request_id;
mod runs;
mod schedules;
mod signals;
mod stream;
mod system;
mod ui;
mod work;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use crate::jobs::AgentRegistry;
use crate::store::Store;

pub use auth::{Auth, Caller, KEY_CACHE_TTL, OpenMode};
pub use create::{CreateRunRequest, KnownAgents, RunDefaults};
pub use error::{ApiError, FieldError, Problem};
pub use limits::Limits;
pub(crate) use metrics::snapshot as metrics_snapshot;
pub use metrics::{Scrape, metrics_router};
pub use stream::StreamSlots;
pub use work::WorkOptions;
pub use work::claim::MAX_CLAIM_WAIT_MS;

/// What every handler can reach: cheap handles only.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub registry: Arc<AgentRegistry>,
    /// The agents external workers declared, as this process last read them.
    pub declared: crate::jobs::DeclaredAgents,
    /// The worker protocol's settings (lease, limits) for external workers.
    pub work: Arc<WorkOptions>,
    pub defaults: Arc<RunDefaults>,
    pub signal_secret: Option<Secret>,
    /// How far a signed signal's time may be from now.
    pub signature_tolerance: Duration,
    /// The named secrets (their names are checked when an `http` run refers to one).
    pub secrets: crate::domain::NamedSecrets,
    /// This process's worker, when it runs one (`serve`): `/readyz` reports its state.
    pub worker: Option<Arc<crate::jobs::WorkerStatus>>,
    pub auth: Auth,
    pub limits: Arc<Limits>,
    pub metrics: crate::telemetry::Metrics,
    /// The live streams served, and how many may be.
    pub streams: Arc<StreamSlots>,
}

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub body_limit: usize,
    pub request_timeout: Duration,
    /// A connection that sends no complete request head for this long is closed.
    pub idle_timeout: Duration,
    /// The most connections served at once.
    pub max_connections: usize,
    /// The most live event streams served at once.
    pub max_streams: usize,
    /// What the request bodies being read and parsed may cost at once, in bytes.
    pub max_inflight_bytes: usize,
    /// The most JSON values one request body may hold.
    pub max_body_values: usize,
    /// Origins allowed by CORS; empty disables CORS, `*` allows any.
    pub cors_origins: Vec<String>,
    /// When set, signals must be signed (`t=…,v1=…` over the time, run id and body).
    pub signal_secret: Option<Secret>,
    /// How far a signed signal's time may be from now (either way).
    pub signature_tolerance: Duration,
    /// Serve without API keys even on a non-loopback address.
    pub insecure_no_auth: bool,
    /// Signs run tokens; `None` uses a secret generated once and kept in the database.
    pub token_secret: Option<Secret>,
    /// How long a run token returned by `POST /v1/runs` is valid.
    pub run_token_ttl: Duration,
    /// Requests per second per tenant and API process; `None`: no limit.
    pub tenant_rate_limit: Option<u32>,
    /// Runs not yet finished per tenant; `None`: no cap.
    pub tenant_max_active_runs: Option<u64>,
}

pub use crate::domain::Secret;

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(20),
            max_connections: 8192,
            max_streams: 5000,
            max_inflight_bytes: 256 * 1024 * 1024,
            max_body_values: 100_000,
            cors_origins: Vec::new(),
            signal_secret: None,
            signature_tolerance: Duration::from_secs(300),
            insecure_no_auth: false,
            token_secret: None,
            run_token_ttl: Duration::from_secs(3600),
            tenant_rate_limit: None,
            tenant_max_active_runs: None,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentq",
        description = "Runs agent jobs in the background for web applications. Errors are RFC 9457 problem documents (application/problem+json) with a stable `code`.",
        license(name = "MIT OR Apache-2.0")
    ),
    tags(
        (name = "runs", description = "Submit runs and follow them"),
        (name = "agents", description = "What can be run"),
        (name = "schedules", description = "Runs made on a cron expression or at an interval"),
        (name = "workers", description = "The worker processes, and the protocol external workers (the Python and TypeScript SDKs) serve agents by"),
        (name = "system", description = "Health of the service")
    )
)]
struct ApiDoc;

/// The API's routes. With `auth`, each guarded route authenticates its requests itself
/// (on the route, not the router: a method a path does not have stays a 405 with
/// `Allow`, for any caller); which routes are guarded is decided here and nowhere else.
fn api_router(auth: Option<&AuthState>) -> OpenApiRouter<ApiState> {
    let guard = |(schemas, paths, methods): UtoipaMethodRouter<ApiState>| {
        let methods = match auth {
            Some(auth) => methods.route_layer(axum::middleware::from_fn_with_state(
                auth.clone(),
                auth::authenticate,
            )),
            None => methods,
        };
        (schemas, paths, methods)
    };
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(guard(routes!(runs::create_run, runs::list_runs)))
        .routes(guard(routes!(runs::count_runs)))
        .routes(guard(routes!(batch::create_runs)))
        .routes(guard(routes!(runs::get_run, actions::change_run)))
        .routes(guard(routes!(runs::list_run_events)))
        .routes(guard(routes!(message_stream::stream_run)))
        .routes(guard(routes!(actions::cancel_run)))
        .routes(guard(routes!(actions::retry_run)))
        .routes(guard(routes!(actions::retry_runs)))
        .routes(guard(routes!(signals::send_signal)))
        .routes(guard(routes!(system::list_agents)))
        .routes(guard(routes!(
            work::declare::declare_agent,
            work::declare::get_agent
        )))
        .routes(guard(routes!(work::heartbeat::worker_heartbeat)))
        .routes(guard(routes!(work::claim::claim_runs)))
        .routes(guard(routes!(work::report::report_attempts)))
        .routes(guard(routes!(system::list_workers)))
        .routes(guard(routes!(system::list_queues)))
        .routes(guard(routes!(pause::pause_agent)))
        .routes(guard(routes!(pause::resume_agent)))
        .routes(guard(routes!(
            schedules::create_schedule,
            schedules::list_schedules
        )))
        .routes(guard(routes!(
            schedules::get_schedule,
            schedules::delete_schedule
        )))
        .routes(guard(routes!(schedules::pause_schedule)))
        .routes(guard(routes!(schedules::resume_schedule)))
        // health answers without a key
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(guard(routes!(metrics::get_metrics)))
}

/// What the authenticating middleware needs.
type AuthState = (Auth, Arc<Limits>);

/// The OpenAPI document, as served at `/openapi.json` and committed in `openapi/`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_router(None).split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    schedules::document_request(&mut doc);
    event_data::document(&mut doc);
    bearer_scheme(&mut doc);
    doc
}

/// The API key (or run token) as a bearer token, so generated clients and the docs page
/// take one. Every operation may be called with it; without keys in the database (open
/// mode on loopback), without it.
fn bearer_scheme(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(
            "An API key (`agentq keys create`), or a run token for its own run",
        ))
        .build();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    doc.security = Some(vec![
        SecurityRequirement::new("bearer", Vec::<String>::new()),
        SecurityRequirement::default(),
    ]);
}

/// The docs page loads nothing from elsewhere and cannot be framed (a page that framed it
/// could click through its Try-it-out on a server open on loopback).
async fn docs_headers(mut response: axum::response::Response) -> axum::response::Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
             form-action 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The whole HTTP application with its middleware.
pub fn router(state: ApiState, options: &HttpOptions) -> Router {
    let auth = (state.auth.clone(), state.limits.clone());
    let (routes, _) = api_router(Some(&auth)).split_for_parts();
    let doc = openapi();
    let spec = serde_json::to_string_pretty(&doc).expect("the OpenAPI document serialises");
    let request_id = HeaderName::from_static("x-request-id");
    let metrics = state.metrics.clone();
    let budget = Arc::new(budget::BodyBudget::new(
        options.max_inflight_bytes,
        options.max_body_values,
        options.body_limit,
    ));
    routes
        .route(
            "/openapi.json",
            axum::routing::get(move || async move {
                ([(header::CONTENT_TYPE, "application/json")], spec)
            }),
        )
        // Swagger UI's files are compiled in: the docs work without internet access
        .merge(
            axum::Router::from(
                SwaggerUi::new("/docs").config(
                    SwaggerConfig::new(["/openapi.json"])
                        // no request to swagger.io's online validator either
                        .validator_url("none")
                        .try_it_out_enabled(true),
                ),
            )
            .layer(axum::middleware::map_response(docs_headers)),
        )
        .merge(ui::routes())
        .fallback(middleware::not_found)
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(middleware::span))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(axum::middleware::from_fn_with_state(
                    metrics,
                    middleware::record_metrics,
                ))
                .layer(cors(&options.cors_origins))
                .layer(axum::middleware::from_fn(middleware::problems))
                .layer(TimeoutLayer::with_status_code(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    options.request_timeout,
                ))
                // the budget before the limit (which changes the body's type)
                .layer(axum::middleware::from_fn_with_state(budget, budget::hold))
                .layer(RequestBodyLimitLayer::new(options.body_limit)),
        )
}

fn cors(origins: &[String]) -> CorsLayer {
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-agentq-signature"),
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600))
}
