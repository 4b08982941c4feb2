//! Completion webhooks: `callback_url`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{TestApp, allow, event_types};
use crate::support::eventually::eventually;

/// The requests a receiver got: headers and body.
type Received = Vec<(HeaderMap, Vec<u8>)>;

/// A receiver that answers 500 to its first `fail_first` requests and records them all.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Received>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> (Self, String) {
        let receiver = Receiver::default();
        let got = receiver.got.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let got = got.clone();
                async move {
                    let mut got = got.lock().unwrap();
                    got.push((headers, body.to_vec()));
                    if got.len() <= fail_first {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    async fn wait_for(&self, count: usize) -> Received {
        for _ in 0..500 {
            if self.got.lock().unwrap().len() >= count {
                return self.got.lock().unwrap().clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the receiver got fewer than {count} requests");
    }
}

const FIVE_S: Duration = Duration::from_secs(5);

/// The run's first `webhook_failed` event, once there is one.
async fn failed_delivery(app: &TestApp, id: &str) -> Value {
    eventually(FIVE_S, "a delivery fails", || async {
        let events = app.events(id).await;
        let failed = events
            .iter()
            .find(|e| e["type"] == "webhook_failed")
            .cloned();
        failed.ok_or(events)
    })
    .await
}

/// Fast retries, a secret, and the receivers' loopback address allowed (`--http-allow`).
fn quick(c: &mut agentq::app::AppConfig) {
    unguarded(c);
    allow(&["127.0.0.1"])(c);
}

/// Fast retries and a secret, with the default egress policy.
fn unguarded(c: &mut agentq::app::AppConfig) {
    c.worker.webhooks.backoff_base = Duration::from_millis(20);
    c.worker.webhooks.secret = Some(agentq::domain::Secret("whsec".into()));
}

#[tokio::test]
async fn a_finished_run_is_posted_to_its_callback_url_signed() {
    let (receiver, url) = Receiver::start(0).await;
    let app = TestApp::spawn_with(quick).await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 7}, "callback_url": url}))
        .await;
    let got = receiver.wait_for(1).await;
    let (headers, body) = &got[0];
    let run: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        (run["id"].as_str(), run["status"].as_str()),
        (Some(id.as_str()), Some("succeeded"))
    );
    assert_eq!(run["result"]["value"], 7);
    assert_eq!(headers["agentq-event"], "run.finished");
    assert_eq!(headers["agentq-run-id"], id.as_str());
    let signature = headers["agentq-signature"].to_str().unwrap();
    let (t, v1) = signature.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "signed {age} s ago");
    // the same scheme as signals: the time, the run id and the body
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec").unwrap();
    mac.update(format!("{t}.{id}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected);
    eventually(FIVE_S, "the delivery is recorded", || async {
        let types = event_types(&app.events(&id).await);
        types
            .contains(&"webhook_delivered".to_owned())
            .then_some(())
            .ok_or(types)
    })
    .await;
}

#[tokio::test]
async fn a_failed_delivery_is_tried_again_and_every_attempt_is_recorded() {
    let (receiver, url) = Receiver::start(2).await;
    let app = TestApp::spawn_with(quick).await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "callback_url": url}))
        .await;
    receiver.wait_for(3).await;
    let types = eventually(FIVE_S, "a delivery succeeds", || async {
        let types = event_types(&app.events(&id).await);
        let delivered = types.contains(&"webhook_delivered".to_owned());
        delivered.then(|| types.clone()).ok_or(types)
    })
    .await;
    let failed = types.iter().filter(|t| *t == "webhook_failed").count();
    assert_eq!(failed, 2, "{types:?}");
}

#[tokio::test]
async fn deliveries_stop_after_the_give_up_window() {
    let (receiver, url) = Receiver::start(usize::MAX).await;
    let app = TestApp::spawn_with(|c| {
        quick(c);
        c.worker.webhooks.give_up_after = Duration::from_millis(300);
    })
    .await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "callback_url": url}))
        .await;
    receiver.wait_for(1).await;
    eventually(FIVE_S, "the deliveries are given up", || async {
        let events = app.events(&id).await;
        let given_up = events
            .iter()
            .any(|e| e["type"] == "webhook_failed" && e["data"]["given_up"] == true);
        given_up.then_some(()).ok_or(events)
    })
    .await;
    let sent = receiver.got.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        receiver.got.lock().unwrap().len(),
        sent,
        "no delivery after giving up"
    );
}

#[tokio::test]
async fn cancelled_runs_are_delivered_too_and_bad_urls_are_refused() {
    let (receiver, url) = Receiver::start(0).await;
    let app = TestApp::spawn_with(quick).await;
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    let id = app
        .create(
            json!({"agent": "echo", "input": {"value": 1}, "run_at": later, "callback_url": url}),
        )
        .await;
    app.cancel(&id).await;
    let got = receiver.wait_for(1).await;
    let run: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(run["status"], "cancelled");
    let response = app
        .post_run(
            json!({"agent": "echo", "input": {"value": 1}, "callback_url": "ftp://x.example/hook"}),
        )
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "callback_url");
}

#[tokio::test]
async fn a_callback_to_a_refused_address_is_not_sent_and_its_event_says_why() {
    let (receiver, url) = Receiver::start(0).await;
    let app = TestApp::spawn_with(unguarded).await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "callback_url": url}))
        .await;
    let failed = failed_delivery(&app, &id).await;
    assert_eq!(
        failed["data"]["error"],
        "refused 127.0.0.1: loopback address; allow it with --http-allow"
    );
    assert_eq!(failed["data"]["given_up"], true, "a refusal is not retried");
    assert!(receiver.got.lock().unwrap().is_empty(), "nothing was sent");
}

/// `--http-allow '*,127.0.0.1:PORT'` opens the loopback address on PORT only: a callback to
/// another port of it, by address or by name, is refused and not sent.
#[tokio::test]
async fn a_callback_to_a_port_the_allow_list_does_not_open_is_refused() {
    let (allowed, allowed_url) = Receiver::start(0).await;
    let (other, other_url) = Receiver::start(0).await;
    let port = allowed_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/hook");
    let other_port = other_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/hook");
    let app = TestApp::spawn_with(|c: &mut agentq::app::AppConfig| {
        unguarded(c);
        allow(&["*", &format!("127.0.0.1:{port}")])(c);
    })
    .await;
    let by_name = format!("http://localhost:{other_port}/hook");
    let mut refused = Vec::new();
    for url in [&other_url, &by_name] {
        let id = app
            .create(json!({"agent": "echo", "input": {"value": 1}, "callback_url": url}))
            .await;
        refused.push(id);
    }
    let delivered = app
        .create(json!({"agent": "echo", "input": {"value": 2}, "callback_url": allowed_url}))
        .await;
    allowed.wait_for(1).await;
    for (id, says) in refused.iter().zip([
        "refused 127.0.0.1: loopback address",
        "refused localhost: it resolves to a loopback address",
    ]) {
        let failed = failed_delivery(&app, id).await;
        let error = failed["data"]["error"].as_str().unwrap();
        assert!(error.starts_with(says), "{error}");
        assert_eq!(failed["data"]["given_up"], true, "a refusal is not retried");
    }
    assert!(other.got.lock().unwrap().is_empty(), "nothing was sent");
    let got = allowed.got.lock().unwrap().clone();
    let sent: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(
        (got.len(), sent["id"].as_str()),
        (1, Some(delivered.as_str())),
        "the allowed port got its callback, and only that one"
    );
}
