use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::TestApp;

#[tokio::test]
async fn progress_shows_while_the_run_is_running() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1, "steps": 4, "delay_ms": 2000}}))
        .await;
    let run = app
        .wait_for(&id, Duration::from_secs(5), |r| {
            r["status"] == "running" && r["progress"]["percent"].as_u64().unwrap_or(0) >= 25
        })
        .await;
    assert_eq!(run["progress"]["message"], "step 1 of 4");
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(run["progress"]["percent"], 100);
    let events = app.events(&id).await;
    let progress: Vec<&Value> = events.iter().filter(|e| e["type"] == "progress").collect();
    assert_eq!(progress.len(), 4);
    assert_eq!(progress[3]["data"]["percent"], 100);
}

#[tokio::test]
async fn get_run_supports_etag_polling_and_retry_after_until_finished() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "patient", "input": {"ms": 400}}))
        .await;
    let url = app.url(&format!("/v1/runs/{id}"));
    let first = app.client.get(&url).send().await.unwrap();
    assert_eq!(first.headers()["retry-after"], "1");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let again = app
        .client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    // unchanged (304) unless a worker changed the run in between (200 with a new tag)
    if again.status() == 304 {
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
        assert!(again.bytes().await.unwrap().is_empty());
    } else {
        assert_ne!(again.headers()["etag"].to_str().unwrap(), etag);
    }
    app.wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    let done = app
        .client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200, "a finished run has a new tag");
    assert!(done.headers().get("retry-after").is_none());
    let etag = done.headers()["etag"].to_str().unwrap().to_owned();
    let cached = app
        .client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
}

#[tokio::test]
async fn events_can_be_read_after_a_given_seq() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    app.wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    let body: Value = app.get_json(&format!("/v1/runs/{id}/events?after=1")).await;
    let seqs: Vec<i64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);
}

#[tokio::test]
async fn a_running_run_stays_a_304_while_its_lease_is_renewed_and_a_wait_is_polled_slowly() {
    let app = TestApp::spawn().await;
    // the test lease is 2 s: renewed several times while this runs
    let id = app
        .create(json!({"agent": "patient", "input": {"ms": 3_000}}))
        .await;
    let running = app
        .wait_for_status(&id, "running", Duration::from_secs(5))
        .await;
    let url = app.url(&format!("/v1/runs/{id}"));
    let etag = app.client.get(&url).send().await.unwrap().headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let later = app
        .client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(later.status(), 304, "only the lease changed");
    assert_eq!(later.headers()["retry-after"], "1");
    let now = app.get_run(&id).await;
    assert_ne!(
        now["lease_until"], running["lease_until"],
        "the lease was renewed"
    );
    // a run waiting for a human is polled at most every minute, not every second
    let waiting = app
        .create(json!({"agent": "waiter", "input": {"timeout_ms": 3_600_000}}))
        .await;
    app.wait_for_status(&waiting, "waiting", Duration::from_secs(5))
        .await;
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{waiting}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "60");
    // due in ten seconds: polled when it is due
    let later = (chrono::Utc::now() + chrono::Duration::seconds(10)).to_rfc3339();
    let scheduled = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "run_at": later}))
        .await;
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{scheduled}")))
        .send()
        .await
        .unwrap();
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((8..=10).contains(&wait), "{wait}");
    // blocked on a run that is still going: looked at every 5 s
    let mut body = json!({"agent": "echo", "input": {"value": 1}});
    body["depends_on"] = json!([id]);
    let blocked = app.create(body).await;
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{blocked}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "5");
    // the tag is weak: a 304 may stand for a body whose lease moved
    assert!(
        response.headers()["etag"]
            .to_str()
            .unwrap()
            .starts_with("W/\"")
    );
}

