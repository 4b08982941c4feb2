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
