//! The real agentq binary as a child process, for tests that kill, signal or restart it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::eventually::eventually;

pub struct Agentq {
    pub child: Child,
    pub base: String,
    client: reqwest::Client,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Agentq {
    pub async fn start(db: &str, extra: &[&str]) -> Self {
        Self::start_role("serve", db, extra).await
    }

    /// Starts `agentq <role>`; waits for HTTP readiness unless the role serves none.
    pub async fn start_role(role: &str, db: &str, extra: &[&str]) -> Self {
        Self::start_role_with_env(role, db, extra, &[]).await
    }

    /// As [`Agentq::start_role`], with more environment variables.
    pub async fn start_role_with_env(
        role: &str,
        db: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_agentq"));
        command
            .args([role, "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", db]);
        if !extra.contains(&"--lease") {
            command.args(["--lease", "1s"]);
        }
        if !extra.contains(&"--poll-interval") {
            command.args(["--poll-interval", "50ms"]);
        }
        // the suite's Redis delivery mode reaches child processes too
        if let Some((url, namespace)) = crate::helpers::redis_delivery(db) {
            command.args(["--queue-url", &url, "--queue-namespace", &namespace]);
        }
        let child = command
            .args(extra)
            .envs(env.iter().copied())
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

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(format!("{}{path}", self.base)).send().await;
        response.unwrap().json().await.unwrap()
    }

    pub async fn create(&self, body: Value) -> String {
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

    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let what = format!("run {id} becomes {status}");
        let run = eventually(Duration::from_secs(20), &what, || async {
            let run: Value = self.get_json(&format!("/v1/runs/{id}")).await;
            if run["status"] == status {
                Ok(run)
            } else {
                Err(run)
            }
        })
        .await;
        let events = self.get_json(&format!("/v1/runs/{id}/events")).await;
        crate::support::lifecycle::assert_lifecycle(&run, events["events"].as_array().unwrap());
        run
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub async fn exit_code(mut self, within: Duration) -> Option<i32> {
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
