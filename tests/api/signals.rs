//! Waiting for a signal (a human's answer): `ctx.wait_for`, `POST /v1/runs/{id}/signals`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{TestApp, event_types};

async fn signal(app: &TestApp, id: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(&format!("/v1/runs/{id}/signals")))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_waiting_run_frees_its_worker_and_resumes_with_the_signal() {
    let app = TestApp::spawn_with(|c| c.worker.concurrency = 1).await;
    let id = app.create(json!({"agent": "waiter"})).await;
    let waiting = app
        .wait_for_status(&id, "waiting", Duration::from_secs(5))
        .await;
    assert_eq!(waiting["waiting_for"]["signals"], json!(["go"]));
    assert!(waiting["worker_id"].is_null());
    assert_eq!(
        waiting["attempt"], 1,
        "a waiting run is in its first attempt"
    );
    // the only worker slot is free while the run waits
    let other = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    app.wait_for_status(&other, "succeeded", Duration::from_secs(5))
        .await;

    let (status, body) = signal(&app, &id, json!({"name": "go", "payload": {"answer": 42}})).await;
    assert_eq!((status, body["resumed"].as_bool()), (202, Some(true)));
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(
        run["result"],
        json!({"got": {"answer": 42}, "timed_out": false})
    );
    assert_eq!(run["attempt"], 1, "waiting does not use up an attempt");
    let events = app.events(&id).await;
    // every event after the first start is the first attempt's, the resume included
    let attempts: Vec<u64> = events
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [0, 1, 1, 1, 1, 1, 1]);
    // the log shows what was sent, not only its name
    assert_eq!(
        events[3]["data"],
        json!({"name": "go", "payload": {"answer": 42}})
    );
    let types = event_types(&events);
    assert_eq!(
        types,
        [
            "created",
            "started",
            "waiting",
            "signal_received",
            "resumed",
            "started",
            "succeeded"
        ]
    );
}

#[tokio::test]
async fn a_signal_sent_before_the_wait_is_kept_and_consumed_by_it() {
    let app = TestApp::spawn().await;
    let later = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let id = app
        .create(json!({"agent": "waiter", "run_at": later}))
        .await;
    let (status, body) = signal(&app, &id, json!({"name": "go", "payload": "early"})).await;
    assert_eq!((status, body["resumed"].as_bool()), (202, Some(false)));
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"]["got"], "early");
    assert!(!event_types(&app.events(&id).await).contains(&"waiting".to_owned()));
}

#[tokio::test]
async fn a_wait_that_times_out_fails_the_run_or_resumes_it_as_asked() {
    let app = TestApp::spawn().await;
    let fails = app
        .create(json!({"agent": "waiter", "input": {"timeout_ms": 200}}))
        .await;
    let resumes = app
        .create(json!({"agent": "waiter", "input": {"timeout_ms": 200, "resume": true}}))
        .await;
    let run = app
        .wait_for_status(&fails, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["error"]["kind"], "wait_timeout");
    let run = app
        .wait_for_status(&resumes, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"], json!({"got": null, "timed_out": true}));
}

#[tokio::test]
async fn signals_to_finished_unknown_runs_or_without_a_name_are_refused() {
    let app = TestApp::spawn().await;
    let done = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    app.wait_for_status(&done, "succeeded", Duration::from_secs(5))
        .await;
    let (status, body) = signal(&app, &done, json!({"name": "go"})).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("run_finished")));
    let missing = uuid::Uuid::now_v7().to_string();
    assert_eq!(signal(&app, &missing, json!({"name": "go"})).await.0, 404);
    let (status, body) = signal(&app, &done, json!({"name": ""})).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("name"))
    );
}

#[tokio::test]
async fn a_waiting_run_can_be_cancelled() {
    let app = TestApp::spawn().await;
    let id = app.create(json!({"agent": "waiter"})).await;
    app.wait_for_status(&id, "waiting", Duration::from_secs(5))
        .await;
    let response = app.cancel(&id).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.get_run(&id).await["status"], "cancelled");
}

/// `t=<t>,v1=<hex HMAC-SHA256 of "<t>.<run id>.<body>">`, computed here apart from the
/// server's code.
fn signed(secret: &str, t: i64, run_id: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{run_id}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

#[tokio::test]
async fn with_a_signal_secret_only_signals_signed_for_the_run_now_and_once_are_accepted() {
    let app = TestApp::spawn_with(|c| {
        c.http.signal_secret = Some(agentq::api::Secret("s3cret".into()));
    })
    .await;
    let id = app.create(json!({"agent": "waiter"})).await;
    let other = app.create(json!({"agent": "waiter"})).await;
    app.wait_for_status(&id, "waiting", Duration::from_secs(5))
        .await;
    let send = |body: &'static str, signature: Option<String>| {
        let mut request = app
            .client
            .post(app.url(&format!("/v1/runs/{id}/signals")))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-agentq-signature", signature);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let go = r#"{"name": "go", "payload": "signed"}"#;
    let now = chrono::Utc::now().timestamp();
    let refused = [
        (None, "must carry X-Agentq-Signature"),
        // the scheme before the time and run were signed
        (Some("sha256=00ff".into()), "must be t=<unix seconds>"),
        (Some(signed("other", now, &id, go)), "does not match"),
        (Some(signed("s3cret", now, &other, go)), "does not match"),
        (
            Some(signed("s3cret", now - 400, &id, go)),
            "outside the tolerance",
        ),
        (
            Some(signed("s3cret", now + 400, &id, go)),
            "outside the tolerance",
        ),
    ];
    for (signature, says) in refused {
        let (status, problem) = send(go, signature.clone()).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (401, Some("bad_signature")),
            "{signature:?}"
        );
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{signature:?}: {detail}");
    }
    // a signal the run does not wait for yet is kept; the same signed request again is a
    // replay, refused, and stores nothing
    let early = r#"{"name": "later"}"#;
    let header = signed("s3cret", now, &id, early);
    assert_eq!(send(early, Some(header.clone())).await.0, 202);
    let (status, problem) = send(early, Some(header)).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "signal_replayed");
    assert!(
        problem["detail"].as_str().unwrap().contains("replay"),
        "{problem}"
    );
    let received = app
        .events(&id)
        .await
        .into_iter()
        .filter(|e| e["type"] == "signal_received")
        .count();
    assert_eq!(received, 1);
    // signed anew (another second), the same body is taken
    let (status, _) = send(early, Some(signed("s3cret", now - 1, &id, early))).await;
    assert_eq!(status, 202);
    let (status, body) = send(go, Some(signed("s3cret", now, &id, go))).await;
    assert_eq!(status, 202, "{body}");
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"]["got"], "signed");
}

