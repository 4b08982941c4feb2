//! The store's guarantees, driven directly: claims are exclusive, and every write of an
//! attempt is fenced so a worker that lost its run cannot change it.

use std::time::Duration;

use agentq::domain::{NewRun, Progress, RunError, RunErrorKind, RunStatus};
use agentq::store::{ClaimedRun, Outcome, Store};
use serde_json::json;

use crate::support::store::{echo_only, insert, new_run, store_on_manual_clock, temp_store};

/// Claims the one due run for `worker`.
async fn claim_one(store: &Store, worker: &str, lease: Duration) -> ClaimedRun {
    let mut claimed = store
        .claim(worker.into(), echo_only(), 1, lease, None, None)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "one run was due");
    claimed.remove(0)
}

/// A run whose first claim (worker `a`) lost its lease and was claimed again by `b`:
/// returns the stale claim and the current one. The store's clock is moved past the lease.
async fn stale_and_current(store: &Store) -> (ClaimedRun, ClaimedRun) {
    store.insert_run(new_run()).await.unwrap();
    let stale = claim_one(store, "a", Duration::from_secs(15)).await;
    store.clock().advance(Duration::from_secs(16));
    assert_eq!(store.sweep_expired().await.unwrap().retried, 1);
    let current = claim_one(store, "b", Duration::from_secs(30)).await;
    (stale, current)
}

