//! Every transition a run's event log shows, checked against `RunStatus::can_become`,
//! the lifecycle's specification: the SQL's conditional updates must not move a run in a
//! way it does not allow. The helpers that wait for a run (`TestApp::wait_for`,
//! `Agentq::wait_for_status`) check the run's log on the way, so every test that waits for
//! a run checks its transitions too.

use agentq::domain::RunStatus::{self, *};
use serde_json::Value;

/// The statuses an event's type moves a run to; `None` for events that move nothing
/// (progress, logs, checkpoints, stream parts, signals received, webhooks, compensation
/// created).
fn moves_to(kind: &str) -> Option<&'static [RunStatus]> {
    const STILL: &[&str] = &[
        "created",
        "progress",
        "log",
        "checkpoint",
        "stream",
        "signal_received",
        "webhook_delivered",
        "webhook_failed",
        "compensation_created",
        // a run that has not started changes its priority or run_at, not its status
        "changed",
    ];
    if STILL.contains(&kind) {
        return None;
    }
    Some(match kind {
        "started" => &[Running],
        "retry_scheduled" => &[Retrying],
        "succeeded" => &[Succeeded],
        "failed" => &[Failed],
        "cancelled" => &[Cancelled],
        "released" | "resumed" | "unblocked" => &[Queued],
        "attempt_lost" => &[Retrying],
        "waiting" => &[Waiting],
        // a failed run retried by hand waits again for a dependency that is not done
        "requeued" => &[Queued, Blocked],
        other => panic!("an event type the lifecycle check does not know: `{other}`"),
    })
}

/// Panics, naming the run and the step, when `events` (as `GET /v1/runs/{id}/events`
/// lists them, oldest first) hold a transition `can_become` forbids. `run` is the run as
/// `GET /v1/runs/{id}` shows it (its id and `depends_on`).
pub fn assert_lifecycle(run: &Value, events: &[Value]) {
    let id = run["id"].as_str().unwrap_or("?");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    // a run starts queued, or blocked when some run it depends on has not succeeded yet
    // or its concurrency key is full
    let depends = run["depends_on"].as_array().is_some_and(|d| !d.is_empty())
        || run["concurrency_key"].is_string();
    let mut now: Vec<RunStatus> = if depends {
        vec![Queued, Blocked]
    } else {
        vec![Queued]
    };
    let mut seen = now.clone();
    for (i, kind) in kinds.iter().enumerate() {
        // the sweep of a last attempt writes `attempt_lost` then `failed`: one transition
        if *kind == "attempt_lost" && kinds.get(i + 1) == Some(&"failed") {
            continue;
        }
        let Some(next) = moves_to(kind) else { continue };
        let reached: Vec<RunStatus> = next
            .iter()
            .copied()
            .filter(|to| now.iter().any(|from| from.can_become(*to)))
            .collect();
        assert!(
            !reached.is_empty(),
            "run {id}: `{kind}` (event {}) moves it to {next:?}, which can_become forbids from \
             {now:?}: {kinds:?}",
            i + 1
        );
        seen.extend(&reached);
        now = reached;
    }
    // the status the run showed (read before its log) is one its log passes through: a
    // change written without its event would not be
    if let Some(status) = run["status"].as_str() {
        let status: RunStatus = status.parse().unwrap();
        assert!(
            seen.contains(&status),
            "run {id} is {status} but its log passes through {seen:?} only: {kinds:?}"
        );
    }
}

#[test]
fn the_checker_accepts_the_lifecycle_and_refuses_what_it_forbids() {
    let log = |kinds: &[&str]| -> Vec<Value> {
        kinds
            .iter()
            .map(|k| serde_json::json!({ "type": k }))
            .collect()
    };
    let run = serde_json::json!({ "id": "r", "depends_on": [] });
    for fine in [
        &["created", "started", "progress", "succeeded"][..],
        &[
            "created",
            "started",
            "retry_scheduled",
            "started",
            "attempt_lost",
            "failed",
        ],
        &[
            "created",
            "started",
            "waiting",
            "signal_received",
            "resumed",
            "started",
            "succeeded",
        ],
        &[
            "created",
            "started",
            "failed",
            "requeued",
            "started",
            "succeeded",
        ],
        &["created", "started", "released", "started", "cancelled"],
        &["created", "failed"],
    ] {
        assert_lifecycle(&run, &log(fine));
    }
    let dependent = serde_json::json!({ "id": "d", "depends_on": ["r"] });
    assert_lifecycle(
        &dependent,
        &log(&["created", "unblocked", "started", "succeeded"]),
    );
    for bad in [
        &["created", "succeeded"][..],
        &["created", "started", "succeeded", "started"],
        &["created", "started", "cancelled", "requeued"],
        &["created", "waiting"],
        &["created", "unblocked"],
    ] {
        let caught = std::panic::catch_unwind(|| assert_lifecycle(&run, &log(bad)));
        assert!(caught.is_err(), "{bad:?} passed");
    }
}

/// Checks the event log of every run in `store` (up to 2,000 of them), for the tests that
/// drive the store directly.
pub async fn assert_every_lifecycle(store: &agentq::store::Store) {
    let filter = agentq::store::RunFilter {
        limit: 2_000,
        ..Default::default()
    };
    for run in store.list_runs(&filter).await.unwrap().runs {
        let events = store.list_events(run.id, 0).await.unwrap();
        let events: Vec<Value> = events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        assert_lifecycle(&serde_json::to_value(&run).unwrap(), &events);
    }
}
