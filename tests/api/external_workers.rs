//! The worker protocol, spoken directly over HTTP as the SDKs speak it: declaring agents,
//! heartbeats, long-poll claims and fenced reports.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::support::eventually::eventually;

/// A worker outside the process, as the SDKs are: an id, and maybe a key.
struct Remote<'a> {
    app: &'a TestApp,
    id: String,
    key: Option<String>,
}

impl<'a> Remote<'a> {
    fn new(app: &'a TestApp, id: &str) -> Self {
        Self {
            app,
            id: id.to_owned(),
            key: None,
        }
    }

    fn with_key(app: &'a TestApp, id: &str, key: &str) -> Self {
        Self {
            key: Some(key.to_owned()),
            ..Self::new(app, id)
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let mut request = self
            .app
            .client
            .request(method, self.app.url(path))
            .json(&body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn declare(&self, name: &str, body: Value) -> (u16, Value) {
        let mut body = body;
        body["worker_id"] = json!(self.id);
        self.send(reqwest::Method::PUT, &format!("/v1/agents/{name}"), body)
            .await
    }

    async fn heartbeat(&self, attempts: &[&str], stopping: bool) -> Value {
        let body = json!({
            "language": "python", "version": "0.1.0", "host": "test-host", "pid": 42,
            "agents": ["py_upper"], "concurrency": 4, "processed": 1,
            "attempts": attempts, "stopping": stopping,
        });
        let path = format!("/v1/workers/{}/heartbeat", self.id);
        let (status, body) = self.send(reqwest::Method::POST, &path, body).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn claim(&self, agents: &[&str], limit: u32, wait_ms: u64) -> Vec<Value> {
        let (status, body) = self.try_claim(agents, limit, wait_ms).await;
        assert_eq!(status, 200, "{body}");
        body["runs"].as_array().unwrap().clone()
    }

    async fn try_claim(&self, agents: &[&str], limit: u32, wait_ms: u64) -> (u16, Value) {
        let body = json!({"agents": agents, "limit": limit, "wait_ms": wait_ms});
        let path = format!("/v1/workers/{}/claim", self.id);
        self.send(reqwest::Method::POST, &path, body).await
    }

    /// Claims the one run there is, waiting for it.
    async fn claim_one(&self, agent: &str) -> Value {
        let runs = self.claim(&[agent], 1, 5000).await;
        assert_eq!(runs.len(), 1, "{runs:#?}");
        runs[0].clone()
    }

    async fn report(&self, reports: Value) -> Vec<Value> {
        let path = format!("/v1/workers/{}/reports", self.id);
        let (status, body) = self
            .send(reqwest::Method::POST, &path, json!({"reports": reports}))
            .await;
        assert_eq!(status, 200, "{body}");
        body["results"].as_array().unwrap().clone()
    }

    async fn report_one(&self, token: &Value, report: Value) -> Value {
        let mut report = report;
        report["attempt_token"] = token.clone();
        self.report(json!([report])).await.remove(0)
    }
}

fn upper_schema() -> Value {
    json!({"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}})
}

async fn declare_upper(worker: &Remote<'_>) {
    let (status, body) = worker
        .declare(
            "py_upper",
            json!({"description": "upper-cases text", "input_schema": upper_schema()}),
        )
        .await;
    assert!(status == 201 || status == 200, "{status} {body}");
}

#[tokio::test]
async fn a_declared_agent_validates_runs_in_every_process_and_records_its_schema_changes() {
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-1");
    let (status, first) = worker
        .declare(
            "py_upper",
            json!({"description": "upper-cases text", "input_schema": upper_schema(),
                   "defaults": {"max_attempts": 1, "timeout_ms": 5000}}),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["created"], true);
    assert_eq!(first["schema_changed"], true);
    assert_eq!(first["agent"]["version"], 1);
    assert_eq!(first["agent"]["declared_by"], "py-1");

    // the input is checked against the declared schema, the field named
    let refused = app
        .post_run(json!({"agent": "py_upper", "input": {"text": 3}}))
        .await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "input/text", "{problem}");
    // the declared defaults apply to runs that set nothing
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "a"}}))
        .await;
    let run = app.get_run(&id).await;
    assert_eq!(run["max_attempts"], 1);
    assert_eq!(run["status"], "queued", "no worker claims it: it waits");

    // a second API process on the same database sees the declaration too
    let other = TestApp::spawn_on(&app.db_url, |c| c.role = agentq::app::Role::Api).await;
    let refused = other
        .post_run(json!({"agent": "py_upper", "input": {}}))
        .await;
    assert_eq!(refused.status(), 422);
    let listed = other.get_json("/v1/agents").await;
    let upper = listed["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "py_upper")
        .expect("listed")
        .clone();
    assert_eq!(upper["kind"], "external");
    assert_eq!(upper["declared"]["defaults"]["max_attempts"], 1);
    let echo = listed["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "echo")
        .unwrap()
        .clone();
    assert_eq!(echo["kind"], "in_process");

    // the same schema again changes nothing; a new one counts the version up
    let (status, again) = worker
        .declare(
            "py_upper",
            json!({"description": "v1 again", "input_schema": upper_schema()}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["schema_changed"], false);
    assert_eq!(again["agent"]["version"], 1);
    let wider = json!({"type": "object"});
    let (_, changed) = Remote::new(&app, "py-2")
        .declare("py_upper", json!({"input_schema": wider}))
        .await;
    assert_eq!(changed["schema_changed"], true);
    assert_eq!(changed["agent"]["version"], 2);
    let detail = app.get_json("/v1/agents/py_upper").await;
    let changes = detail["schema_changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{detail}");
    assert_eq!(changes[0]["declared_by"], "py-1");
    assert_eq!(changes[1]["declared_by"], "py-2");
    assert_eq!(changes[1]["input_schema"], wider);
    // the process that took the declaration accepts the wider input at once
    let accepted = app
        .post_run(json!({"agent": "py_upper", "input": {}}))
        .await;
    assert_eq!(accepted.status(), 202);
}

#[tokio::test]
async fn declarations_that_cannot_be_taken_are_refused_with_the_reason() {
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-1");
    let (status, taken) = worker.declare("echo", json!({})).await;
    assert_eq!(status, 409, "{taken}");
    assert_eq!(taken["code"], "agent_name_taken");
    let (status, bad) = worker
        .declare(
            "Bad Name",
            json!({"input_schema": {"type": 12}, "defaults": {"max_attempts": 0}}),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    let fields: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["defaults/max_attempts", "input_schema", "name"]);
    let (status, missing) = worker
        .send(reqwest::Method::GET, "/v1/agents/nope", json!(null))
        .await;
    assert_eq!((status, missing["code"].as_str()), (404, Some("not_found")));
    let (status, unknown) = worker.try_claim(&["never_declared"], 1, 0).await;
    assert_eq!(status, 422, "{unknown}");
    assert_eq!(unknown["errors"][0]["field"], "agents/0");
    assert_eq!(unknown["errors"][0]["code"], "unknown_agent");
}

#[tokio::test]
async fn a_claimed_attempt_reports_progress_and_succeeds_and_its_late_writes_are_refused() {
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-1");
    declare_upper(&worker).await;
    worker.heartbeat(&[], false).await;
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "abc"}, "metadata": {"user": "u1"}}))
        .await;
    let run = worker.claim_one("py_upper").await;
    assert_eq!(run["run_id"], id.as_str());
    assert_eq!(run["input"], json!({"text": "abc"}));
    assert_eq!(run["attempt"], 1);
    assert_eq!(run["tenant"], "default");
    assert_eq!(run["metadata"], json!({"user": "u1"}));
    assert!(run["checkpoint"].is_null());
    let token = &run["attempt_token"];
    assert_eq!(app.get_run(&id).await["status"], "running");

