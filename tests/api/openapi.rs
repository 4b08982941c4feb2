//! The committed `openapi/openapi.json` must be what the code generates.

#[test]
fn committed_openapi_document_matches_the_code() {
    let generated = serde_json::to_string_pretty(&agentq::api::openapi()).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: regenerate it with `cargo run -- openapi > openapi/openapi.json` \
         (or UPDATE_OPENAPI=1 cargo test --test api openapi) and commit it"
    );
}

#[test]
fn every_operation_id_is_the_handler_name() {
    let doc = serde_json::to_value(agentq::api::openapi()).unwrap();
    let mut ids: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "cancel_run",
            "change_run",
            "claim_runs",
            "count_runs",
            "create_run",
            "create_runs",
            "create_schedule",
            "declare_agent",
            "delete_schedule",
            "get_agent",
            "get_metrics",
            "get_run",
            "get_schedule",
            "healthz",
            "list_agents",
            "list_queues",
            "list_run_events",
            "list_runs",
            "list_schedules",
            "list_workers",
            "pause_agent",
            "pause_schedule",
            "readyz",
            "report_attempts",
            "resume_agent",
            "resume_schedule",
            "retry_run",
            "retry_runs",
            "send_signal",
            "stream_run",
            "worker_heartbeat",
        ]
    );
}

/// The events of real runs, of nearly every type, each checked against the schema the
/// document names for its type's `data` (`x-agentq-data-schemas`): a change to what the
/// engine writes, or to the document, that makes them disagree fails here.
#[tokio::test]
async fn every_events_data_fits_the_schema_the_document_names_for_its_type() {
    use serde_json::json;
    use std::time::Duration;

    let doc = serde_json::to_value(agentq::api::openapi()).unwrap();
    let kinds: Vec<&str> = doc["components"]["schemas"]["EventKind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let by_type =
        &doc["components"]["schemas"]["RunEvent"]["properties"]["data"]["x-agentq-data-schemas"];
    let mut named: Vec<&str> = by_type
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    named.sort();
    let mut all = kinds.clone();
    all.sort();
    assert_eq!(
        named, all,
        "every event type, and only those, has a data schema"
    );
    let validator = |kind: &str| {
        let root = json!({"$ref": by_type[kind], "components": doc["components"]});
        jsonschema::validator_for(&root).unwrap()
    };
    // the check bites: data of another shape is refused
    assert!(!validator("waiting").is_valid(&json!({"signals": ["go"], "until": 1})));
    assert!(!validator("progress").is_valid(&json!({"percent": 5, "extra": true})));

    let app = crate::helpers::TestApp::spawn().await;
    let mut ids = Vec::new();
    // progress, a retry, success
    ids.push(
        app.create(
            json!({"agent": "echo", "input": {"value": 1, "steps": 2, "fail_attempts": 1},
                                "backoff_base_ms": 10}),
        )
        .await,
    );
    // a wait for a human (checkpoint, waiting, signal_received, resumed), then a failure for
    // good with a compensation run
    let waits = app
        .create(json!({"agent": "echo", "input": {"value": 1, "wait_for": ["go"], "fail_permanently": true},
                       "max_attempts": 1, "on_failure": {"agent": "undo"}}))
        .await;
    ids.push(waits.clone());
    // streamed text
    ids.push(
        app.create(json!({"agent": "echo", "input": {"text": "a few words"}}))
            .await,
    );
    // due later: changed, then cancelled by request
    let later = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "run_at": chrono::Utc::now() + chrono::Duration::hours(1)}))
        .await;
    ids.push(later.clone());
    // a key: the second run waits its turn (unblocked)
    let key = |key: &str, policy: &str| {
        json!({"agent": "echo", "input": {"value": 1, "delay_ms": 300}, "concurrency_key": key,
               "concurrency_policy": policy})
    };
    ids.push(app.create(key("a", "queue")).await);
    ids.push(app.create(key("a", "queue")).await);
    // on another key, a newer run cancels the one holding it (cancelled, with a reason)
    ids.push(app.create(key("b", "queue")).await);
    ids.push(app.create(key("b", "cancel_running")).await);

    app.wait_for_status(&waits, "waiting", Duration::from_secs(10))
        .await;
    let signal = app
        .client
        .post(app.url(&format!("/v1/runs/{waits}/signals")))
        .json(&json!({"name": "go", "payload": {"ok": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(signal.status(), 202);
    let failed = app
        .wait_for_status(&waits, "failed", Duration::from_secs(10))
        .await;
    // retried by hand: requeued
    let retry = app
        .client
        .post(app.url(&format!("/v1/runs/{waits}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 200, "{failed}");
    let changed = app
        .client
        .patch(app.url(&format!("/v1/runs/{later}")))
        .json(&json!({"priority": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    // a signal without a payload (kept: the run does not wait yet)
    let bare = app
        .client
        .post(app.url(&format!("/v1/runs/{later}/signals")))
        .json(&json!({"name": "later"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 202);
    assert_eq!(app.cancel(&later).await.status(), 200);
    for id in &ids {
        app.wait_for(id, Duration::from_secs(15), |r| {
            ["succeeded", "failed", "cancelled"].contains(&r["status"].as_str().unwrap())
        })
        .await;
    }

    let mut seen = std::collections::BTreeSet::new();
    for id in &ids {
        for event in app.events(id).await {
            let kind = event["type"].as_str().unwrap().to_owned();
            assert!(kinds.contains(&kind.as_str()), "{kind} is not in EventKind");
            let errors: Vec<String> = validator(&kind)
                .iter_errors(&event["data"])
                .map(|e| format!("{} at {}", e, e.instance_path))
                .collect();
            assert!(errors.is_empty(), "{kind} {}: {errors:?}", event["data"]);
            seen.insert(kind);
        }
    }
    for kind in [
        "created",
        "started",
        "progress",
        "retry_scheduled",
        "succeeded",
        "failed",
        "checkpoint",
        "compensation_created",
        "unblocked",
        "waiting",
        "signal_received",
        "resumed",
        "cancelled",
        "requeued",
        "changed",
        "stream",
    ] {
        assert!(seen.contains(kind), "no {kind} event was checked: {seen:?}");
    }
}
