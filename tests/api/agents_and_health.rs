use serde_json::{Value, json};

use crate::helpers::TestApp;

#[tokio::test]
async fn list_agents_shows_built_in_agents_with_their_input_schemas() {
    let app = TestApp::spawn().await;
    let body: Value = app.get_json("/v1/agents").await;
    let agents = body["agents"].as_array().unwrap();
    let echo = agents
        .iter()
        .find(|a| a["name"] == "echo")
        .expect("echo is listed");
    assert!(echo["input_schema"]["properties"]["text"].is_object());
    let http = agents
        .iter()
        .find(|a| a["name"] == "http")
        .expect("http is listed");
    assert_eq!(http["input_schema"]["required"][0], "url");
}

#[tokio::test]
async fn health_endpoints_report_liveness_and_database_readiness() {
    let app = TestApp::spawn().await;
    let live = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(
        body["checks"]["worker"], "ok",
        "serve runs a worker: {body}"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_a_given_one() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(!response.headers()["x-request-id"].is_empty());
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let app =
        TestApp::spawn_with(|c| c.http.cors_origins = vec!["https://app.example".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/runs"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // the methods and headers the API takes from a browser: PATCH a run, DELETE a schedule,
    // with the trace and request id the README says are honoured
    for (method, path) in [("PATCH", "/v1/runs/x"), ("DELETE", "/v1/schedules/x")] {
        let preflight = app
            .client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://app.example")
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "content-type,authorization,traceparent,x-request-id",
            )
            .send()
            .await
            .unwrap();
        let methods = preflight.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(methods.contains(method), "{method}: {methods}");
        let headers = preflight.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_lowercase();
        for header in ["traceparent", "x-request-id"] {
            assert!(headers.contains(header), "{header}: {headers}");
        }
    }
}

#[tokio::test]
async fn docs_and_openapi_are_served() {
    let app = TestApp::spawn().await;
    let spec: Value = app.get_json("/openapi.json").await;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    // a key as a bearer token, for every operation but the health checks
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(spec["paths"]["/healthz"]["get"]["security"], json!([{}]));
    assert!(spec["paths"]["/v1/runs"]["post"].is_object());
    // the docs page and everything it loads come from agentq: it works without internet
    // (`/docs`, as README and the start-up log give it, leads there)
    let docs = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.url().path().ends_with("/docs/"), "{}", docs.url());
    let csp = docs.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert_eq!(docs.headers()["x-frame-options"], "DENY");
    let page = docs.text().await.unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    for (asset, holds) in [
        ("/docs/swagger-ui-bundle.js", "SwaggerUIBundle"),
        ("/docs/swagger-ui.css", "swagger-ui"),
        ("/docs/swagger-initializer.js", "\"validatorUrl\": \"none\""),
    ] {
        let response = app.client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        assert!(response.text().await.unwrap().contains(holds), "{asset}");
    }
}

#[tokio::test]
async fn one_read_connection_is_enough() {
    // PostgreSQL's listener and statistics keeper must not starve a pool of one
    let app = TestApp::spawn_with(|c| c.store.read_connections = 1).await;
    let id = app
        .create(serde_json::json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    app.wait_for_status(&id, "succeeded", std::time::Duration::from_secs(5))
        .await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}