    let progress = worker
        .report_one(
            token,
            json!({"type": "progress", "percent": 50, "message": "half way"}),
        )
        .await;
    assert_eq!(progress["status"], 200, "{progress}");
    let seen = app.get_run(&id).await;
    assert_eq!(seen["progress"]["percent"], 50);
    assert_eq!(seen["progress"]["message"], "half way");

    let done = worker
        .report_one(
            token,
            json!({"type": "succeed", "result": {"upper": "ABC"}}),
        )
        .await;
    assert_eq!(done["status"], 200, "{done}");
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"], json!({"upper": "ABC"}));

    // the attempt is over: anything more from it is refused, and changes nothing
    let late = worker
        .report(json!([
            {"attempt_token": token, "type": "progress", "percent": 90},
            {"attempt_token": token, "type": "fail", "message": "too late"},
            {"attempt_token": "not-a-token", "type": "progress", "percent": 1},
        ]))
        .await;
    assert_eq!(late[0]["status"], 409);
    assert_eq!(late[0]["code"], "attempt_lost");
    assert_eq!(late[1]["code"], "attempt_lost");
    assert_eq!(late[2]["status"], 422);
    let after = app.get_run(&id).await;
    assert_eq!(after["status"], "succeeded");
    assert_eq!(after["progress"]["percent"], 50);
}

