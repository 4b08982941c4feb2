//! The `http` agent: results, retries, and outbound safety (`--http-allow`).

use std::time::Duration;

use std::collections::HashMap;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Redirect;
use axum::routing::get;
use serde_json::{Value, json};

use crate::helpers::{TestApp, allow};

async fn upstream() -> String {
    let app = Router::new()
        .route(
            "/ok",
            get(|| async { axum::Json(json!({"hello": "world"})) }),
        )
        .route("/text", get(|| async { "plain words" }))
        .route("/big", get(|| async { "y".repeat(300 * 1024) }))
        .route(
            "/broken",
            get(|| async { (StatusCode::BAD_GATEWAY, "down") }),
        )
        .route("/missing", get(|| async { (StatusCode::NOT_FOUND, "no") }))
        .route("/to-ok", get(|| async { Redirect::to("/ok") }))
        .route(
            "/to-private",
            get(|| async { Redirect::to("http://10.0.0.1/internal") }),
        )
        .route(
            "/to",
            get(
                |Query(to): Query<HashMap<String, String>>| async move { Redirect::to(&to["url"]) },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn http_agent_returns_status_headers_and_a_json_or_text_body() {
    let app = TestApp::spawn_with(allow(&["127.0.0.1"])).await;
    let base = upstream().await;
    let json_run = app
        .create(json!({"agent": "http", "input": {"url": format!("{base}/ok")}}))
        .await;
    let text_run = app
        .create(json!({"agent": "http", "input": {"url": format!("{base}/text")}}))
        .await;
    let big_run = app
        .create(json!({"agent": "http", "input": {"url": format!("{base}/big")}}))
        .await;
    let run = app
        .wait_for_status(&json_run, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"]["status"], 200);
    assert_eq!(run["result"]["body"], json!({"hello": "world"}));
    assert_eq!(run["result"]["headers"]["content-type"], "application/json");
    let run = app
        .wait_for_status(&text_run, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"]["body"], "plain words");
    let run = app
        .wait_for_status(&big_run, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"]["truncated"], true);
    assert_eq!(run["result"]["body"].as_str().unwrap().len(), 256 * 1024);
}

#[tokio::test]
async fn http_agent_retries_5xx_and_network_errors_but_not_4xx() {
    let app = TestApp::spawn_with(allow(&["127.0.0.1"])).await;
    let base = upstream().await;
    let broken = app
        .create(
            json!({"agent": "http", "input": {"url": format!("{base}/broken")}, "max_attempts": 2}),
        )
        .await;
    let missing = app
        .create(json!({"agent": "http", "input": {"url": format!("{base}/missing")}, "max_attempts": 2}))
        .await;
    let refused = app
        .create(
            json!({"agent": "http", "input": {"url": "http://127.0.0.1:9/"}, "max_attempts": 2}),
        )
        .await;
    let run = app
        .wait_for_status(&broken, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 2);
    assert!(run["error"]["message"].as_str().unwrap().contains("502"));
    let run = app
        .wait_for_status(&missing, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 1);
    assert!(run["error"]["message"].as_str().unwrap().contains("404"));
    let run = app
        .wait_for_status(&refused, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 2);
    // the error says why the request could not be sent, not only that it was not
    let message = run["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(message.contains("connection refused"), "{message}");
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_said_so() {
    let app = TestApp::spawn_with(allow(&["*"])).await;
    let id = app
        .create(json!({"agent": "http", "input": {"url": "http://no-such-host.invalid/"}, "max_attempts": 1}))
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(10))
        .await;
    let message = run["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(
        message.contains("no-such-host.invalid")
            && (message.contains("dns")
                || message.contains("resolve")
                || message.contains("lookup")),
        "{message}"
    );
}

/// Runs the `http` agent on `url` (three attempts allowed) and returns the finished run.
async fn call(app: &TestApp, url: &str) -> Value {
    let id = app
        .create(json!({"agent": "http", "input": {"url": url}, "max_attempts": 3}))
        .await;
    app.wait_for(&id, Duration::from_secs(5), |r| {
        r["status"] == "succeeded" || r["status"] == "failed"
    })
    .await
}

/// Asserts the run failed on its first attempt (refusals are not retried) saying `says`.
fn assert_refused(run: &Value, says: &str) {
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(run["attempt"], 1, "a refusal is permanent: {run:#}");
    let message = run["error"]["message"].as_str().unwrap();
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

#[tokio::test]
async fn by_default_the_http_agent_refuses_loopback_private_link_local_and_metadata_addresses() {
    let app = TestApp::spawn().await;
    let base = upstream().await;
    for (url, says) in [
        (
            format!("{base}/ok"),
            "http agent refused 127.0.0.1: loopback address; allow it with --http-allow",
        ),
        (
            "http://[::1]:9/".to_owned(),
            "refused ::1: loopback address",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "refused 169.254.169.254: cloud metadata address",
        ),
        (
            "http://10.0.0.1/".to_owned(),
            "refused 10.0.0.1: private address",
        ),
        (
            "http://metadata.google.internal/computeMetadata/v1/".to_owned(),
            "refused metadata.google.internal: cloud metadata host",
        ),
    ] {
        assert_refused(&call(&app, &url).await, says);
    }
}

#[tokio::test]
async fn a_host_name_that_resolves_to_loopback_is_refused_after_resolution() {
    let app = TestApp::spawn().await;
    let base = upstream().await;
    let port = base.rsplit(':').next().unwrap();
    let run = call(&app, &format!("http://localhost:{port}/ok")).await;
    assert_refused(
        &run,
        "http agent refused localhost: it resolves to a loopback address",
    );
}

#[tokio::test]
async fn a_redirect_from_an_allowed_server_to_a_refused_address_is_refused() {
    // any host, and the loopback address the test server listens on
    let app = TestApp::spawn_with(allow(&["*", "127.0.0.1"])).await;
    let base = upstream().await;
    let run = call(&app, &format!("{base}/to-ok")).await;
    assert_eq!(
        run["status"], "succeeded",
        "an allowed redirect is followed"
    );
    assert_eq!(run["result"]["body"], json!({"hello": "world"}));
    let run = call(&app, &format!("{base}/to-private")).await;
    assert_refused(
        &run,
        "http agent refused a redirect to 10.0.0.1: private address",
    );
}

#[tokio::test]
async fn an_allow_pattern_with_a_port_lets_that_port_through_and_no_other() {
    let base = upstream().await;
    let port = base.rsplit(':').next().unwrap();
    let app = TestApp::spawn_with(allow(&[&format!("127.0.0.1:{port}")])).await;
    let run = call(&app, &format!("{base}/ok")).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_refused(
        &call(&app, "http://127.0.0.1:9/").await,
        "refused 127.0.0.1: not matched by --http-allow",
    );
    assert_refused(
        &call(&app, "https://example.com/").await,
        "refused example.com: not matched by --http-allow",
    );
}

/// `--http-allow '*,127.0.0.1:PORT'`: `*` lists any host but opens no blocked address, and
/// the address pattern opens 127.0.0.1 on PORT only, to URLs naming the address: no other
/// port of it is reached, by address, by another name or through a redirect.
#[tokio::test]
async fn an_address_allowed_with_a_port_is_reached_on_no_other_port_by_any_way() {
    let allowed = upstream().await;
    let other = upstream().await; // listening, so a request that got through would succeed
    let port = allowed.rsplit(':').next().unwrap();
    let other_port = other.rsplit(':').next().unwrap();
    let app = TestApp::spawn_with(allow(&["*", &format!("127.0.0.1:{port}")])).await;
    let run = call(&app, &format!("{allowed}/ok")).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let redirect = |to: &str| format!("{allowed}/to?url={to}");
    let run = call(&app, &redirect(&format!("{allowed}/ok"))).await;
    assert_eq!(
        run["status"], "succeeded",
        "a redirect to the address on its port: {run:#}"
    );
    for (url, says) in [
        (format!("{other}/ok"), "refused 127.0.0.1: loopback address"),
        (
            format!("http://[::ffff:127.0.0.1]:{other_port}/ok"),
            "refused ::ffff:7f00:1: loopback address",
        ),
        (
            format!("http://localhost:{other_port}/ok"),
            "refused localhost: it resolves to a loopback address",
        ),
        (
            redirect(&format!("{other}/ok")),
            "refused a redirect to 127.0.0.1: loopback address",
        ),
        (
            // listed by `*`, so followed, and refused where the name is resolved
            redirect(&format!("http://localhost:{other_port}/ok")),
            "refused localhost: it resolves to a loopback address",
        ),
        // a name is never told the port, so it reaches the address on no port
        (
            format!("http://localhost:{port}/ok"),
            "refused localhost: it resolves to a loopback address",
        ),
    ] {
        assert_refused(&call(&app, &url).await, says);
    }
}

#[tokio::test]
async fn a_header_from_a_named_secret_reaches_the_service_and_is_kept_nowhere() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    // a service that echoes the Authorization header back, in its body and a header
    let echo = Router::new()
        .route(
            "/whoami",
            get(move |headers: axum::http::HeaderMap| {
                let auth = headers["authorization"].to_str().unwrap().to_owned();
                record.lock().unwrap().push(auth.clone());
                async move {
                    (
                        [("x-echo", auth.clone())],
                        axum::Json(json!({"auth": auth})),
                    )
                }
            }),
        )
        .route("/hop", get(|| async { Redirect::to("/whoami") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, echo).await });
    let app = TestApp::spawn_with(|c| {
        allow(&["127.0.0.1"])(c);
        c.worker.secrets = agentq::domain::NamedSecrets::from_pairs([
            ("UPSTREAM_TOKEN", "tok-5ecret-42"),
            ("LOOSE", "x"),
        ])
        .bound(&["UPSTREAM_TOKEN=127.0.0.1".to_owned()])
        .unwrap();
    })
    .await;
    let reference = json!({"secret": "UPSTREAM_TOKEN", "prefix": "Bearer "});
    let id = app
        .create(json!({"agent": "http", "input": {
            "url": format!("{base}/whoami"),
            "headers": {"Authorization": reference, "X-Plain": "visible"}
        }}))
        .await;
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(*seen.lock().unwrap(), ["Bearer tok-5ecret-42"]);
    // the echo comes back scrubbed, and the run keeps the reference only
    assert_eq!(
        run["result"]["body"]["auth"],
        "Bearer [secret UPSTREAM_TOKEN]"
    );
    assert_eq!(
        run["result"]["headers"]["x-echo"],
        "Bearer [secret UPSTREAM_TOKEN]"
    );
    assert_eq!(run["input"]["headers"]["Authorization"], reference);
    let everything = format!("{run} {:?}", app.events(&id).await);
    assert!(!everything.contains("tok-5ecret-42"), "{everything}");

    // a request carrying a secret follows no redirect: the 3xx is its answer
    let id = app
        .create(json!({"agent": "http", "input": {
            "url": format!("{base}/hop"), "headers": {"Authorization": reference}
        }}))
        .await;
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"]["status"], 303);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the redirect was not followed"
    );

    // a secret that is not set, one bound to no host or to another, or a reference that is
    // not one, is refused at once
    let other_host = base.replace("127.0.0.1", "localhost");
    for (header, url, code) in [
        (json!({"secret": "NOT_SET"}), &base, "unknown_secret"),
        (json!({"secret": "LOOSE"}), &base, "secret_host"),
        (
            json!({"secret": "UPSTREAM_TOKEN"}),
            &other_host,
            "secret_host",
        ),
        (json!({"secret": "bad-name"}), &base, "schema"),
        (
            json!({"secret": "UPSTREAM_TOKEN", "suffix": "x"}),
            &base,
            "schema",
        ),
    ] {
        let response = app
            .post_run(json!({"agent": "http", "input": {
                "url": format!("{url}/whoami"), "headers": {"Authorization": header}
            }}))
            .await;
        assert_eq!(response.status(), 422);
        let problem: Value = response.json().await.unwrap();
        let fields: Vec<(&str, &str)> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
            .collect();
        assert!(
            fields.contains(&("input/headers/Authorization", code)),
            "{header}: {problem}"
        );
    }
}