#[tokio::test]
async fn a_claimed_run_cannot_be_claimed_again() {
    let (store, _dir) = temp_store().await;
    store.insert_run(new_run()).await.unwrap();
    let first = store
        .claim(
            "a".into(),
            echo_only(),
            10,
            Duration::from_secs(30),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    let second = store
        .claim(
            "b".into(),
            echo_only(),
            10,
            Duration::from_secs(30),
            None,
            None,
        )
        .await
        .unwrap();
    assert!(
        second.is_empty(),
        "a duplicate delivery finds nothing to run"
    );
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn claims_take_only_the_agents_asked_for() {
    let (store, _dir) = temp_store().await;
    store
        .insert_run(NewRun {
            agent: "http".into(),
            ..new_run()
        })
        .await
        .unwrap();
    assert!(
        store
            .claim(
                "a".into(),
                echo_only(),
                10,
                Duration::from_secs(30),
                None,
                None
            )
            .await
            .unwrap()
            .is_empty()
    );
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_finished_attempt_cannot_be_finished_again() {
    let (store, _dir) = temp_store().await;
    store.insert_run(new_run()).await.unwrap();
    let run = claim_one(&store, "a", Duration::from_secs(30)).await;
    assert!(
        store
            .finish(run.fence(), Outcome::Succeeded(json!(1)))
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish(run.fence(), Outcome::Succeeded(json!(2)))
            .await
            .unwrap()
    );
    let stored = store.get_run(run.id).await.unwrap();
    assert_eq!(stored.result, Some(json!(1)));
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_stale_attempt_cannot_write_after_its_lease_expired_and_the_run_was_claimed_again() {
    let (store, clock, _dir) = store_on_manual_clock(false).await;
    store.insert_run(new_run()).await.unwrap();
    let stale = claim_one(&store, "a", Duration::from_secs(15)).await;
    clock.advance(Duration::from_secs(16));
    let sweep = store.sweep_expired().await.unwrap();
    assert_eq!(sweep.retried, 1);
    let lost = store.get_run(stale.id).await.unwrap();
    assert_eq!(lost.status, RunStatus::Retrying);
    assert_eq!(lost.error.as_ref().unwrap().kind, RunErrorKind::LostWorker);

    let fresh = claim_one(&store, "b", Duration::from_secs(30)).await;
    assert_eq!(fresh.attempt, 2);
    let progress = Progress {
        percent: 50,
        message: None,
    };
    assert!(
        !store
            .progress(stale.fence(), progress.clone())
            .await
            .unwrap()
    );
    assert!(
        !store
            .log(stale.fence(), "info", "zombie".into())
            .await
            .unwrap()
    );
    let failure = RunError {
        kind: RunErrorKind::AgentError,
        message: "zombie".into(),
    };
    assert!(
        !store
            .finish(stale.fence(), Outcome::Failed(failure))
            .await
            .unwrap()
    );
    assert!(store.progress(fresh.fence(), progress).await.unwrap());
    assert!(
        store
            .finish(fresh.fence(), Outcome::Succeeded(json!("ok")))
            .await
            .unwrap()
    );

    let run = store.get_run(stale.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.attempt, 2);
    let kinds: Vec<String> = store
        .list_events(run.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "started",
            "attempt_lost",
            "started",
            "progress",
            "succeeded"
        ]
    );
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_lost_last_attempt_fails_the_run_as_lost_worker() {
    let (store, clock, _dir) = store_on_manual_clock(false).await;
    store
        .insert_run(NewRun {
            max_attempts: 1,
            ..new_run()
        })
        .await
        .unwrap();
    let run = claim_one(&store, "a", Duration::from_secs(15)).await;
    clock.advance(Duration::from_secs(16));
    assert_eq!(store.sweep_expired().await.unwrap().failed, 1);
    let failed = store.get_run(run.id).await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(failed.finished_at.is_some());
    let kinds: Vec<String> = store
        .list_events(run.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["created", "started", "attempt_lost", "failed"]);
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn renewed_leases_are_not_swept() {
    let (store, clock, _dir) = store_on_manual_clock(false).await;
    store.insert_run(new_run()).await.unwrap();
    let run = claim_one(&store, "a", Duration::from_millis(200)).await;
    for _ in 0..4 {
        clock.advance(Duration::from_millis(100));
        let held = store
            .renew_leases(vec![run.fence()], Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(held, [run.fence()]);
        assert_eq!(store.sweep_expired().await.unwrap().retried, 0);
    }
    assert!(
        store
            .finish(run.fence(), Outcome::Succeeded(json!(1)))
            .await
            .unwrap()
    );
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_released_run_keeps_its_attempt_and_its_old_holder_cannot_write() {
    let (store, _dir) = temp_store().await;
    store.insert_run(new_run()).await.unwrap();
    let held = claim_one(&store, "a", Duration::from_secs(30)).await;
    assert_eq!(store.release_worker("a".into()).await.unwrap(), 1);
    let queued = store.get_run(held.id).await.unwrap();
    assert_eq!((queued.status, queued.attempt), (RunStatus::Queued, 0));
    assert!(
        !store
            .finish(held.fence(), Outcome::Succeeded(json!(1)))
            .await
            .unwrap()
    );
    let again = claim_one(&store, "b", Duration::from_secs(30)).await;
    assert_eq!(again.attempt, 1, "handing back does not burn the attempt");
    // same attempt number, other worker: the old holder is still fenced out
    assert!(
        !store
            .finish(held.fence(), Outcome::Succeeded(json!(1)))
            .await
            .unwrap()
    );
    assert!(
        store
            .finish(again.fence(), Outcome::Succeeded(json!(2)))
            .await
            .unwrap()
    );
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn concurrent_claims_never_hand_out_one_run_twice() {
    let (store, _dir) = temp_store().await;
    for _ in 0..200 {
        store.insert_run(new_run()).await.unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store
                    .claim(
                        format!("w{w}").into(),
                        echo_only(),
                        7,
                        Duration::from_secs(30),
                        None,
                        None,
                    )
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|r| r.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 200);
    assert_eq!(unique.len(), 200);
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn renewing_a_lost_attempt_reports_it_lost_and_extends_nothing() {
    let (store, _clock, _dir) = store_on_manual_clock(false).await;
    let (stale, fresh) = stale_and_current(&store).await;
    let held = store
        .renew_leases(vec![stale.fence(), fresh.fence()], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(held, [fresh.fence()]);
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_stale_and_a_current_finish_of_one_run_in_one_batch_are_told_apart() {
    let (store, _clock, _dir) = store_on_manual_clock(false).await;
    let (stale, fresh) = stale_and_current(&store).await;
    let failure = RunError {
        kind: RunErrorKind::AgentError,
        message: "real failure".into(),
    };
    // sent together, so the writer takes both in one batch
    let (stale_applied, fresh_applied) = tokio::join!(
        store.finish(stale.fence(), Outcome::Succeeded(json!("zombie"))),
        store.finish(fresh.fence(), Outcome::Failed(failure)),
    );
    assert!(!stale_applied.unwrap());
    assert!(fresh_applied.unwrap());
    let run = store.get_run(fresh.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    let events = store.list_events(run.id, 0).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!((last.kind.as_str(), last.attempt), ("failed", 2));
    assert!(events.iter().all(|e| e.kind != "succeeded"));
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_claim_handed_back_and_claimed_again_by_the_same_worker_gets_a_new_fence() {
    let (store, _dir) = temp_store().await;
    store.insert_run(new_run()).await.unwrap();
    let first = claim_one(&store, "a", Duration::from_secs(30)).await;
    assert_eq!(store.hand_back(vec![first.fence()]).await.unwrap(), 1);
    let second = claim_one(&store, "a", Duration::from_secs(30)).await;
    assert_eq!(
        (first.attempt, second.attempt),
        (1, 1),
        "the attempt was given back"
    );
    assert_ne!(first.fence(), second.fence());
    let held = store
        .renew_leases(vec![first.fence(), second.fence()], Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(held, [second.fence()]);
    assert!(
        !store
            .finish(first.fence(), Outcome::Succeeded(json!(1)))
            .await
            .unwrap()
    );
    assert!(
        store
            .finish(second.fence(), Outcome::Succeeded(json!(2)))
            .await
            .unwrap()
    );
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_stale_attempt_cannot_overwrite_the_checkpoint() {
    let (store, _clock, _dir) = store_on_manual_clock(false).await;
    let (stale, current) = stale_and_current(&store).await;
    assert!(
        store
            .checkpoint(current.fence(), json!({"step": 2}))
            .await
            .unwrap()
    );
    assert!(
        !store
            .checkpoint(stale.fence(), json!({"step": 1}))
            .await
            .unwrap()
    );
    let run = store.get_run(current.id).await.unwrap();
    assert_eq!(run.checkpoint, Some(json!({"step": 2})));
    // the next claim hands the checkpoint to the next attempt
    store
        .finish(
            current.fence(),
            Outcome::Retry {
                error: RunError {
                    kind: RunErrorKind::AgentError,
                    message: "again".into(),
                },
                retry_at: chrono::Utc::now(),
            },
        )
        .await
        .unwrap();
    let next = claim_one(&store, "c", Duration::from_secs(30)).await;
    assert_eq!(next.checkpoint, Some(json!({"step": 2})));
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_run_given_back_mid_attempt_keeps_its_place_in_line_and_waits_from_then() {
    let (store, clock, _dir) = store_on_manual_clock(false).await;
    let first = insert(&store, new_run()).await.id;
    claim_one(&store, "gone", Duration::from_secs(15)).await;
    // a run queued while the first one ran
    store.insert_run(new_run()).await.unwrap();
    clock.advance(Duration::from_secs(16));

    // its worker lost the lease: it is claimed next, and its wait counts from the sweep,
    // not from when it was first due (16 s ago)
    assert_eq!(store.sweep_expired().await.unwrap().retried, 1);
    clock.advance(Duration::from_millis(40));
    let again = claim_one(&store, "b", Duration::from_secs(30)).await;
    assert_eq!(again.id, first, "the lost run goes first");
    assert_eq!(again.queue_wait_ms, 40, "counted from the sweep");

    // handed back at shutdown: the same
    clock.advance(Duration::from_secs(5));
    assert_eq!(store.release_worker("b".into()).await.unwrap(), 1);
    clock.advance(Duration::from_millis(70));
    let again = claim_one(&store, "c", Duration::from_secs(30)).await;
    assert_eq!(again.id, first, "the handed-back run goes first");
    assert_eq!(again.queue_wait_ms, 70, "counted from the hand-back");
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}