#[tokio::test]
async fn failures_are_retried_then_fail_for_good_with_their_message() {
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-1");
    declare_upper(&worker).await;
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "x"}, "max_attempts": 3}))
        .await;
    let first = worker.claim_one("py_upper").await;
    let failed = worker
        .report_one(
            &first["attempt_token"],
            json!({"type": "fail", "message": "flaky upstream"}),
        )
        .await;
    assert_eq!(failed["status"], 200);
    // the backoff is short in tests: the retry is claimed as attempt 2
    let second = worker.claim_one("py_upper").await;
    assert_eq!(second["run_id"], id.as_str());
    assert_eq!(second["attempt"], 2);
    worker
        .report_one(
            &second["attempt_token"],
            json!({"type": "fail", "message": "bad input", "retryable": false}),
        )
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["error"]["kind"], "agent_error");
    assert_eq!(run["error"]["message"], "bad input");
    assert_eq!(run["attempt"], 2);

    // a timeout the worker enforced is recorded as one, and retried
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "x"}, "timeout_ms": 100, "max_attempts": 1}))
        .await;
    let run = worker.claim_one("py_upper").await;
    assert_eq!(run["timeout_ms"], 100);
    worker
        .report_one(
            &run["attempt_token"],
            json!({"type": "fail", "message": "stopped", "reason": "timeout"}),
        )
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["error"]["kind"], "timeout");
}

#[tokio::test]
async fn a_cancel_reaches_the_worker_through_its_heartbeat_and_fences_its_reports() {
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-1");
    declare_upper(&worker).await;
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "x"}}))
        .await;
    let run = worker.claim_one("py_upper").await;
    let token = run["attempt_token"].as_str().unwrap();
    let beat = worker.heartbeat(&[token], false).await;
    assert_eq!(beat["stop"], json!([]));
    assert!(beat["heartbeat_ms"].as_u64().unwrap() <= 500);
    assert!(app.cancel(&id).await.status().is_success());
    let beat = worker.heartbeat(&[token], false).await;
    assert_eq!(
        beat["stop"],
        json!([{"attempt_token": token, "reason": "cancelled"}])
    );
    let late = worker
        .report_one(
            &run["attempt_token"],
            json!({"type": "succeed", "result": 1}),
        )
        .await;
    assert_eq!(late["code"], "attempt_lost");
    assert_eq!(app.get_run(&id).await["status"], "cancelled");
}

