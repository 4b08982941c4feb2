//! `--agent-limit`: an agent's runs running at once stay within its limit over all worker
//! processes, while other agents' runs go on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agentq::app::Application;
use serde_json::{Value, json};

use crate::helpers::{TestApp, config, test_agents};

fn limit_patient_to(n: u32) -> impl Fn(&mut agentq::app::AppConfig) + Clone {
    move |c| c.worker.agent_limits = Arc::new(BTreeMap::from([("patient".to_owned(), n)]))
}

/// The most runs whose attempts overlapped, from their `started` and finishing events (a
/// run that finishes at the millisecond another starts does not overlap it: the start's
/// claim came after the finish's commit).
pub(crate) async fn max_overlap(app: &TestApp, ids: &[String]) -> usize {
    let mut edges = Vec::new();
    for id in ids {
        for event in app.events(id).await {
            let at: chrono::DateTime<chrono::Utc> = event["at"].as_str().unwrap().parse().unwrap();
            match event["type"].as_str().unwrap() {
                "started" => edges.push((at, 1)),
                "succeeded" | "failed" | "retry_scheduled" | "released" => edges.push((at, -1)),
                _ => {}
            }
        }
    }
    // ends before starts at the same instant
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_limit_holds_over_two_worker_processes_while_other_agents_go_on() {
    let first = TestApp::spawn_with(limit_patient_to(2)).await;
    let second = TestApp::spawn_on(&first.db_url, limit_patient_to(2)).await;
    let mut slow = Vec::new();
    for _ in 0..10 {
        slow.push(
            first
                .create(json!({"agent": "patient", "input": {"ms": 200}}))
                .await,
        );
    }
    // an agent without a limit is not held up by the limited one
    let echo = first
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    first
        .wait_for_status(&echo, "succeeded", Duration::from_secs(5))
        .await;
    let running = first
        .get_json("/v1/runs?status=running&agent=patient")
        .await["runs"]
        .as_array()
        .unwrap()
        .len();
    assert!(running <= 2, "{running} running");
    for id in &slow {
        first
            .wait_for_status(id, "succeeded", Duration::from_secs(20))
            .await;
    }
    let most = max_overlap(&first, &slow).await;
    assert!(most <= 2, "{most} patient runs overlapped");
    assert_eq!(most, 2, "the limit is used, not undercut");
    second.shutdown().await;
}

#[tokio::test]
async fn a_limit_naming_no_possible_agent_is_refused_at_start() {
    let db = crate::helpers::TestDb::new().await;
    let mut config = config(&db.url);
    config.worker.agent_limits = Arc::new(BTreeMap::from([("No Pe".to_owned(), 3)]));
    let refused = Application::build(config, test_agents(Default::default()))
        .await
        .err()
        .expect("not an agent name");
    assert!(
        refused.to_string().contains("--agent-limit names `No Pe`"),
        "{refused:#}"
    );
}

#[tokio::test]
async fn a_limit_holds_for_an_agent_external_workers_declare() {
    let app = TestApp::spawn_with(|c| {
        c.worker.agent_limits = Arc::new(BTreeMap::from([("py_limited".to_owned(), 1)]))
    })
    .await;
    let declared = app
        .client
        .put(app.url("/v1/agents/py_limited"))
        .json(&json!({"worker_id": "py-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 201);
    for _ in 0..3 {
        app.create(json!({"agent": "py_limited"})).await;
    }
    let claim = |worker: &'static str| {
        app.client
            .post(app.url(&format!("/v1/workers/{worker}/claim")))
            .json(&json!({"agents": ["py_limited"], "limit": 4}))
            .send()
    };
    let first: Value = claim("py-1").await.unwrap().json().await.unwrap();
    assert_eq!(first["runs"].as_array().unwrap().len(), 1, "{first}");
    let second: Value = claim("py-2").await.unwrap().json().await.unwrap();
    assert_eq!(second["runs"].as_array().unwrap().len(), 0, "{second}");
}
