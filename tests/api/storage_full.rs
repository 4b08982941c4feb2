//! A full storage: SQLite refusing to grow past `--sqlite-max-size` fails writes exactly as
//! a full disk does (SQLITE_FULL). Writes are refused with `503 storage_full`, readiness
//! and the metrics say so, nothing accepted is lost, and all goes on once space returns.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::TestApp;
use crate::support::eventually::eventually;

#[tokio::test]
async fn a_full_storage_refuses_writes_with_503_storage_full_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("agentq.db").display());
    let app = TestApp::spawn_on(&url, |c| c.store.sqlite_max_size = Some(4 * 1024 * 1024)).await;
    // ballast an operator can delete later, to free space
    let mut ballast = Vec::new();
    for i in 0..3 {
        let id = app
            .create(
                json!({"agent": "echo", "input": {"value": format!("{i}{}", "b".repeat(300_000))}}),
            )
            .await;
        ballast.push(id);
    }
    for id in &ballast {
        app.wait_for_status(id, "succeeded", Duration::from_secs(20))
            .await;
    }
    // then runs until the storage is full
    let mut accepted = Vec::new();
    let mut refusal = None;
    for i in 0..400 {
        let response = app
            .post_run(
                json!({"agent": "echo", "input": {"value": format!("{i}{}", "x".repeat(30_000))}}),
            )
            .await;
        match response.status().as_u16() {
            202 => accepted.push(
                response.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            503 => {
                let retry_after = response.headers().get("retry-after").cloned();
                refusal = Some((retry_after, response.json::<Value>().await.unwrap()));
                break;
            }
            s => panic!("{s}: {}", response.text().await.unwrap()),
        }
    }
    let (retry_after, problem) = refusal.expect("the storage filled up");
    assert!(!accepted.is_empty());
    assert_eq!(problem["code"], "storage_full", "{problem}");
    assert_eq!(retry_after.unwrap(), "10");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    let storage = ready["checks"]["storage"].as_str().unwrap_or_default();
    assert!(storage.starts_with("full"), "{ready}");
    assert_eq!(ready["checks"]["database"], "ok", "reads go on: {ready}");
    assert_storage_full(&app, 1).await;
    // every accepted run is stored
    for id in &accepted {
        let run = app.get_run(id).await;
        assert_eq!(run["id"], id.as_str(), "{run}");
    }

    // an operator frees space
    let mut side = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for id in &ballast {
        sqlx::query("DELETE FROM run_events WHERE run_id = ?")
            .bind(id)
            .execute(&mut side)
            .await
            .unwrap();
        sqlx::query("DELETE FROM runs WHERE id = ?")
            .bind(id)
            .execute(&mut side)
            .await
            .unwrap();
    }
    side.close().await.unwrap();
    // writes are taken again, readiness and the metrics say so, and every accepted run ends
    let id = eventually(
        Duration::from_secs(30),
        "a POST is accepted again",
        || async {
            let response = app
                .post_run(json!({"agent": "echo", "input": {"value": "after"}}))
                .await;
            match response.status().as_u16() {
                202 => Ok(response.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()),
                s => Err(format!("{s}: {}", response.text().await.unwrap())),
            }
        },
    )
    .await;
    app.wait_for_status(&id, "succeeded", Duration::from_secs(30))
        .await;
    for id in &accepted {
        app.wait_for_status(id, "succeeded", Duration::from_secs(60))
            .await;
    }
    // (a commit more than 5 s after the last refusal shows the space is back)
    eventually(
        Duration::from_secs(30),
        "readiness says the storage is ok",
        || async {
            let ready: Value = app.get_json("/readyz").await;
            if ready["checks"]["storage"] == "ok" {
                Ok(())
            } else {
                Err(ready)
            }
        },
    )
    .await;
    assert_storage_full(&app, 0).await;
    app.shutdown().await;
}

/// The metrics page shows `agentq_storage_full` at `value`.
async fn assert_storage_full(app: &TestApp, value: u8) {
    let url = app.url("/metrics");
    let metrics = app
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!("agentq_storage_full {value}");
    assert!(metrics.lines().any(|l| l == line), "{metrics}");
}
