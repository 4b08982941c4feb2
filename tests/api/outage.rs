//! The database going away under load: PostgreSQL restarted while runs are submitted and
//! executed. These tests start their own throwaway server (tests/api/throwaway.rs), so the
//! PostgreSQL pass of `scripts/test.sh` skips them rather than run them twice.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::process::Agentq;
use crate::support::eventually::eventually;
use crate::throwaway::ThrowawayPostgres;

#[derive(Default)]
struct Load {
    accepted: BTreeSet<String>,
    unavailable: usize,
    retry_after_seen: bool,
    other: Vec<String>,
}

/// POSTs runs until `stop`, recording what each answer said.
async fn submit_until(base: String, load: Arc<Mutex<Load>>, stop: Arc<tokio::sync::Notify>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut i = 0;
    loop {
        let post = client
            .post(format!("{base}/v1/runs"))
            .json(&json!({"agent": "echo", "input": {"value": i, "delay_ms": 50}}))
            .send();
        let answer = tokio::select! {
            answer = post => answer,
            _ = stop.notified() => return,
        };
        i += 1;
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                load.lock().unwrap().other.push(format!("transport: {e}"));
                continue;
            }
        };
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        {
            let mut load = load.lock().unwrap();
            match status {
                202 => {
                    load.accepted
                        .insert(body["id"].as_str().unwrap().to_owned());
                }
                503 if body["code"] == "unavailable" => {
                    load.unavailable += 1;
                    load.retry_after_seen |= retry_after;
                }
                _ => load.other.push(format!("{status}: {body}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn postgres_restarted_under_load_answers_503_meanwhile_and_loses_no_accepted_run() {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start)
        .await
        .unwrap();
    let agentq = Agentq::start(&pg.url(), &[]).await;
    let load = Arc::new(Mutex::new(Load::default()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let submitter = tokio::spawn(submit_until(
        agentq.base.clone(),
        load.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pg = tokio::task::spawn_blocking(move || {
        pg.kill();
        pg
    })
    .await
    .unwrap();
    // while it is down: POSTs answer 503 `unavailable`, and readiness says why
    eventually(
        Duration::from_secs(15),
        "a 503 while the database is down",
        || async {
            let unavailable = load.lock().unwrap().unavailable;
            if unavailable > 0 {
                Ok(())
            } else {
                Err(unavailable)
            }
        },
    )
    .await;
    let ready = reqwest::get(format!("{}/readyz", agentq.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "unavailable", "{body}");
    let why = body["checks"]["database"].as_str().unwrap_or("ok");
    assert_ne!(why, "ok", "readiness names the database: {body}");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again();
        pg
    })
    .await
    .unwrap();
    // accepted again once it is back
    let accepted_before = load.lock().unwrap().accepted.len();
    eventually(Duration::from_secs(30), "POSTs succeed again", || async {
        let accepted = load.lock().unwrap().accepted.len();
        if accepted >= accepted_before + 20 {
            Ok(())
        } else {
            Err(accepted)
        }
    })
    .await;
    stop.notify_one();
    submitter.await.unwrap();

    let load = std::mem::take(&mut *load.lock().unwrap());
    assert!(
        load.other.is_empty(),
        "every answer was 202 or 503: {:?}",
        load.other
    );
    assert!(load.retry_after_seen, "503s carry Retry-After");
    // every accepted run is stored and finishes
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &load.accepted {
        let what = format!("accepted run {id} finishes");
        eventually(
            deadline.saturating_duration_since(Instant::now()),
            &what,
            || async {
                let run = agentq.get_json(&format!("/v1/runs/{id}")).await;
                if run["status"] == "succeeded" {
                    Ok(())
                } else {
                    Err(run)
                }
            },
        )
        .await;
    }
    let ready = reqwest::get(format!("{}/readyz", agentq.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    eprintln!(
        "outage: {} runs accepted, {} POSTs answered 503 while PostgreSQL was down",
        load.accepted.len(),
        load.unavailable
    );
    drop(agentq);
    drop(pg);
}
