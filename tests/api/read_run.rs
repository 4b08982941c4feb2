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