/// Every timestamp agentq writes, in a run, its events, and the lists beside it, has one
/// shape: RFC 3339 in UTC with exactly three fractional digits (a whole second included).
#[tokio::test]
async fn every_timestamp_has_millisecond_precision() {
    fn check(path: &str, v: &Value, seen: &mut usize) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let stamp = k.ends_with("_at")
                        || [
                            "at",
                            "until",
                            "deadline",
                            "now",
                            "attempt_deadline",
                            "run_deadline",
                            "window_start",
                        ]
                        .contains(&k.as_str());
                    if let (true, Value::String(s)) = (stamp, v) {
                        *seen += 1;
                        let b = s.as_bytes();
                        assert!(
                            s.len() == 24
                                && b[10] == b'T'
                                && b[19] == b'.'
                                && s.ends_with('Z')
                                && chrono::DateTime::parse_from_rfc3339(s).is_ok(),
                            "{path}.{k} = {s}"
                        );
                    }
                    check(&format!("{path}.{k}"), v, seen);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| check(path, v, seen)),
            _ => {}
        }
    }
    let app = TestApp::spawn().await;
    // a whole second, which chrono's own form writes without a fraction
    let soon = chrono::Utc::now().timestamp() + 3600;
    let at = |secs: i64| {
        chrono::DateTime::from_timestamp(secs, 0)
            .unwrap()
            .to_rfc3339()
    };
    let created: Value = app
        .post_run(
            json!({"agent": "echo", "input": {"value": 1}, "run_at": at(soon),
                         "deadline": at(soon + 3600), "expires_at": at(soon + 600)}),
        )
        .await
        .json()
        .await
        .unwrap();
    let mut seen = 0;
    // the create answer too, with its run token's expiry
    assert!(created["run_token_expires_at"].is_string(), "{created}");
    check("created", &created, &mut seen);
    let later = created["id"].as_str().unwrap().to_owned();
    let retried = app
        .create(
            json!({"agent": "echo", "input": {"value": 1, "fail_attempts": 1},
                       "backoff_base_ms": 10}),
        )
        .await;
    let waiting = app
        .create(json!({"agent": "echo", "input": {"value": 1, "wait_for": ["approved"]}}))
        .await;
    app.wait_for_status(&retried, "succeeded", Duration::from_secs(10))
        .await;
    app.wait_for_status(&waiting, "waiting", Duration::from_secs(10))
        .await;
    let schedule = app
        .client
        .post(app.url("/v1/schedules"))
        .json(&json!({"agent": "echo", "input": {"value": 1}, "interval": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(schedule.status(), 201);
    let change = app
        .client
        .patch(app.url(&format!("/v1/runs/{later}")))
        .json(&json!({"run_at": at(soon + 1)}))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), 200);
    for id in [&later, &retried, &waiting] {
        check(id, &app.get_run(id).await, &mut seen);
        check(id, &Value::Array(app.events(id).await), &mut seen);
    }
    for path in [
        "/v1/runs",
        "/v1/workers",
        "/v1/agents",
        "/v1/queues",
        "/v1/schedules",
    ] {
        check(path, &app.get_json(path).await, &mut seen);
    }
    assert!(seen > 30, "only {seen} timestamps read");
}

#[tokio::test]
async fn events_are_read_in_pages_of_at_most_limit() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1, "steps": 25, "delay_ms": 50}}))
        .await;
    app.wait_for_status(&id, "succeeded", Duration::from_secs(20))
        .await;
    let all: Value = app.get_json(&format!("/v1/runs/{id}/events")).await;
    let all = all["events"].as_array().unwrap().clone();
    assert!(all.len() > 25, "{}", all.len());
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = app
            .get_json(&format!("/v1/runs/{id}/events?after={after}&limit=10"))
            .await;
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 10);
        paged.extend(events.iter().cloned());
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(paged, all);
    for bad in ["0", "1001", "x"] {
        let response = app
            .client
            .get(app.url(&format!("/v1/runs/{id}/events?limit={bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "limit={bad}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "limit", "{problem}");
    }
}

#[tokio::test]
async fn a_run_keeps_its_latest_progress_events_not_every_one() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1, "steps": 1000, "delay_ms": 5000}}))
        .await;
    app.wait_for_status(&id, "succeeded", Duration::from_secs(30))
        .await;
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = app
            .get_json(&format!("/v1/runs/{id}/events?after={after}"))
            .await;
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    let progress: Vec<&Value> = events.iter().filter(|e| e["type"] == "progress").collect();
    let last_seq = events.last().unwrap()["seq"].as_i64().unwrap();
    // far more progress was reported than is kept (else this test could not fail)
    assert!(last_seq > 300, "only {last_seq} events were written");
    assert!(
        (100..=150).contains(&progress.len()),
        "{} progress events kept of {last_seq} events",
        progress.len()
    );
    // the latest are the ones kept, and every other event is there
    assert_eq!(progress.last().unwrap()["data"]["percent"], 100);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"created"));
    assert!(types.contains(&"started"));
    assert_eq!(types.last(), Some(&"succeeded"));
}
