//! Waiting claims: an idle worker's claim waits in the store's writer for runs.

use std::time::{Duration, Instant};

use agentq::domain::{NewRun, RunId, RunStatus};
use agentq::store::{Outcome, Store};

use crate::support::store::{echo_only, insert, new_run, store_on_manual_clock, temp_store};

fn waiting_claim(store: &Store, wait: Duration) -> tokio::task::JoinHandle<(Vec<RunId>, Duration)> {
    let store = store.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let runs = store
            .claim(
                "w".into(),
                echo_only(),
                4,
                Duration::from_secs(30),
                Some(wait),
                None,
            )
            .await
            .unwrap();
        (runs.into_iter().map(|r| r.id).collect(), started.elapsed())
    })
}

#[tokio::test]
async fn a_waiting_claim_is_answered_by_the_insert_that_makes_a_run_claimable() {
    let (store, _dir) = temp_store().await;
    let claim = waiting_claim(&store, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let run = insert(&store, new_run()).await;
    let (claimed, took) = claim.await.unwrap();
    assert_eq!(claimed, [run.id]);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_waiting_claim_comes_back_empty_at_its_deadline() {
    let (store, _dir) = temp_store().await;
    let (claimed, took) = waiting_claim(&store, Duration::from_millis(150))
        .await
        .unwrap();
    assert!(claimed.is_empty());
    assert!(
        took >= Duration::from_millis(140) && took < Duration::from_secs(2),
        "took {took:?}"
    );
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_waiting_claim_wakes_when_a_delayed_run_comes_due() {
    let (store, _dir) = temp_store().await;
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(300);
    let run = insert(
        &store,
        NewRun {
            run_at: Some(due),
            ..new_run()
        },
    )
    .await;
    let (claimed, _) = waiting_claim(&store, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(claimed, [run.id]);
    assert!(chrono::Utc::now() >= due);
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_claim_whose_caller_stopped_waiting_takes_nothing() {
    let (store, _dir) = temp_store().await;
    let claim = waiting_claim(&store, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(50)).await;
    claim.abort();
    let _ = claim.await;
    let run = insert(&store, new_run()).await;
    let stored = store.get_run(run.id).await.unwrap();
    assert_eq!((stored.status, stored.attempt), (RunStatus::Queued, 0));
    let claimed = store
        .claim(
            "other".into(),
            echo_only(),
            1,
            Duration::from_secs(30),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempt, 1);
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

/// The store's clock is far ahead of real time; a success that unblocks a dependent makes
/// it ready *now* on that clock, and the writer, which waits by real time, must still wake
/// the waiting claim at once (it used to compare the store's due time with the system's
/// clock, and slept until the claim's deadline).
#[tokio::test]
async fn a_run_made_ready_on_a_clock_ahead_of_real_time_wakes_a_waiting_claim_at_once() {
    let (store, clock, _db) = store_on_manual_clock(false).await;
    clock.advance(Duration::from_secs(3600));
    let parent = insert(&store, new_run()).await;
    let child = insert(
        &store,
        NewRun {
            depends_on: vec![parent.id],
            ..new_run()
        },
    )
    .await;
    assert_eq!(child.status, RunStatus::Blocked);
    let held = store
        .claim(
            "a".into(),
            echo_only(),
            1,
            Duration::from_secs(30),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    let claim = waiting_claim(&store, Duration::from_secs(8));
    tokio::time::sleep(Duration::from_millis(100)).await; // parked: nothing is ready
    let done = Outcome::Succeeded(serde_json::json!({}));
    assert!(store.finish(held[0].fence(), done).await.unwrap());
    let (claimed, took) = claim.await.unwrap();
    assert_eq!(claimed, [child.id]);
    assert!(took < Duration::from_secs(4), "took {took:?}");
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}
