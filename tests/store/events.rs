//! A run's events: `created` is read off the run's row, not stored as a row of its own.

use agentq::domain::RunId;
use sqlx::Connection;

use crate::support::db::TestDb;
use crate::support::store::{insert, new_run, open_store};

/// Runs one statement with the run id bound, on whichever database `url` names.
async fn execute(url: &str, sqlite: &str, postgres: &str, id: RunId) -> u64 {
    let id = id.to_string();
    if url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        let sql = sqlx::AssertSqlSafe(sqlite.to_owned());
        sqlx::query(sql)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected()
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let sql = sqlx::AssertSqlSafe(postgres.to_owned());
        sqlx::query(sql)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected()
    }
}

#[tokio::test]
async fn created_is_read_off_the_run_and_a_stored_one_is_not_doubled() {
    let db = TestDb::new().await;
    let store = open_store(&db.url).await;
    let run = insert(
        &store,
        agentq::domain::NewRun {
            created_by: Some("key:k1".into()),
            ..new_run()
        },
    )
    .await;
    let events = store.list_events(run.id, 0).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let created = &events[0];
    assert_eq!(
        (created.seq, created.kind.as_str(), created.attempt),
        (1, "created", 0)
    );
    assert_eq!(created.at, run.created_at);
    assert_eq!(created.actor.as_deref(), Some("key:k1"));
    assert_eq!(created.data, serde_json::json!({}));
    assert!(store.list_events(run.id, 1).await.unwrap().is_empty());
    // no row of its own: a touch of the table finds none
    let stored = "UPDATE run_events SET data = data WHERE run_id = ";
    let (sqlite, postgres) = (format!("{stored}?1"), format!("{stored}$1"));
    assert_eq!(execute(&db.url, &sqlite, &postgres, run.id).await, 0);

    // a database written before holds the row: it is read once
    let at = run.created_at.timestamp_millis();
    let insert_row = |param: &str| {
        format!(
            "INSERT INTO run_events (run_id, seq, at, type, attempt, data, actor) \
             VALUES ({param}, 1, {at}, 'created', 0, '{{}}', 'key:k1')"
        )
    };
    let (sqlite, postgres) = (insert_row("?1"), insert_row("$1"));
    assert_eq!(execute(&db.url, &sqlite, &postgres, run.id).await, 1);
    assert_eq!(store.list_events(run.id, 0).await.unwrap(), events);
}

#[tokio::test]
async fn a_read_of_events_stops_at_its_count_or_its_bytes_and_says_more_follow() {
    use agentq::store::EventBounds;
    let db = TestDb::new().await;
    let store = open_store(&db.url).await;
    let run = insert(&store, new_run()).await;
    // three stored events of about 110 bytes of data each, after `created` (2 bytes)
    let at = run.created_at.timestamp_millis();
    let pad = "x".repeat(100);
    for seq in 2..=4 {
        let row = |param: &str| {
            format!(
                "INSERT INTO run_events (run_id, seq, at, type, attempt, data, actor) \
                 VALUES ({param}, {seq}, {at}, 'log', 0, '{{\"pad\":\"{pad}\"}}', NULL)"
            )
        };
        let (sqlite, postgres) = (row("?1"), row("$1"));
        assert_eq!(execute(&db.url, &sqlite, &postgres, run.id).await, 1);
    }
    let seqs =
        |page: &agentq::store::EventPage| page.events.iter().map(|e| e.seq).collect::<Vec<_>>();
    // by count
    let page = store
        .list_events_within(
            run.id,
            0,
            EventBounds {
                limit: 3,
                bytes: usize::MAX,
            },
        )
        .await
        .unwrap();
    assert_eq!((seqs(&page), page.more), (vec![1, 2, 3], true));
    let page = store
        .list_events_within(
            run.id,
            3,
            EventBounds {
                limit: 3,
                bytes: usize::MAX,
            },
        )
        .await
        .unwrap();
    assert_eq!((seqs(&page), page.more), (vec![4], false));
    // by bytes: the event that would pass the bound starts the next read
    let bytes = EventBounds {
        limit: 100,
        bytes: 150,
    };
    let page = store.list_events_within(run.id, 0, bytes).await.unwrap();
    assert_eq!((seqs(&page), page.more), (vec![1, 2], true));
    let page = store.list_events_within(run.id, 2, bytes).await.unwrap();
    assert_eq!((seqs(&page), page.more), (vec![3], true));
    // one event bigger than the bound is still read, alone
    let tiny = EventBounds {
        limit: 100,
        bytes: 10,
    };
    let page = store.list_events_within(run.id, 3, tiny).await.unwrap();
    assert_eq!((seqs(&page), page.more), (vec![4], false));
}
