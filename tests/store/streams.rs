//! Output streams: parts appended by an attempt are fenced, bounded per run, and keep
//! their attempt's order among its other reports, however the writer batches them.

use std::time::Duration;

use agentq::domain::StreamPart;
use agentq::store::{ClaimedRun, Store, Streamed};
use serde_json::Value;

use crate::support::store::{echo_only, new_run, store_on_manual_clock};

fn text(t: &str) -> Vec<StreamPart> {
    vec![StreamPart::Text { text: t.into() }]
}

async fn claim_one(store: &Store, worker: &str) -> ClaimedRun {
    let mut claimed = store
        .claim(
            worker.into(),
            echo_only(),
            1,
            Duration::from_secs(15),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "one run was due");
    claimed.remove(0)
}

/// The run's events after `created`/`started`, as (type, text or message).
async fn written(store: &Store, run: &ClaimedRun) -> Vec<(String, String)> {
    let events = store.list_events(run.id, 0).await.unwrap();
    events
        .into_iter()
        .filter(|e| e.kind == "stream" || e.kind == "log")
        .map(|e| {
            let said = match &e.data["text"] {
                Value::String(t) => t.clone(),
                _ => e.data["message"].as_str().unwrap_or_default().to_owned(),
            };
            (e.kind, said)
        })
        .collect()
}

#[tokio::test]
async fn appends_keep_their_order_among_logs_and_a_stale_attempt_writes_nothing() {
    let (store, clock, _db) = store_on_manual_clock(false).await;
    store.insert_run(new_run()).await.unwrap();
    let stale = claim_one(&store, "a").await;
    // sent at once, these land in one batch or a few: adjacent texts may join, but a log
    // between them keeps its place
    let fence = stale.fence();
    let (first, second, log, third) = tokio::join!(
        store.stream(fence.clone(), text("He")),
        store.stream(fence.clone(), text("llo")),
        store.log(fence.clone(), "info", "between".into()),
        store.stream(fence.clone(), text(" world")),
    );
    assert_eq!(
        [first.unwrap(), second.unwrap(), third.unwrap()],
        [Streamed::Written; 3]
    );
    assert!(log.unwrap());
    let mut seen = written(&store, &stale).await;
    // join what the writer may have split
    seen.dedup_by(|b, a| {
        let same = a.0 == "stream" && b.0 == "stream";
        if same {
            a.1.push_str(&b.1);
        }
        same
    });
    assert_eq!(
        seen,
        [
            ("stream".to_owned(), "Hello".to_owned()),
            ("log".to_owned(), "between".to_owned()),
            ("stream".to_owned(), " world".to_owned())
        ]
    );

    // the lease passes, another worker takes the run: the first one's parts are refused
    clock.advance(Duration::from_secs(16));
    assert_eq!(store.sweep_expired().await.unwrap().retried, 1);
    let current = claim_one(&store, "b").await;
    let (late, now) = tokio::join!(
        store.stream(stale.fence(), text("late")),
        store.stream(current.fence(), text("again")),
    );
    assert_eq!(late.unwrap(), Streamed::Lost);
    assert_eq!(now.unwrap(), Streamed::Written);
    let texts: Vec<String> = written(&store, &current)
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(!texts.contains(&"late".to_owned()), "{texts:?}");
    assert_eq!(texts.last().unwrap(), "again");
}

#[tokio::test]
async fn a_run_holds_at_most_its_limit_and_a_refused_append_writes_nothing() {
    let (store, _clock, _db) = store_on_manual_clock(false).await;
    // DEFAULT_MAX_STREAM_BYTES: fill it to one byte short, then one byte fits and one not
    let limit = agentq::domain::DEFAULT_MAX_STREAM_BYTES as usize;
    store.insert_run(new_run()).await.unwrap();
    let run = claim_one(&store, "a").await;
    let fill = "x".repeat(limit - 1);
    assert_eq!(
        store.stream(run.fence(), text(&fill)).await.unwrap(),
        Streamed::Written
    );
    let over = store.stream(run.fence(), text("yz")).await.unwrap();
    assert_eq!(
        over,
        Streamed::Full {
            limit: limit as u64
        }
    );
    assert_eq!(
        store.stream(run.fence(), text("y")).await.unwrap(),
        Streamed::Written
    );
    let total: usize = written(&store, &run)
        .await
        .iter()
        .map(|(_, t)| t.len())
        .sum();
    assert_eq!(total, limit);
}

#[tokio::test]
async fn an_append_sent_after_its_attempts_outcome_is_refused_even_in_the_same_batch() {
    let (store, _clock, _db) = store_on_manual_clock(false).await;
    store.insert_run(new_run()).await.unwrap();
    let run = claim_one(&store, "a").await;
    // sent in this order, at once: often one writer batch, which applies reports before
    // outcomes; the append must not land after the run succeeded
    let (finished, late) = tokio::join!(
        store.finish(
            run.fence(),
            agentq::store::Outcome::Succeeded(serde_json::json!(1))
        ),
        store.stream(run.fence(), text("after the end")),
    );
    assert!(finished.unwrap());
    assert_eq!(late.unwrap(), Streamed::Lost);
    assert!(written(&store, &run).await.is_empty());
}