#[tokio::test]
async fn the_approval_flow_example_runs_end_to_end() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "approval_flow", "input": {"task": "migrate billing"}}))
        .await;
    let waiting = app
        .wait_for_status(&id, "waiting", Duration::from_secs(5))
        .await;
    assert_eq!(
        waiting["waiting_for"]["signals"],
        json!(["plan_approved", "plan_rejected", "answers_received"])
    );
    assert_eq!(waiting["checkpoint"]["plan"], "plan v1 for migrate billing");
    let comment = json!({"name": "plan_rejected", "payload": {"comment": "do it in two steps"}});
    assert_eq!(signal(&app, &id, comment).await.0, 202);
    // rejected: back to planning with the feedback, then waiting again
    let waiting = app
        .wait_for(&id, Duration::from_secs(5), |r| {
            r["status"] == "waiting" && r["checkpoint"]["feedback"] == json!(["do it in two steps"])
        })
        .await;
    assert_eq!(
        waiting["checkpoint"]["plan"],
        "plan v2 for migrate billing, revised after: do it in two steps"
    );
    assert_eq!(
        signal(&app, &id, json!({"name": "plan_approved"})).await.0,
        202
    );
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"]["revisions"], 1);
    assert_eq!(
        run["result"]["implemented"],
        "plan v2 for migrate billing, revised after: do it in two steps"
    );
    assert_eq!(run["attempt"], 1);
}

#[tokio::test]
async fn a_wait_and_another_finish_in_one_batch_are_both_answered() {
    use agentq::domain::RunStatus;
    use agentq::store::Outcome;

    use crate::helpers::{echo_only, insert, new_run, temp_store};

    let (store, _dir) = temp_store().await;
    let first = insert(&store, new_run()).await;
    let second = insert(&store, new_run()).await;
    let claimed = store
        .claim(
            "w".into(),
            echo_only(),
            2,
            Duration::from_secs(30),
            None,
            None,
        )
        .await
        .unwrap();
    let fence = |id| claimed.iter().find(|c| c.id == id).unwrap().fence();
    let wait = Outcome::Wait {
        signals: vec!["go".into()],
        until: chrono::Utc::now() + chrono::Duration::seconds(60),
        resume_on_timeout: false,
    };
    // sent together, so the writer takes both in one batch
    let (waited, finished) = tokio::join!(
        store.finish(fence(first.id), wait),
        store.finish(fence(second.id), Outcome::Succeeded(json!(1))),
    );
    assert!(waited.unwrap() && finished.unwrap());
    assert_eq!(
        store.get_run(first.id).await.unwrap().status,
        RunStatus::Waiting
    );
    assert_eq!(
        store.get_run(second.id).await.unwrap().status,
        RunStatus::Succeeded
    );
}

#[tokio::test]
async fn the_built_in_echo_waits_for_a_human_as_the_readme_tour_shows() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": "deploy v2", "wait_for": ["approved", "rejected"]}}))
        .await;
    let waiting = app
        .wait_for_status(&id, "waiting", Duration::from_secs(5))
        .await;
    assert_eq!(
        waiting["waiting_for"]["signals"],
        json!(["approved", "rejected"])
    );
    let (status, answer) = signal(
        &app,
        &id,
        json!({"name": "approved", "payload": {"by": "ann"}}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["resumed"], true);
    let done = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(
        done["result"],
        json!({"value": "deploy v2", "signal": {"name": "approved", "payload": {"by": "ann"}}})
    );
    // the signal is kept: an attempt after it (a planned failure here) does not wait again
    let retried = app
        .create(
            json!({"agent": "echo", "input": {"value": 2, "wait_for": ["ok"], "fail_attempts": 1}}),
        )
        .await;
    app.wait_for_status(&retried, "waiting", Duration::from_secs(5))
        .await;
    assert_eq!(signal(&app, &retried, json!({"name": "ok"})).await.0, 202);
    let done = app
        .wait_for_status(&retried, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(done["result"]["signal"]["name"], "ok");
    // a wait shorter than a second is refused with the field named
    let response = app
        .post_run(json!({"agent": "echo", "input": {"wait_for": ["ok"], "wait_timeout_ms": 10}}))
        .await;
    assert_eq!(response.status(), 422);
}
