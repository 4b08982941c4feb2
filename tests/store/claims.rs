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

const LEASE: Duration = Duration::from_secs(30);

fn ids(runs: Vec<agentq::store::ClaimedRun>) -> Vec<RunId> {
    runs.into_iter().map(|r| r.id).collect()
}

/// A worker claims a freed slot's next run just before it writes the slot's outcome: the
/// claim sent at once rides in the outcome's batch (one commit, not two), and sees the
/// room the outcome made.
#[tokio::test]
async fn a_claim_sent_soon_commits_with_the_outcome_sent_after_it() {
    let (store, _db) = temp_store().await;
    let first = insert(&store, new_run()).await;
    let second = insert(&store, new_run()).await;
    let held = store
        .claim("w".into(), echo_only(), 1, LEASE, None, None)
        .await
        .unwrap();
    assert_eq!(ids(held.clone()), [first.id]);
    let before = store.writer_transactions();
    let next = store
        .claim_soon("w".into(), echo_only(), 1, LEASE, None, None)
        .expect("the writer's queue has room");
    let done = Outcome::Succeeded(serde_json::json!({}));
    assert!(store.finish(held[0].fence(), done).await.unwrap());
    assert_eq!(ids(next.await.unwrap()), [second.id]);
    assert_eq!(store.writer_transactions() - before, 1);
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

/// The claims of one worker in one batch are one statement; its runs are dealt out in the
/// order the claims came, the first getting the most urgent, none more than it asked.
#[tokio::test]
async fn claims_of_one_worker_in_one_batch_share_out_the_runs_in_order() {
    let (store, _db) = temp_store().await;
    let mut runs = Vec::new();
    for priority in [1, 3, 2, 0] {
        runs.push(
            insert(
                &store,
                NewRun {
                    priority,
                    ..new_run()
                },
            )
            .await
            .id,
        );
    }
    let claim = |limit| {
        store
            .claim_soon("w".into(), echo_only(), limit, LEASE, None, None)
            .expect("the writer's queue has room")
    };
    let before = store.writer_transactions();
    let (one, two, more) = (claim(1), claim(2), claim(5));
    let other = store
        .claim_soon("x".into(), echo_only(), 1, LEASE, None, None)
        .unwrap();
    let (one, two, more, other) = (one.await, two.await, more.await, other.await);
    assert_eq!(ids(one.unwrap()), [runs[1]]);
    assert_eq!(ids(two.unwrap()), [runs[2], runs[0]]);
    assert_eq!(ids(more.unwrap()), [runs[3]]);
    assert!(
        other.unwrap().is_empty(),
        "another worker's claim comes after"
    );
    assert_eq!(store.writer_transactions() - before, 1, "one batch");
}

/// A claim sent at once that may wait is parked like any other, and the insert that
/// makes a run claimable answers it.
#[tokio::test]
async fn a_waiting_claim_sent_soon_is_answered_by_the_next_insert() {
    let (store, _db) = temp_store().await;
    let waiting = store
        .claim_soon(
            "w".into(),
            echo_only(),
            2,
            LEASE,
            Some(Duration::from_secs(10)),
            None,
        )
        .unwrap();
    let waiting = tokio::spawn(waiting);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "parked: nothing is ready");
    let run = insert(&store, new_run()).await;
    let claimed = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered by the insert")
        .unwrap()
        .unwrap();
    assert_eq!(ids(claimed), [run.id]);
}