#[tokio::test]
async fn a_worker_that_stops_heartbeating_loses_its_attempt_after_the_lease() {
    // the test lease is 2 s
    let app = TestApp::spawn().await;
    let gone = Remote::new(&app, "py-gone");
    declare_upper(&gone).await;
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "x"}}))
        .await;
    let stale = gone.claim_one("py_upper").await;
    // nothing renews it: another worker gets the run once the lease has run out
    let other = Remote::new(&app, "py-other");
    let retried = eventually(
        Duration::from_secs(10),
        "the run is claimed again",
        || async {
            let runs = other.claim(&["py_upper"], 1, 1000).await;
            runs.into_iter().next().ok_or(())
        },
    )
    .await;
    assert_eq!(retried["run_id"], id.as_str());
    assert_eq!(retried["attempt"], 2);
    // the stale attempt's late writes are refused; the live one's land
    let late = gone
        .report_one(
            &stale["attempt_token"],
            json!({"type": "succeed", "result": "stale"}),
        )
        .await;
    assert_eq!(late["code"], "attempt_lost");
    let beat = gone
        .heartbeat(&[stale["attempt_token"].as_str().unwrap()], false)
        .await;
    assert_eq!(beat["stop"][0]["reason"], "lost");
    other
        .report_one(
            &retried["attempt_token"],
            json!({"type": "succeed", "result": "fresh"}),
        )
        .await;
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"], "fresh");
    let errors: Vec<Value> = app
        .events(&id)
        .await
        .into_iter()
        .filter(|e| e["type"] == "attempt_lost")
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

