//! `POST /v1/runs/batch`: many runs in one request, all stored or none, a graph of them
//! by index.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::TestApp;

const TEN_S: Duration = Duration::from_secs(10);

async fn batch(app: &TestApp, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/v1/runs/batch"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn total(app: &TestApp) -> usize {
    app.get_json("/v1/runs?limit=500").await["runs"]
        .as_array()
        .unwrap()
        .len()
}

fn started_at(events: &[Value]) -> chrono::DateTime<chrono::Utc> {
    let started = events.iter().find(|e| e["type"] == "started").unwrap();
    started["at"].as_str().unwrap().parse().unwrap()
}

fn finished_at(events: &[Value]) -> chrono::DateTime<chrono::Utc> {
    let done = events.iter().find(|e| e["type"] == "succeeded").unwrap();
    done["at"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_plan_its_parallel_steps_and_a_summary_are_one_request_and_run_in_order() {
    let app = TestApp::spawn().await;
    let (status, body) = batch(
        &app,
        json!({"runs": [
            {"agent": "echo", "input": {"value": "plan", "delay_ms": 100}},
            {"agent": "echo", "input": {"value": "step a", "delay_ms": 100}, "depends_on": ["#0"]},
            {"agent": "echo", "input": {"value": "step b", "delay_ms": 100}, "depends_on": ["#0"]},
            {"agent": "echo", "input": {"value": "summary"}, "depends_on": ["#1", "#2"],
             "metadata": {"part": "summary"}}
        ]}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let runs = body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    let ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(runs[0]["status"], "queued");
    assert_eq!(runs[3]["status"], "blocked");
    assert_eq!(runs[3]["depends_on"], json!([ids[1], ids[2]]));
    assert!(runs[3]["run_token"].is_string());
    for id in &ids {
        app.wait_for_status(id, "succeeded", TEN_S).await;
    }
    let events: Vec<Vec<Value>> = {
        let mut all = Vec::new();
        for id in &ids {
            all.push(app.events(id).await);
        }
        all
    };
    // each step after the plan, the summary after both steps
    for step in [1, 2] {
        assert!(started_at(&events[step]) >= finished_at(&events[0]));
        assert!(started_at(&events[3]) >= finished_at(&events[step]));
    }
}

#[tokio::test]
async fn one_bad_run_stores_none_and_every_problem_names_its_run() {
    let app = TestApp::spawn().await;
    let before = total(&app).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    for (runs, field, code) in [
        // input the agent refuses, at index 2
        (
            json!([{"agent": "echo", "input": {"value": 1}}, {"agent": "echo", "input": {"value": 2}},
                   {"agent": "echo", "input": {"value": 3, "delay_ms": "soon"}}]),
            "runs/2/input/delay_ms",
            "schema",
        ),
        (json!([{"agent": "nope"}]), "runs/0/agent", "unknown_agent"),
        (
            json!([{"agent": "echo", "input": {}, "depends_on": ["#1"]},
                   {"agent": "echo", "input": {}, "depends_on": ["#0"]}]),
            "runs/0/depends_on",
            "cycle",
        ),
        (
            json!([{"agent": "echo", "input": {}, "depends_on": ["#0"]}]),
            "runs/0/depends_on/0",
            "invalid_value",
        ),
        (
            json!([{"agent": "echo", "input": {}, "depends_on": ["#7"]}]),
            "runs/0/depends_on/0",
            "invalid_value",
        ),
        // a stored dependency that does not exist, after runs that were fine
        (
            json!([{"agent": "echo", "input": {}}, {"agent": "echo", "input": {}, "depends_on": [unknown]}]),
            "runs/1/depends_on",
            "unknown_run",
        ),
        (json!([]), "runs", "length"),
    ] {
        let (status, problem) = batch(&app, json!({ "runs": runs })).await;
        assert_eq!(status, 422, "{runs}: {problem}");
        let found = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == field && e["code"] == code);
        assert!(found, "{field} {code}: {problem}");
    }
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"agent": "echo", "input": {}}))
        .collect();
    assert_eq!(batch(&app, json!({ "runs": too_many })).await.0, 422);
    assert_eq!(total(&app).await, before, "nothing was stored");
}

