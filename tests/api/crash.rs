//! The real binary as a child process: kill -9 mid-run, SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{event_types, open_store};

struct Agentq {
    child: Child,
    base: String,
    client: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Agentq {
    async fn start(db: &Path, extra: &[&str]) -> Self {
        Self::start_role("serve", db, extra).await
    }

    /// Starts `agentq <role>`; waits for HTTP readiness unless the role serves none.
    async fn start_role(role: &str, db: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_agentq"))
            .args([role, "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &format!("sqlite://{}", db.display())])
            .args(["--lease", "1s", "--poll-interval", "50ms"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("the agentq binary starts");
        let me = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        if role == "worker" {
            return me;
        }
        for _ in 0..500 {
            if me
                .client
                .get(format!("{}/readyz", me.base))
                .send()
                .await
                .is_ok()
            {
                return me;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("agentq did not become ready");
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(format!("{}{path}", self.base)).send().await;
        response.unwrap().json().await.unwrap()
    }

    async fn create(&self, body: Value) -> String {
        let response = self
            .client
            .post(format!("{}/v1/runs", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        for _ in 0..1000 {
            let run: Value = self.get_json(&format!("/v1/runs/{id}")).await;
            if run["status"] == status {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("run {id} never became {status}");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn exit_code(mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agentq did not exit in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Agentq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn runs_interrupted_by_kill_9_run_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agentq.db");
    let first = Agentq::start(&db, &[]).await;
    let id = first
        .create(json!({"agent": "echo", "input": {"value": 7, "delay_ms": 1500, "steps": 3}}))
        .await;
    first.wait_for_status(&id, "running").await;
    drop(first); // SIGKILL: no shutdown code runs

    let second = Agentq::start(&db, &[]).await;
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
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agentq.db");
    let agentq = Agentq::start(&db, &[]).await;
    let id = agentq
        .create(json!({"agent": "echo", "input": {"value": 1, "delay_ms": 600}}))
        .await;
    agentq.wait_for_status(&id, "running").await;
    agentq.signal("TERM");
    assert_eq!(agentq.exit_code(Duration::from_secs(10)).await, Some(0));
    let store = open_store(&db).await;
    let run = store.get_run(id.parse().unwrap()).await.unwrap();
    assert_eq!(run.status.as_str(), "succeeded");
}

#[tokio::test]
async fn sigterm_hands_back_a_run_that_outlasts_the_shutdown_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agentq.db");
    let agentq = Agentq::start(&db, &["--shutdown-timeout", "200ms"]).await;
    let id = agentq
        .create(json!({"agent": "echo", "input": {"value": 1, "delay_ms": 30000}}))
        .await;
    agentq.wait_for_status(&id, "running").await;
    agentq.signal("INT");
    assert_eq!(agentq.exit_code(Duration::from_secs(5)).await, Some(0));
    let store = open_store(&db).await;
    let run = store.get_run(id.parse().unwrap()).await.unwrap();
    assert_eq!((run.status.as_str(), run.attempt), ("queued", 0));
}

#[tokio::test]
async fn api_and_worker_processes_share_one_database_and_workers_serve_only_their_agents() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agentq.db");
    let api = Agentq::start_role("api", &db, &[]).await;
    let _http_only = Agentq::start_role("worker", &db, &["--agents", "http"]).await;
    let id = api
        .create(json!({"agent": "echo", "input": {"value": "across processes"}}))
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let run: Value = api.get_json(&format!("/v1/runs/{id}")).await;
    assert_eq!(
        run["status"], "queued",
        "a worker serving only `http` leaves echo runs alone"
    );

    let _echo = Agentq::start_role("worker", &db, &["--agents", "echo"]).await;
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
    for _ in 0..500 {
        if client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