#[tokio::test]
async fn a_wait_frees_the_slot_and_a_signal_resumes_the_run_from_its_checkpoint() {
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-1");
    declare_upper(&worker).await;
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "x"}}))
        .await;
    let first = worker.claim_one("py_upper").await;
    let token = &first["attempt_token"];
    let results = worker
        .report(json!([
            {"attempt_token": token, "type": "checkpoint", "state": {"step": 1}},
            {"attempt_token": token, "type": "wait", "signals": ["go"], "timeout_ms": 60000},
        ]))
        .await;
    assert_eq!(results[0]["status"], 200, "{results:?}");
    assert_eq!(results[1]["status"], 200, "{results:?}");
    assert!(
        results[1].get("signal").is_none(),
        "no signal yet: the run waits"
    );
    let waiting = app
        .wait_for_status(&id, "waiting", Duration::from_secs(5))
        .await;
    assert_eq!(waiting["waiting_for"]["signals"], json!(["go"]));
    assert!(worker.claim(&["py_upper"], 1, 0).await.is_empty());

    let sent = app
        .client
        .post(app.url(&format!("/v1/runs/{id}/signals")))
        .json(&json!({"name": "go", "payload": {"ok": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let resumed = worker.claim_one("py_upper").await;
    assert_eq!(resumed["checkpoint"], json!({"step": 1}));
    let token = &resumed["attempt_token"];
    let got = worker
        .report_one(
            token,
            json!({"type": "wait", "signals": ["go"], "timeout_ms": 60000}),
        )
        .await;
    assert_eq!(got["signal"]["name"], "go", "{got}");
    assert_eq!(got["signal"]["payload"], json!({"ok": true}));
    worker
        .report_one(
            token,
            json!({"type": "succeed", "result": {"approved": true}}),
        )
        .await;
    app.wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_waiting_claim_is_answered_when_a_run_arrives() {
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-1");
    declare_upper(&worker).await;
    let started = std::time::Instant::now();
    let (claimed, id) = tokio::join!(worker.claim(&["py_upper"], 4, 10_000), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.create(json!({"agent": "py_upper", "input": {"text": "x"}}))
            .await
    });
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0]["run_id"], id.as_str());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // with nothing to claim, the wait ends empty
    let started = std::time::Instant::now();
    assert!(worker.claim(&["py_upper"], 4, 300).await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(290));
}

#[tokio::test]
async fn an_external_worker_is_listed_and_its_goodbye_hands_back_what_it_held() {
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-listed");
    declare_upper(&worker).await;
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "x"}}))
        .await;
    let run = worker.claim_one("py_upper").await;
    worker
        .heartbeat(&[run["attempt_token"].as_str().unwrap()], false)
        .await;
    let listed = app.get_json("/v1/workers").await;
    let me = listed["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "py-listed")
        .cloned()
        .expect("listed");
    assert_eq!(me["language"], "python");
    assert_eq!(me["version"], "0.1.0");
    assert_eq!(me["agents"], json!(["py_upper"]));
    assert_eq!(me["running"], 1);
    assert_eq!(me["state"], "alive");
    let bye = worker.heartbeat(&[], true).await;
    assert_eq!(bye["handed_back"], 1);
    let run = app.get_run(&id).await;
    assert_eq!(run["status"], "queued");
    let listed = app.get_json("/v1/workers").await;
    let me = listed["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "py-listed")
        .cloned()
        .unwrap();
    assert_eq!(me["state"], "stopped");
    // the in-process worker says what it is, at its first heartbeat
    eventually(
        Duration::from_secs(10),
        "the in-process worker is listed as rust",
        || async {
            let listed = app.get_json("/v1/workers").await;
            let rust = listed["workers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["id"] != "py-listed" && w["language"] == "rust");
            if rust { Ok(()) } else { Err(listed) }
        },
    )
    .await;
}

#[tokio::test]
async fn a_worker_key_serves_agents_and_can_do_nothing_else() {
    let (app, keys) =
        TestApp::spawn_with_keys(&[("acme", "worker"), ("acme", "runs:read,runs:write")]).await;
    let (worker_key, client_key) = (&keys[0], &keys[1]);
    let worker = Remote::with_key(&app, "py-keyed", worker_key);
    declare_upper(&worker).await;
    worker.heartbeat(&[], false).await;
    let created = app
        .client
        .post(app.url("/v1/runs"))
        .bearer_auth(client_key)
        .json(&json!({"agent": "py_upper", "input": {"text": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let run = worker.claim_one("py_upper").await;
    assert_eq!(run["tenant"], "acme");
    let done = worker
        .report_one(
            &run["attempt_token"],
            json!({"type": "succeed", "result": 1}),
        )
        .await;
    assert_eq!(done["status"], 200);
    // the change of schema names the key that made it
    let detail = app
        .client
        .get(app.url("/v1/agents/py_upper"))
        .bearer_auth(worker_key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let key_id = worker_key.split('_').nth(1).unwrap();
    assert_eq!(detail["schema_changes"][0]["key_id"], key_id);

    // a worker key creates, reads and lists no runs, and sees no workers
    for (method, path) in [
        ("POST", "/v1/runs"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/workers"),
    ] {
        let method: reqwest::Method = method.parse().unwrap();
        let (status, body) = worker.send(method, path, json!({"agent": "echo"})).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    // and a client key cannot act as a worker
    let client = Remote::with_key(&app, "py-client", client_key);
    let (status, _) = client.declare("py_other", json!({})).await;
    assert_eq!(status, 403);
    let (status, _) = client.try_claim(&["py_upper"], 1, 0).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_report_that_cannot_apply_is_refused_alone() {
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-1");
    declare_upper(&worker).await;
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "x"}}))
        .await;
    let run = worker.claim_one("py_upper").await;
    let token = &run["attempt_token"];
    // something that is not a report: the batch is refused whole, naming it
    let path = format!("/v1/workers/{}/reports", worker.id);
    let (status, refused) = worker
        .send(
            reqwest::Method::POST,
            &path,
            json!({"reports": [
                {"attempt_token": token, "type": "progress", "percent": 5},
                {"attempt_token": token, "type": "no_such_report"},
            ]}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["errors"][0]["field"], "reports/1");
    assert!(
        app.get_run(&id).await["progress"].is_null(),
        "nothing applied"
    );
    // reports that cannot apply are refused alone
    let results = worker
        .report(json!([
            {"attempt_token": token, "type": "progress", "percent": 101},
            {"attempt_token": "not-a-token", "type": "progress", "percent": 1},
            {"attempt_token": token, "type": "succeed", "result": {"ok": true}},
        ]))
        .await;
    let statuses: Vec<&Value> = results.iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses, [422, 422, 200], "{results:#?}");
    let done = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(done["result"], json!({"ok": true}));
    // a token naming another attempt number than its claim ran is refused
    let forged = run["attempt_token"]
        .as_str()
        .unwrap()
        .rsplit_once('.')
        .unwrap()
        .0
        .to_owned()
        + ".9";
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "y"}}))
        .await;
    let next = worker.claim_one("py_upper").await;
    assert_eq!(next["run_id"], id.as_str());
    let forged_next = next["attempt_token"]
        .as_str()
        .unwrap()
        .rsplit_once('.')
        .unwrap()
        .0
        .to_owned()
        + ".9";
    let refused = worker
        .report(json!([
            {"attempt_token": forged_next, "type": "log", "level": "info", "message": "as attempt 9"},
            {"attempt_token": forged, "type": "log", "level": "info", "message": "old run"},
        ]))
        .await;
    assert_eq!(refused[0]["code"], "attempt_lost", "{refused:#?}");
    assert_eq!(refused[1]["code"], "attempt_lost", "{refused:#?}");
}

#[tokio::test]
async fn an_attempt_its_worker_keeps_alive_past_its_time_limit_is_ended_by_the_server() {
    // the test lease is 2 s: the server ends an attempt a lease past its limit
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-stuck");
    declare_upper(&worker).await;
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "x"}, "timeout_ms": 100, "max_attempts": 1}))
        .await;
    let run = worker.claim_one("py_upper").await;
    let token = run["attempt_token"].as_str().unwrap().to_owned();
    let stopped = eventually(
        Duration::from_secs(10),
        "the server stops the attempt",
        || async {
            let beat = worker.heartbeat(&[&token], false).await;
            let stop = beat["stop"].as_array().unwrap().first().cloned();
            stop.ok_or(beat)
        },
    )
    .await;
    assert_eq!(stopped["reason"], "timeout");
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["error"]["kind"], "timeout");
}

