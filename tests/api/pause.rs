//! Pausing an agent's queue: nothing of it is claimed (table claims, Redis delivery,
//! external workers) while other agents flow; new runs wait; running runs finish; resume
//! and they run.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const TEN_S: Duration = Duration::from_secs(10);

async fn post(app: &TestApp, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = app.client.post(app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn queue<'a>(queues: &'a Value, agent: &str) -> &'a Value {
    queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["agent"] == agent)
        .unwrap_or_else(|| panic!("no queue of {agent}: {queues}"))
}

#[tokio::test]
async fn a_paused_agent_runs_nothing_new_while_others_flow_and_resumed_runs_what_waited() {
    let app = TestApp::spawn().await;
    // a run already running when the pause comes finishes
    let running = app
        .create(json!({"agent": "patient", "input": {"ms": 600}}))
        .await;
    app.wait_for_status(&running, "running", TEN_S).await;
    let (status, paused) = post(&app, "/v1/agents/patient/pause", None).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(
        (
            paused["agent"].as_str(),
            paused["paused"].as_bool(),
            paused["paused_by"].as_str()
        ),
        (Some("patient"), Some(true), Some("open"))
    );
    assert!(paused["paused_at"].is_string(), "{paused}");
    // pausing again changes nothing
    let (status, again) = post(&app, "/v1/agents/patient/pause", None).await;
    assert_eq!(
        (status, &again["paused_at"]),
        (StatusCode::OK, &paused["paused_at"])
    );

    // new runs are accepted and wait; another agent's runs flow
    let waiting = app
        .create(json!({"agent": "patient", "input": {"ms": 1}}))
        .await;
    app.wait_for_status(&running, "succeeded", TEN_S).await;
    let other = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    app.wait_for_status(&other, "succeeded", TEN_S).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.get_run(&waiting).await["status"], "queued");
    let queues = app.get_json("/v1/queues").await;
    assert_eq!(queue(&queues, "patient")["paused"], true, "{queues}");
    assert_eq!(queue(&queues, "echo")["paused"], false, "{queues}");

    let (status, resumed) = post(&app, "/v1/agents/patient/resume", None).await;
    assert_eq!(status, 200);
    assert_eq!(resumed, json!({"agent": "patient", "paused": false}));
    app.wait_for_status(&waiting, "succeeded", TEN_S).await;
    let queues = app.get_json("/v1/queues").await;
    assert_eq!(queue(&queues, "patient")["paused"], false);
}

#[tokio::test]
async fn pausing_needs_the_admin_scope_and_a_known_agent() {
    let (app, keys) =
        TestApp::spawn_with_keys(&[("acme", "runs:read,runs:write"), ("ops", "admin")]).await;
    let (status, problem) = post(&app, "/v1/agents/echo/pause", Some(&keys[0])).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, problem) = post(&app, "/v1/agents/nope/pause", Some(&keys[1])).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, paused) = post(&app, "/v1/agents/echo/pause", Some(&keys[1])).await;
    assert_eq!(status, StatusCode::OK);
    let key_id = agentq::domain::split_key(&keys[1]).unwrap().0;
    assert_eq!(paused["paused_by"], format!("key:{key_id}"));
    let (status, resumed) = post(&app, "/v1/agents/echo/resume", Some(&keys[1])).await;
    assert_eq!(
        (status, resumed["paused"].as_bool()),
        (StatusCode::OK, Some(false))
    );
}
