//! The real binary as a child process: kill -9 mid-run, SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestDb, event_types, open_store};
use crate::process::{Agentq, free_port};

#[tokio::test]
async fn runs_interrupted_by_kill_9_run_again_after_a_restart() {
    let db = TestDb::new().await;
    let first = Agentq::start(&db.url, &[]).await;
    let id = first
        .create(json!({"agent": "echo", "input": {"value": 7, "delay_ms": 1500, "steps": 3}}))
        .await;
    first.wait_for_status(&id, "running").await;
    drop(first); // SIGKILL: no shutdown code runs

    let second = Agentq::start(&db.url, &[]).await;
    let run = second.wait_for_status(&id, "succeeded").await;
    assert_eq!(run["attempt"], 2);
    assert_eq!(run["result"]["value"], 7);
    let body: Value = second.get_json(&format!("/v1/runs/{id}/events")).await;
    let events = body["events"].as_array().unwrap();
    let types = event_types(events);
    let lost = types
        .iter()
        .position(|t| t == "attempt_lost")
        .expect("the lost attempt is recorded");
    assert_eq!(events[lost]["data"]["error"]["kind"], "lost_worker");
    assert_eq!(events[lost]["attempt"], 1);
    // attempt 2 starts only after attempt 1 was declared lost: no overlap
    let second_start = events
        .iter()
        .position(|e| e["type"] == "started" && e["attempt"] == 2)
        .unwrap();
    assert!(second_start > lost);
    assert_eq!(types.last().unwrap(), "succeeded");
}

#[tokio::test]
async fn sigterm_lets_the_running_run_finish_then_exits_cleanly() {
    let db = TestDb::new().await;
    let agentq = Agentq::start(&db.url, &[]).await;
    let id = agentq
        .create(json!({"agent": "echo", "input": {"value": 1, "delay_ms": 600}}))
        .await;
    agentq.wait_for_status(&id, "running").await;
    agentq.signal("TERM");
    assert_eq!(agentq.exit_code(Duration::from_secs(10)).await, Some(0));
    let store = open_store(&db.url).await;
    let run = store.get_run(id.parse().unwrap()).await.unwrap();
    assert_eq!(run.status.as_str(), "succeeded");
}

#[tokio::test]
async fn sigterm_hands_back_a_run_that_outlasts_the_shutdown_timeout() {
    let db = TestDb::new().await;
    let agentq = Agentq::start(&db.url, &["--shutdown-timeout", "200ms"]).await;
    let id = agentq
        .create(json!({"agent": "echo", "input": {"value": 1, "delay_ms": 30000}}))
        .await;
    agentq.wait_for_status(&id, "running").await;
    agentq.signal("INT");
    assert_eq!(agentq.exit_code(Duration::from_secs(5)).await, Some(0));
    let store = open_store(&db.url).await;
    let run = store.get_run(id.parse().unwrap()).await.unwrap();
    assert_eq!((run.status.as_str(), run.attempt), ("queued", 0));
}

#[tokio::test]
async fn api_and_worker_processes_share_one_database_and_workers_serve_only_their_agents() {
    let db = TestDb::new().await;
    let api = Agentq::start_role("api", &db.url, &[]).await;
    let _http_only = Agentq::start_role("worker", &db.url, &["--agents", "http"]).await;
    let id = api
        .create(json!({"agent": "echo", "input": {"value": "across processes"}}))
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let run: Value = api.get_json(&format!("/v1/runs/{id}")).await;
    assert_eq!(
        run["status"], "queued",
        "a worker serving only `http` leaves echo runs alone"
    );

    let _echo = Agentq::start_role("worker", &db.url, &["--agents", "echo"]).await;
    let run = api.wait_for_status(&id, "succeeded").await;
    assert_eq!(run["result"]["value"], "across processes");
    assert_eq!(run["attempt"], 1);
}

#[tokio::test]
async fn json_log_format_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentq"))
        .args([
            "serve",
            "--log-format",
            "json",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "--database-url",
            &format!("sqlite://{}", dir.path().join("l.db").display()),
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..500 {
        if client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "agentq did not become ready");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    assert!(out.0.success());
    let lines: Vec<&str> = out.1.lines().collect();
    assert!(lines.len() >= 3, "{}", out.1);
    for line in lines {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            entry["level"].is_string() && entry["message"].is_string(),
            "{line}"
        );
    }
}