#[tokio::test]
async fn a_declared_backoff_that_would_refuse_every_run_is_refused_at_once() {
    // the test server's backoff is 10 ms to 50 ms
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-1");
    let (status, refused) = worker
        .declare(
            "py_slow_backoff",
            json!({"defaults": {"backoff_base_ms": 100}}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["errors"][0]["field"], "defaults/backoff_base_ms");
    let (status, _) = worker
        .declare(
            "py_slow_backoff",
            json!({"defaults": {"backoff_base_ms": 100, "backoff_cap_ms": 1000}}),
        )
        .await;
    assert_eq!(status, 201);
    let id = app.create(json!({"agent": "py_slow_backoff"})).await;
    assert_eq!(app.get_run(&id).await["backoff_base_ms"], 100);
}

#[tokio::test]
async fn a_wait_sent_again_gets_the_signal_it_took_the_first_time() {
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-1");
    declare_upper(&worker).await;
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "x"}}))
        .await;
    for n in 1..=2 {
        let sent = app
            .client
            .post(app.url(&format!("/v1/runs/{id}/signals")))
            .json(&json!({"name": "go", "payload": n}))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 202);
    }
    let run = worker.claim_one("py_upper").await;
    let token = &run["attempt_token"];
    let wait = json!({"type": "wait", "signals": ["go"], "timeout_ms": 60000, "report_id": "w-1"});
    let first = worker.report_one(token, wait.clone()).await;
    // its answer was lost: the worker sends the same report again
    let again = worker.report_one(token, wait).await;
    assert_eq!(first["signal"]["payload"], 1, "{first}");
    assert_eq!(again["signal"]["payload"], 1, "{again}");
    // a new wait takes the next signal
    let next = worker
        .report_one(
            token,
            json!({"type": "wait", "signals": ["go"], "timeout_ms": 60000, "report_id": "w-2"}),
        )
        .await;
    assert_eq!(next["signal"]["payload"], 2, "{next}");
}

