//! The runs table's side of Redis delivery: the feeder's window marks and the fenced
//! claim of a run from its message (run id, dispatch seq), on the store directly.

use std::time::Duration;

use agentq::domain::{NewRun, RunStatus};

use crate::support::store::{
    insert, new_run, store_on_manual_clock, temp_store_for_redis as temp_store,
};

const LEASE: Duration = Duration::from_secs(30);

fn with_priority(priority: i32) -> NewRun {
    NewRun {
        priority,
        ..new_run()
    }
}

#[tokio::test]
async fn dispatch_marks_ready_runs_in_priority_order_up_to_the_window() {
    let (store, _db) = temp_store().await;
    let low = insert(&store, with_priority(0)).await;
    let high = insert(&store, with_priority(5)).await;
    let mid = insert(&store, with_priority(1)).await;
    let sent = store.dispatch("echo".into(), 2, None).await.unwrap();
    let ids: Vec<_> = sent.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [high.id, mid.id]);
    assert!(sent.iter().all(|(_, seq)| *seq == 1), "{sent:?}");
    // the window is full: nothing more until a message is used or lost
    assert!(
        store
            .dispatch("echo".into(), 2, None)
            .await
            .unwrap()
            .is_empty()
    );
    let more = store.dispatch("echo".into(), 3, None).await.unwrap();
    assert_eq!(more, [(low.id, 1)]);
    // other agents have their own windows
    assert!(
        store
            .dispatch("http".into(), 3, None)
            .await
            .unwrap()
            .is_empty()
    );
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_message_claims_its_run_once_and_a_wrong_seq_claims_nothing() {
    let (store, _db) = temp_store().await;
    let run = insert(&store, new_run()).await;
    let sent = store.dispatch("echo".into(), 10, None).await.unwrap();
    assert_eq!(sent, [(run.id, 1)]);
    assert!(
        store
            .claim_dispatched("w".into(), vec![(run.id, 2)], LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let claimed = store
        .claim_dispatched("w".into(), sent.clone(), LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].id, claimed[0].attempt), (run.id, 1));
    // a redelivery of the same message is refused
    assert!(
        store
            .claim_dispatched("w2".into(), sent, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let stored = store.get_run(run.id).await.unwrap();
    assert_eq!(stored.status, RunStatus::Running);
    assert_eq!(stored.worker_id.as_deref(), Some("w"));
    // a claimed run no longer counts against the window
    let next = insert(&store, new_run()).await;
    assert_eq!(
        store.dispatch("echo".into(), 1, None).await.unwrap(),
        [(next.id, 1)]
    );
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_lost_message_is_superseded_by_the_next_dispatch() {
    let (store, _db) = temp_store().await;
    let run = insert(&store, new_run()).await;
    let first = store.dispatch("echo".into(), 10, None).await.unwrap();
    assert_eq!(store.undispatch(first.clone()).await.unwrap(), 1);
    // undispatching a message that is no longer current changes nothing
    assert_eq!(store.undispatch(first.clone()).await.unwrap(), 0);
    let second = store.dispatch("echo".into(), 10, None).await.unwrap();
    assert_eq!(second, [(run.id, 2)]);
    assert!(
        store
            .claim_dispatched("w".into(), first, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "the old message must not claim the run"
    );
    let claimed = store
        .claim_dispatched("w".into(), second, LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn a_cancelled_run_is_not_claimed_by_its_message_and_frees_its_window_slot() {
    let (store, _db) = temp_store().await;
    let run = insert(&store, new_run()).await;
    let waiting = insert(&store, new_run()).await;
    let sent = store.dispatch("echo".into(), 1, None).await.unwrap();
    assert_eq!(sent, [(run.id, 1)]);
    store.cancel_run(run.id, None).await.unwrap();
    assert!(
        store
            .claim_dispatched("w".into(), sent, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.dispatch("echo".into(), 1, None).await.unwrap(),
        [(waiting.id, 1)]
    );
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

#[tokio::test]
async fn dispatched_before_lists_only_messages_older_than_asked() {
    let (store, _clock, _db) = store_on_manual_clock(true).await;
    let run = insert(&store, new_run()).await;
    store.dispatch("echo".into(), 10, None).await.unwrap();
    assert!(
        store
            .dispatched_before(Duration::from_secs(60), 100, &echo())
            .await
            .unwrap()
            .is_empty()
    );
    // times are whole milliseconds: the mark becomes strictly older than now
    store.clock().advance(Duration::from_millis(5));
    let stale = store
        .dispatched_before(Duration::ZERO, 100, &echo())
        .await
        .unwrap();
    assert_eq!(stale, [("echo".to_owned(), run.id, 1)]);
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}

fn echo() -> Vec<String> {
    vec!["echo".to_owned()]
}

#[tokio::test]
async fn dispatched_before_lists_only_the_asked_agents_so_others_cannot_crowd_them_out() {
    let (store, _clock, _db) = store_on_manual_clock(true).await;
    for _ in 0..5 {
        let mut run = new_run();
        run.agent = "alpha".into();
        insert(&store, run).await;
    }
    let mine = insert(&store, new_run()).await;
    store.dispatch("alpha".into(), 10, None).await.unwrap();
    store.dispatch("echo".into(), 10, None).await.unwrap();
    store.clock().advance(Duration::from_millis(5));
    // a limit smaller than the other agent's backlog still finds this agent's message
    let stale = store
        .dispatched_before(Duration::ZERO, 2, &echo())
        .await
        .unwrap();
    assert_eq!(stale, [("echo".to_owned(), mine.id, 1)]);
    crate::support::lifecycle::assert_every_lifecycle(&store).await;
}
