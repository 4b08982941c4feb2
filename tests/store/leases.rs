//! Leases that cost a write per worker: a run its worker has renewed once is covered by the
//! worker's lease, and lives or is taken back with it; cancels still reach the attempt.

use std::time::Duration;

use agentq::domain::RunStatus;
use agentq::store::{ClaimedRun, Clock, Outcome, Store, StoreOptions};
use serde_json::json;

use crate::support::db::TestDb;
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

/// `rounds` times: half a lease passes, the worker renews `runs` (each time all `held`), and
/// a sweep comes. Returns how many runs the sweeps took back.
async fn renew_and_sweep(
    store: &Store,
    clock: &Clock,
    runs: &[&ClaimedRun],
    rounds: usize,
    held: usize,
) -> u64 {
    let mut retried = 0;
    for _ in 0..rounds {
        clock.advance(LEASE / 2);
        assert_eq!(renew(store, runs).await.len(), held);
        retried += store.sweep_expired().await.unwrap().retried;
    }
    retried
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
    // told at every renewal until the worker stops sending the attempt (an answer lost on
    // the way does not lose the cancel)
    for _ in 0..2 {
        let held = renew(&store, &all).await;
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].id, runs[0].id);
    }
    assert_eq!(renew(&store, &[&runs[0]]).await.len(), 1);
    assert_eq!(renew(&store, &all).await.len(), 1);
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

/// Another handle on the same database, as another process would hold.
async fn another_process(db: &TestDb, clock: &Clock) -> Store {
    let options = StoreOptions {
        clock: clock.clone(),
        ..StoreOptions::default()
    };
    Store::connect(&db.url, &options).await.unwrap()
}

#[tokio::test]
async fn a_cancel_reaches_the_worker_whichever_process_it_renews_through() {
    // an external worker's heartbeats reach several API processes
    let (a, clock, db) = store_on_manual_clock(false).await;
    let b = another_process(&db, &clock).await;
    a.insert_run(new_run()).await.unwrap();
    let run = claim(&a, "w", 1).await.remove(0);
    assert_eq!(renew(&a, &[&run]).await.len(), 1);
    assert_eq!(renew(&b, &[&run]).await.len(), 1);
    assert_eq!(renew(&a, &[&run]).await.len(), 1);
    a.cancel_run(run.id, None).await.unwrap();
    // `a` tells the worker, but the answer is lost: `b` tells it again
    assert!(renew(&a, &[&run]).await.is_empty());
    assert!(renew(&b, &[&run]).await.is_empty());
    crate::support::lifecycle::assert_every_lifecycle(&a).await;
}

#[tokio::test]
async fn a_process_that_saw_a_lease_before_it_was_taken_again_checks_every_attempt() {
    let (a, clock, db) = store_on_manual_clock(false).await;
    let b = another_process(&db, &clock).await;
    a.insert_run(new_run()).await.unwrap();
    let run = claim(&a, "w", 1).await.remove(0);
    assert_eq!(renew(&a, &[&run]).await.len(), 1);
    assert_eq!(renew(&b, &[&run]).await.len(), 1);
    // the worker goes silent; its lease is revoked and the run taken back
    clock.advance(LEASE * 2);
    assert_eq!(a.sweep_expired().await.unwrap().retried, 1);
    // back, it renews through `a`, which takes the lease again and says the run is lost,
    // but the answer is lost: `b`, which saw the run covered, checks it again
    assert!(renew(&a, &[&run]).await.is_empty());
    assert!(renew(&b, &[&run]).await.is_empty());
    crate::support::lifecycle::assert_every_lifecycle(&a).await;
}

#[tokio::test]
async fn a_covered_run_its_worker_stops_renewing_runs_out_while_the_worker_lives() {
    // an attempt that ended without its outcome written (or a process before this one
    // under the same worker id): the worker renews its other runs, not this one
    let (store, clock, _dir) = store_on_manual_clock(false).await;
    store.insert_run(new_run()).await.unwrap();
    store.insert_run(new_run()).await.unwrap();
    let runs = claim(&store, "w", 2).await;
    let all: Vec<&ClaimedRun> = runs.iter().collect();
    assert_eq!(renew(&store, &all).await.len(), 2);
    // within a lease the renewal gives it a lease of its own back; a lease later it is
    // taken back, while the other run stays
    assert_eq!(renew_and_sweep(&store, &clock, &[&runs[0]], 8, 1).await, 1);
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
async fn a_worker_restarted_under_the_same_id_does_not_keep_its_predecessors_runs() {
    let (before, clock, db) = store_on_manual_clock(false).await;
    before.insert_run(new_run()).await.unwrap();
    let old = claim(&before, "pod-1", 1).await.remove(0);
    assert_eq!(renew(&before, &[&old]).await.len(), 1);
    // the process dies; another starts at once under the same id and claims a new run
    let after = another_process(&db, &clock).await;
    after.insert_run(new_run()).await.unwrap();
    let new = claim(&after, "pod-1", 1).await.remove(0);
    assert_eq!(renew_and_sweep(&after, &clock, &[&new], 8, 1).await, 1);
    assert_eq!(
        after.get_run(old.id).await.unwrap().status,
        RunStatus::Retrying
    );
    assert_eq!(
        after.get_run(new.id).await.unwrap().status,
        RunStatus::Running
    );
    crate::support::lifecycle::assert_every_lifecycle(&after).await;
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

#[tokio::test]
async fn a_late_renewal_listing_fewer_attempts_does_not_leave_a_run_uncovered() {
    // a heartbeat sent before the worker claimed a run arrives after one that covered it
    // (a request sent again, another API process)
    let (a, clock, db) = store_on_manual_clock(false).await;
    let b = another_process(&db, &clock).await;
    a.insert_run(new_run()).await.unwrap();
    a.insert_run(new_run()).await.unwrap();
    let runs = claim(&a, "w", 2).await;
    let all: Vec<&ClaimedRun> = runs.iter().collect();
    assert_eq!(renew(&a, &all).await.len(), 2);
    // the late one reaches a process that has not seen the worker: it checks everything and
    // gives the run it does not list a lease of its own
    assert_eq!(renew(&b, &[&runs[0]]).await.len(), 1);
    // the worker's next renewals, through `a`, which saw that run covered, cover it again
    assert_eq!(renew_and_sweep(&a, &clock, &all, 6, 2).await, 0);
    crate::support::lifecycle::assert_every_lifecycle(&a).await;
}
