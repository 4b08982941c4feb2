//! Redis delivery (`queue_url` set): runs go through apalis-redis, the runs table stays
//! the record. Uses the Redis at `AGENTQ_TEST_QUEUE_URL`, else `REDIS_URL`, else
//! redis://127.0.0.1:6379, each test in a key namespace of its own; the test that loses
//! Redis's data runs its own throwaway server.

use std::time::{Duration, Instant};

use agentq::jobs::RedisOptions;
use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::RedisStorage;
use serde_json::{Value, json};

use crate::helpers::{TestApp, event_types};
use crate::support::eventually::eventually;
use crate::throwaway::ThrowawayRedis;

fn shared_redis() -> String {
    std::env::var("AGENTQ_TEST_QUEUE_URL")
        .or_else(|_| std::env::var("REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn redis_options(url: &str, window: usize) -> RedisOptions {
    RedisOptions {
        tls: Default::default(),
        url: url.to_owned(),
        dispatch_window: window,
        poll_interval: Duration::from_millis(25),
        namespace: format!("agentq-test-{}", uuid::Uuid::now_v7().simple()),
    }
}

async fn spawn_with_redis(options: RedisOptions) -> TestApp {
    TestApp::spawn_with(move |c| c.worker.redis = Some(options)).await
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("the test Redis at {url} does not answer: {e}"))
}

/// Stops the app, then deletes its namespace's keys from the shared Redis (apalis-redis
/// leaves worker entries behind), so the shared server does not fill up with test keys.
async fn forget(app: TestApp, url: &str, namespace: &str) {
    app.shutdown().await;
    let mut conn = redis_conn(url).await;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{namespace}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    // apalis-redis lists every queue in one global set
    let queues: Vec<String> = redis::cmd("ZRANGE")
        .arg("core:apalis:queues:list")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let ours: Vec<&String> = queues
        .iter()
        .filter(|q| q.starts_with(&format!("{namespace}:")))
        .collect();
    if !ours.is_empty() {
        let _: () = redis::cmd("ZREM")
            .arg("core:apalis:queues:list")
            .arg(ours)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Creates `n` runs concurrently (10 requests in flight) and returns their ids.
async fn create_many(app: &TestApp, n: usize, body: Value) -> Vec<String> {
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(|_| app.create(body.clone()))
        .buffer_unordered(10)
        .collect()
        .await
}

/// Waits until every run reached `succeeded` (a failure or a stuck run fails the test).
async fn wait_all_succeeded(app: &TestApp, ids: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    for id in ids {
        let left = deadline.saturating_duration_since(Instant::now());
        app.wait_for(id, left.max(Duration::from_millis(1)), |r| {
            assert_ne!(r["status"], "failed", "{r:#}");
            r["status"] == "succeeded"
        })
        .await;
    }
}

/// The first of `ids` not `succeeded` within `within` (a failed one fails the test).
async fn first_unfinished(app: &TestApp, ids: &[String], within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    for id in ids {
        loop {
            let run = app.get_run(id).await;
            assert_ne!(run["status"], "failed", "{run:#}");
            if run["status"] == "succeeded" {
                break;
            }
            if Instant::now() >= deadline {
                return Some(id.clone());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    None
}

/// What the runs table and Redis say of a run's delivery, for a failure message: its row's
/// dispatch mark, its message's meta, where the message sits, and the queue's workers.
async fn dispatch_state(app: &TestApp, redis_url: &str, namespace: &str, id: &str) -> String {
    let query = "SELECT agent, status, dispatch_seq, dispatched_at FROM runs WHERE id = $1";
    let row: (String, String, i64, Option<i64>) = if app.db_url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&app.db_url).await.unwrap();
        sqlx::query_as(query)
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    } else {
        let pool = sqlx::SqlitePool::connect(&app.db_url).await.unwrap();
        sqlx::query_as(query)
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let queue = format!("{namespace}:{}", row.0);
    let mut conn = redis_conn(redis_url).await;
    let meta: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{queue}:meta:{id}:{}", row.2))
        .query_async(&mut conn)
        .await
        .unwrap();
    let message = format!("{id}:{}", row.2);
    let active: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{queue}:active"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let workers: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(format!("{queue}:workers"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap();
    let inflight: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{queue}:inflight:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut holders = Vec::new();
    for set in &inflight {
        let member: bool = redis::cmd("SISMEMBER")
            .arg(set)
            .arg(&message)
            .query_async(&mut conn)
            .await
            .unwrap();
        if member {
            holders.push(set.clone());
        }
    }
    let registry = app.get_json("/v1/workers").await;
    format!(
        "row (agent, status, seq, dispatched_at): {row:?}\nmeta: {meta:?}\n\
         in active list: {} of {}\ninflight sets: {inflight:?}, holding it: {holders:?}\n\
         queue workers: {workers:?}\nnow: {}\nregistry: {registry:#}",
        active.contains(&message),
        active.len(),
        chrono::Utc::now().timestamp_millis(),
    )
}

async fn count_events(app: &TestApp, id: &str, kind: &str) -> usize {
    event_types(&app.events(id).await)
        .iter()
        .filter(|t| *t == kind)
        .count()
}

async fn worker_entry(app: &TestApp) -> Value {
    app.get_json("/v1/workers").await["workers"][0].clone()
}

#[tokio::test]
async fn a_run_submitted_with_a_queue_url_is_delivered_through_redis_and_succeeds() {
    let url = shared_redis();
    let options = redis_options(&url, 1000);
    let queue = format!("{}:echo", options.namespace);
    let app = spawn_with_redis(options.clone()).await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": "through redis"}}))
        .await;
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(20))
        .await;
    assert_eq!(run["result"], json!({"value": "through redis"}));
    assert_eq!(count_events(&app, &id, "started").await, 1);
    // it went through Redis: this process's worker registered on the agent's queue
    let mut conn = redis_conn(&url).await;
    let workers: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{queue}:workers"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!workers.is_empty(), "no worker registered on {queue}");
    forget(app, &url, &options.namespace).await;
}

/// An idle worker takes a run when its message is pushed (the feeder publishes a wake-up
/// the worker's subscription hears), not at its next poll: here the poll is a minute away
/// and apalis-redis's heartbeat (which also fetches) 2 s, so pickups in the tens of
/// milliseconds can only come from the wake-up. Checked on the median of five idle runs.
#[tokio::test]
async fn an_idle_worker_is_woken_by_a_push_not_by_its_poll() {
    let url = shared_redis();
    let mut options = redis_options(&url, 1000);
    options.poll_interval = Duration::from_secs(60);
    let app = spawn_with_redis(options.clone()).await;
    let mut pickups = Vec::new();
    for i in 0..5 {
        // idle: nothing in flight, the last fetch came back empty
        tokio::time::sleep(Duration::from_millis(300)).await;
        let id = app
            .create(json!({"agent": "echo", "input": {"value": i}}))
            .await;
        app.wait_for_status(&id, "succeeded", Duration::from_secs(90))
            .await;
        let events = app.events(&id).await;
        let at = |kind: &str| {
            let e = events.iter().find(|e| e["type"] == kind).unwrap();
            chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap()
        };
        pickups.push((at("started") - at("created")).num_milliseconds());
    }
    pickups.sort();
    assert!(
        pickups[2] < 500,
        "the median pickup of an idle run took {} ms (all: {pickups:?}): not woken by the push",
        pickups[2]
    );
    forget(app, &url, &options.namespace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_runs_through_redis_each_start_once_and_succeed() {
    // a window smaller than the backlog: the feeder must top it up as runs finish
    let options = redis_options(&shared_redis(), 50);
    let app = spawn_with_redis(options.clone()).await;
    let started = Instant::now();
    let ids = create_many(&app, 300, json!({"agent": "echo", "input": {"value": 1}})).await;
    wait_all_succeeded(&app, &ids, Duration::from_secs(60)).await;
    let took = started.elapsed();
    eprintln!(
        "300 runs through Redis (window 50) in {took:?}: {:.0} runs/s",
        300.0 / took.as_secs_f64()
    );
    for id in &ids {
        assert_eq!(count_events(&app, id, "started").await, 1, "run {id}");
        assert_eq!(count_events(&app, id, "succeeded").await, 1, "run {id}");
    }
    forget(app, &options.url, &options.namespace).await;
}

#[tokio::test]
async fn retries_through_redis_are_scheduled_by_agentq() {
    let options = redis_options(&shared_redis(), 1000);
    let app = spawn_with_redis(options.clone()).await;
    // fails (retryably) twice, succeeds on the third attempt
    let id = app
        .create(json!({"agent": "stepper", "input": {"steps": 3}, "max_attempts": 5}))
        .await;
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(run["attempt"], 3, "{run:#}");
    assert_eq!(run["result"]["resumed_from"], 2);
    assert_eq!(count_events(&app, &id, "started").await, 3);
    assert_eq!(count_events(&app, &id, "retry_scheduled").await, 2);
    forget(app, &options.url, &options.namespace).await;
}

#[tokio::test]
async fn a_message_that_is_not_a_dispatch_is_dropped_and_the_worker_keeps_delivering() {
    let url = shared_redis();
    let options = redis_options(&url, 1000);
    let config = apalis_redis::Config::default().queue(format!("{}:echo", options.namespace));
    let mut queue = RedisStorage::<Value>::new(apalis_redis::connect(url.as_str()).await.unwrap())
        .with_config(config);
    let poison = TaskBuilder::new(json!({"not": "a dispatch"}))
        .task_id(TaskId::from_string("poison"))
        .build();
    queue.push_task(poison).await.unwrap();
    let meta = format!("{}:echo:meta:poison", options.namespace);
    let namespace = options.namespace.clone();
    let mut conn = redis_conn(&url).await;
    let pushed: Option<String> = redis::cmd("HGET")
        .arg(&meta)
        .arg("status")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pushed.as_deref(), Some("Pending"), "{meta}");
    let app = spawn_with_redis(options).await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    app.wait_for_status(&id, "succeeded", Duration::from_secs(20))
        .await;
    // the poison message was handled: aborted (`Killed`), or already deleted by the
    // janitor, which only deletes finished messages
    eventually(
        Duration::from_secs(20),
        "the poison message is handled",
        || {
            let (meta, mut conn) = (meta.clone(), conn.clone());
            async move {
                let status: Option<String> = redis::cmd("HGET")
                    .arg(&meta)
                    .arg("status")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                match status.as_deref() {
                    Some("Killed") | None => Ok(()),
                    _ => Err(status),
                }
            }
        },
    )
    .await;
    // a poison message would have killed the apalis worker (a restart shows here)
    assert_eq!(worker_entry(&app).await["restarts"], 0);
    forget(app, &url, &namespace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_under_load_still_ends_every_run() {
    let redis = tokio::task::spawn_blocking(ThrowawayRedis::start)
        .await
        .map(std::sync::Arc::new)
        .unwrap();
    let options = redis_options(&redis.url(), 200);
    let namespace = options.namespace.clone();
    let app = spawn_with_redis(options).await;
    let ids = create_many(&app, 400, json!({"agent": "patient", "input": {"ms": 20}})).await;
    // kill it while runs are in Redis, in flight and still in the table
    eventually(
        Duration::from_secs(30),
        "20 runs succeed before the kill",
        || async {
            let done = app.get_json("/v1/runs?status=succeeded&limit=100").await["runs"]
                .as_array()
                .map_or(0, Vec::len);
            if done >= 20 { Ok(()) } else { Err(done) }
        },
    )
    .await;
    let blocking = |f: fn(&ThrowawayRedis)| {
        let redis = redis.clone();
        tokio::task::spawn_blocking(move || f(&redis))
    };
    blocking(ThrowawayRedis::kill).await.unwrap();
    let waiting = app.get_json("/v1/runs?status=queued&limit=10").await["runs"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(waiting > 0, "every run was taken before Redis died");
    tokio::time::sleep(Duration::from_secs(2)).await;
    blocking(ThrowawayRedis::start_again).await.unwrap();
    if let Some(stuck) = first_unfinished(&app, &ids, Duration::from_secs(90)).await {
        let state = dispatch_state(&app, &redis.url(), &namespace, &stuck).await;
        panic!("run {stuck} did not succeed after Redis came back:\n{state}");
    }
    for id in &ids {
        assert_eq!(count_events(&app, id, "succeeded").await, 1, "run {id}");
    }
    // the loss was noticed: the apalis worker died and was started again
    let worker = worker_entry(&app).await;
    assert!(worker["restarts"].as_u64().unwrap() >= 1, "{worker:#}");
}

#[tokio::test]
async fn an_unreachable_redis_makes_the_worker_unready_and_says_why_without_its_password() {
    // a port nothing listens on
    let port = crate::process::free_port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let app = spawn_with_redis(redis_options(&url, 10)).await;
    // the reason reaches the registry with the next heartbeat
    let error = eventually(Duration::from_secs(30), "the reason is given", || async {
        let worker = worker_entry(&app).await;
        let error = worker["last_error"].as_str().unwrap_or_default().to_owned();
        assert!(!error.contains("hunter2"), "the password leaked: {error}");
        if error.contains("cannot connect to Redis") {
            Ok(error)
        } else {
            Err(worker)
        }
    })
    .await;
    assert!(error.contains("redis://***@127.0.0.1"), "{error}");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    // runs are still accepted: they wait in the table for Redis
    app.create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_the_runs_table_and_redis_start_each_run_once() {
    let options = redis_options(&shared_redis(), 40);
    let first = spawn_with_redis(options.clone()).await;
    let second = TestApp::spawn_on(&first.db_url, {
        let options = options.clone();
        |c| c.worker.redis = Some(options)
    })
    .await;
    // long enough (200 × 100 ms over 8 slots: 2.5 s) that one process cannot drain the
    // queue before the other's next poll, even on a loaded machine (with 50 ms, one full
    // run of scripts/test.sh saw the first process start none)
    let ids = create_many(
        &first,
        200,
        json!({"agent": "patient", "input": {"ms": 100}}),
    )
    .await;
    wait_all_succeeded(&first, &ids, Duration::from_secs(60)).await;
    for id in &ids {
        assert_eq!(count_events(&first, id, "started").await, 1, "run {id}");
    }
    // both processes took part
    assert!(
        first
            .probe
            .started
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
    assert!(
        second
            .probe
            .started
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
    second.shutdown().await;
    forget(first, &options.url, &options.namespace).await;
}