#[tokio::test]
async fn an_idempotency_key_covers_the_whole_batch() {
    let app = TestApp::spawn().await;
    let send = |key: &'static str, body: Value| {
        app.client
            .post(app.url("/v1/runs/batch"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let body = json!({"runs": [
        {"agent": "echo", "input": {"value": 1}},
        {"agent": "echo", "input": {"value": 2}, "depends_on": ["#0"]},
    ]});
    let first = send("nightly-42", body.clone()).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let ids: Vec<&str> = first["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    // the same request again: the same runs, nothing new
    let again = send("nightly-42", body.clone()).await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    let same: Vec<&str> = again["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(same, ids);
    assert!(again["runs"][0]["run_token"].is_string(), "{again}");
    // the key with another body is refused; another key is another batch
    let other = json!({"runs": [{"agent": "echo", "input": {"value": 3}}]});
    let refused = send("nightly-42", other.clone()).await.unwrap();
    assert_eq!(refused.status(), 409);
    assert_eq!(send("nightly-43", other).await.unwrap().status(), 202);
    // a single run's key does not name a batch's runs, nor the other way round
    let single = app
        .client
        .post(app.url("/v1/runs"))
        .header("idempotency-key", "nightly-42")
        .json(&json!({"agent": "echo", "input": {"value": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 202);
    for id in &ids {
        app.wait_for_status(id, "succeeded", std::time::Duration::from_secs(10))
            .await;
    }
    assert_eq!(total(&app).await, 4);
}

#[tokio::test]
async fn a_stored_batch_sent_again_at_the_tenants_cap_gets_its_runs() {
    let app = TestApp::spawn_with(|c| c.http.tenant_max_active_runs = Some(2)).await;
    let body = json!({"runs": [
        {"agent": "echo", "input": {}, "run_at": "2999-01-01T00:00:00Z"},
        {"agent": "echo", "input": {}, "run_at": "2999-01-01T00:00:00Z"},
    ]});
    let send = || {
        app.client
            .post(app.url("/v1/runs/batch"))
            .header("idempotency-key", "at-the-cap")
            .json(&body)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 202);
    // the cap is reached, yet the same request is answered with what it stored
    let again = send().await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["runs"].as_array().unwrap().len(), 2);
    assert_eq!(total(&app).await, 2);
}

#[tokio::test]
async fn a_batch_fits_the_tenant_cap_whole_or_not_at_all() {
    let app = TestApp::spawn_with(|c| c.http.tenant_max_active_runs = Some(3)).await;
    let later = || json!({"agent": "echo", "input": {}, "run_at": "2999-01-01T00:00:00Z"});
    // larger than the whole cap: it can never fit
    let (status, problem) =
        batch(&app, json!({"runs": [later(), later(), later(), later()]})).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "runs");
    assert_eq!(
        batch(&app, json!({"runs": [later(), later()]})).await.0,
        202
    );
    // two more do not fit beside two: refused whole, for now
    let (status, problem) = batch(&app, json!({"runs": [later(), later()]})).await;
    assert_eq!(status, 429, "{problem}");
    assert_eq!(total(&app).await, 2);
    assert_eq!(batch(&app, json!({"runs": [later()]})).await.0, 202);
}

#[tokio::test]
async fn a_batch_run_may_depend_on_stored_runs_and_on_its_own_at_once() {
    let app = TestApp::spawn().await;
    let stored = app
        .create(json!({"agent": "echo", "input": {"value": "s"}}))
        .await;
    let (status, body) = batch(
        &app,
        json!({"runs": [
            {"agent": "echo", "input": {"value": 0}, "depends_on": [stored]},
            {"agent": "echo", "input": {"value": 1}, "depends_on": ["#0", stored]}
        ]}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    for run in body["runs"].as_array().unwrap() {
        app.wait_for_status(run["id"].as_str().unwrap(), "succeeded", TEN_S)
            .await;
    }
    let second = &body["runs"][1];
    assert_eq!(
        second["depends_on"].as_array().unwrap().len(),
        2,
        "{second}"
    );
}