#[tokio::test]
async fn an_external_attempt_streams_parts_fenced_and_bounded() {
    let app = TestApp::spawn_with(|config| config.store.max_stream_bytes = 256).await;
    let worker = Remote::new(&app, "py-1");
    declare_upper(&worker).await;
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "abc"}}))
        .await;
    let run = worker.claim_one("py_upper").await;
    let token = &run["attempt_token"];
    let streamed = worker
        .report(json!([
            {"attempt_token": token, "type": "stream", "parts": [
                {"type": "reasoning", "text": "upper-case it"},
                {"type": "tool_call", "tool_call_id": "c1", "tool_name": "upper", "input": {"text": "abc"}}]},
            {"attempt_token": token, "type": "stream", "parts": [
                {"type": "tool_result", "tool_call_id": "c1", "output": "ABC"},
                {"type": "text", "text": "AB"}]},
            {"attempt_token": token, "type": "stream", "parts": [{"type": "text", "text": "C"}]},
            {"attempt_token": token, "type": "stream", "parts": [{"type": "data", "name": "Bad name", "data": 1}]},
            {"attempt_token": token, "type": "stream", "parts": []},
        ]))
        .await;
    let statuses: Vec<&Value> = streamed.iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses, [200, 200, 200, 422, 422], "{streamed:#?}");
    assert!(
        streamed[3]["detail"]
            .as_str()
            .unwrap()
            .starts_with("parts/0: `name`")
    );
    // past the run's limit (256 bytes here): refused whole, with its own code
    let full = worker
        .report_one(
            token,
            json!({"type": "stream", "parts": [{"type": "text", "text": "x".repeat(200)}]}),
        )
        .await;
    assert_eq!(full["status"], 413, "{full}");
    assert_eq!(full["code"], "stream_full");
    let done = worker
        .report_one(
            token,
            json!({"type": "succeed", "result": {"upper": "ABC"}}),
        )
        .await;
    assert_eq!(done["status"], 200);
    // the attempt is over: its stream is closed to it
    let late = worker
        .report_one(
            token,
            json!({"type": "stream", "parts": [{"type": "text", "text": "late"}]}),
        )
        .await;
    assert_eq!(late["code"], "attempt_lost");

    let chunks = crate::output_stream::read_chunks(
        app.client.get(app.url(&format!("/v1/runs/{id}/stream"))),
    )
    .await;
    // the two texts are one delta or two, as the writer's batches fell
    let mut kinds = crate::output_stream::types(&chunks);
    kinds.dedup_by(|a, b| *a == "text-delta" && *b == "text-delta");
    assert_eq!(
        kinds,
        [
            "start",
            "reasoning-start",
            "reasoning-delta",
            "reasoning-end",
            "tool-input-available",
            "tool-output-available",
            "text-start",
            "text-delta",
            "text-end",
            "finish",
            "[DONE]"
        ]
    );
    assert_eq!(crate::output_stream::text_of(&chunks), "ABC");
    assert_eq!(chunks[4].data["toolName"], "upper");
    assert_eq!(chunks[4].data["input"], json!({"text": "abc"}));
    assert_eq!(chunks[5].data["output"], "ABC");
}

#[tokio::test]
async fn a_paused_agent_is_not_claimed_by_an_external_worker_and_a_waiting_claim_wakes_on_resume() {
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-paused");
    declare_upper(&worker).await;
    let paused = app
        .client
        .post(app.url("/v1/agents/py_upper/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    let id = app
        .create(json!({"agent": "py_upper", "input": {"text": "x"}}))
        .await;
    assert!(worker.claim(&["py_upper"], 1, 300).await.is_empty());
    // a claim waiting on the paused agent is answered as soon as it is resumed
    let started = std::time::Instant::now();
    let (claimed, resumed) = tokio::join!(worker.claim(&["py_upper"], 1, 10_000), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.client
            .post(app.url("/v1/agents/py_upper/resume"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(resumed, 200);
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0]["run_id"], id.as_str());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_queued_run_given_a_higher_priority_is_claimed_first() {
    let app = TestApp::spawn().await;
    let worker = Remote::new(&app, "py-priority");
    declare_upper(&worker).await;
    let first = app
        .create(json!({"agent": "py_upper", "input": {"text": "a"}}))
        .await;
    let second = app
        .create(json!({"agent": "py_upper", "input": {"text": "b"}}))
        .await;
    let changed = app
        .client
        .patch(app.url(&format!("/v1/runs/{second}")))
        .json(&json!({"priority": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(changed.json::<Value>().await.unwrap()["priority"], 10);
    let claimed = worker.claim(&["py_upper"], 1, 1000).await;
    assert_eq!(claimed[0]["run_id"], second.as_str());
    let claimed = worker.claim(&["py_upper"], 1, 1000).await;
    assert_eq!(claimed[0]["run_id"], first.as_str());
}
