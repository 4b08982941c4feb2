//! Leases that cost a write per worker: a run its worker has renewed once is covered by the
//! worker's lease, and lives or is taken back with it; cancels still reach the attempt.

use std::time::Duration;

use agentq::domain::RunStatus;
use agentq::store::{ClaimedRun, Outcome, Store};
use serde_json::json;

use crate::support::store::{echo_only, new_run, store_on_manual_clock};

const LEASE: Duration = Duration::from_millis(200);

async fn claim(store: &Store, worker: &str, limit: usize) -> Vec<ClaimedRun> {
    let claimed = store
        .claim(worker.into(), echo_only(), limit, LEASE, None, None)
        .await
        .unwrap();
    assert_eq!(claimed.len(), limit, "that many runs were due");
    claimed
}

async fn renew(store: &Store, runs: &[&ClaimedRun]) -> Vec<ClaimedRun> {
    let held = store
        .renew_leases(runs.iter().map(|r| r.fence()).collect(), LEASE)
        .await
        .unwrap();
    runs.iter()
        .filter(|r| held.contains(&r.fence()))
        .map(|r| (*r).clone())
        .collect()
}

#[tokio::test]
async fn a_covered_run_lives_by_its_workers_lease_and_is_taken_back_with_it() {
    let (store, clock, _dir) = store_on_manual_clock(false).await;
    store.insert_run(new_run()).await.unwrap();
    let run = claim(&store, "a", 1).await.remove(0);
    // renewed for ten leases: the first renewal covers the run, the others write only the
    // worker's lease, and the run, reading its worker's lease, is never taken back
    for _ in 0..20 {
        clock.advance(LEASE / 2);
        assert_eq!(renew(&store, &[&run]).await.len(), 1);
        assert_eq!(store.sweep_expired().await.unwrap().retried, 0);
    }
    let read = store.get_run(run.id).await.unwrap();
    assert_eq!(read.status, RunStatus::Running);
    let until = read
        .lease_until
        .expect("a running run shows its worker's lease");
    assert_eq!(
        until,
        store.clock().now() + chrono::Duration::from_std(LEASE).unwrap()
    );
    // the worker goes silent: one lease later its lease is revoked and the run taken back
    clock.advance(LEASE + Duration::from_millis(1));
    assert_eq!(store.sweep_expired().await.unwrap().retried, 1);
    let read = store.get_run(run.id).await.unwrap();
    assert_eq!(read.status, RunStatus::Retrying);
    assert_eq!(
        read.error.unwrap().message,
        "worker a stopped renewing its lease"
    );
    // back, the worker is told at once that it lost the run, and its write is refused
    assert!(renew(&store, &[&run]).await.is_empty());
    assert!(
        !store
            .finish(run.fence(), Outcome::Succeeded(json!(1)))
            .await
            .unwrap()
    );
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_worker_back_before_its_lease_was_revoked_keeps_every_run() {
    let (store, clock, _dir) = store_on_manual_clock(false).await;
    for _ in 0..3 {
        store.insert_run(new_run()).await.unwrap();
    }
    let runs = claim(&store, "a", 3).await;
    let all: Vec<&ClaimedRun> = runs.iter().collect();
    assert_eq!(renew(&store, &all).await.len(), 3);
    // its lease lapsed but no sweep came: the next renewal checks each run and holds them
    clock.advance(LEASE * 2);
    assert_eq!(renew(&store, &all).await.len(), 3);
    assert_eq!(store.sweep_expired().await.unwrap().retried, 0);
    for run in &runs {
        assert!(
            store
                .finish(run.fence(), Outcome::Succeeded(json!(1)))
                .await
                .unwrap()
        );
    }
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_claimed_run_its_worker_never_renews_runs_out_on_its_own_lease() {
    // a claim whose answer never reached the worker: the worker renews the run it knows of
    // and its lease stays live, but the other run is not covered by it
    let (store, clock, _dir) = store_on_manual_clock(false).await;
    store.insert_run(new_run()).await.unwrap();
    store.insert_run(new_run()).await.unwrap();
    let runs = claim(&store, "a", 2).await;
    for _ in 0..3 {
        clock.advance(LEASE / 2);
        assert_eq!(renew(&store, &[&runs[0]]).await.len(), 1);
    }
    assert_eq!(store.sweep_expired().await.unwrap().retried, 1);
    assert_eq!(
        store.get_run(runs[0].id).await.unwrap().status,
        RunStatus::Running
    );
    assert_eq!(
        store.get_run(runs[1].id).await.unwrap().status,
        RunStatus::Retrying
    );
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_cancel_reaches_a_covered_attempt_at_its_workers_next_renewal() {
    let (store, clock, _dir) = store_on_manual_clock(false).await;
    store.insert_run(new_run()).await.unwrap();
    store.insert_run(new_run()).await.unwrap();
    let runs = claim(&store, "a", 2).await;
    let all: Vec<&ClaimedRun> = runs.iter().collect();
    assert_eq!(renew(&store, &all).await.len(), 2);
    clock.advance(LEASE / 2);
    assert_eq!(renew(&store, &all).await.len(), 2);
    store.cancel_run(runs[1].id, None).await.unwrap();
    let held = renew(&store, &all).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id, runs[0].id);
    // told once: the notice is gone, the other run still held
    assert_eq!(renew(&store, &[&runs[0]]).await.len(), 1);
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_run_cancelled_before_it_was_covered_is_found_lost_by_the_covering() {
    let (store, _clock, _dir) = store_on_manual_clock(false).await;
    store.insert_run(new_run()).await.unwrap();
    let run = claim(&store, "a", 1).await.remove(0);
    store.cancel_run(run.id, None).await.unwrap();
    assert!(renew(&store, &[&run]).await.is_empty());
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_stopping_workers_lease_goes_with_its_runs() {
    let (store, clock, _dir) = store_on_manual_clock(false).await;
    store.insert_run(new_run()).await.unwrap();
    let run = claim(&store, "a", 1).await.remove(0);
    assert_eq!(renew(&store, &[&run]).await.len(), 1);
    assert_eq!(store.release_worker("a".into()).await.unwrap(), 1);
    // claimed again by the same worker id: the old attempt is lost, the new one covered anew
    let again = claim(&store, "a", 1).await.remove(0);
    assert_eq!(renew(&store, &[&run, &again]).await.len(), 1);
    clock.advance(LEASE * 3);
    assert_eq!(store.sweep_expired().await.unwrap().retried, 1);
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}
