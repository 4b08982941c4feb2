//! Redis as teams run it beyond one server: an ACL user with a password, and Sentinel
//! (`redis+sentinel://`), whose failover delivery follows to the new master. Throwaway
//! servers: a master and a replica that let in only the ACL user, and one Sentinel.

use std::time::Duration;

use agentq::jobs::RedisOptions;
use serde_json::{Value, json};

use crate::helpers::{TestApp, worker_problem};
use crate::support::eventually::eventually;
use crate::throwaway::{ThrowawayRedis, redis_command};

const USER: &str = "agentq";
const PASSWORD: &str = "s3cret-pw";

fn options(url: String) -> RedisOptions {
    RedisOptions {
        url,
        tls: Default::default(),
        dispatch_window: 100,
        poll_interval: Duration::from_millis(25),
        namespace: format!("agentq-test-{}", uuid::Uuid::now_v7().simple()),
    }
}

async fn spawn_with(url: String) -> TestApp {
    TestApp::spawn_with(move |c| c.worker.redis = Some(options(url))).await
}

/// Runs an echo run through `app` and checks it succeeded.
async fn echo(app: &TestApp, value: u32) {
    let id = app
        .create(json!({"agent": "echo", "input": {"value": value}}))
        .await;
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(20))
        .await;
    assert_eq!(run["result"]["value"], value);
}

/// A master and its replica that let in the ACL user only (the default user is switched
/// off once they answer).
fn servers() -> (ThrowawayRedis, ThrowawayRedis) {
    let acl: Vec<String> = [
        "--user",
        USER,
        "on",
        &format!(">{PASSWORD}"),
        "~*",
        "&*",
        "+@all",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let master = ThrowawayRedis::start_with(&acl);
    let mut replica_args = acl.clone();
    replica_args.extend(
        [
            "--replicaof",
            "127.0.0.1",
            &master.port().to_string(),
            "--masteruser",
            USER,
            "--masterauth",
            PASSWORD,
        ]
        .map(str::to_owned),
    );
    let replica = ThrowawayRedis::start_with(&replica_args);
    for server in [&master, &replica] {
        assert_eq!(
            redis_command(server.port(), "ACL SETUSER default off").as_deref(),
            Some("+OK")
        );
    }
    (master, replica)
}

/// A connection as the ACL user (or as nobody, to see that refused).
async fn connect(
    port: u16,
    as_user: bool,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let url = if as_user {
        format!("redis://{USER}:{PASSWORD}@127.0.0.1:{port}")
    } else {
        format!("redis://127.0.0.1:{port}")
    };
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    Ok(conn)
}

/// The server's replication role; an error while a failover drops its connections.
async fn role(port: u16) -> Result<String, String> {
    let mut conn = connect(port, true).await.map_err(|e| e.to_string())?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("role:"))
        .unwrap_or_default()
        .trim()
        .to_owned())
}

#[tokio::test]
async fn an_acl_user_with_a_password_is_how_agentq_gets_in_and_without_it_the_worker_says_why() {
    let (master, replica) = tokio::task::spawn_blocking(servers).await.unwrap();
    assert!(
        connect(master.port(), false).await.is_err(),
        "the default user is off"
    );
    let port = master.port();
    let app = spawn_with(format!("redis://{USER}:{PASSWORD}@127.0.0.1:{port}")).await;
    echo(&app, 1).await;
    app.shutdown().await;
    let app = spawn_with(format!("redis://{USER}:wrong@127.0.0.1:{port}")).await;
    let problem = worker_problem(&app).await;
    assert!(
        problem.contains("cannot connect to Redis at redis://***@127.0.0.1")
            && problem.to_lowercase().contains("authentication failed")
            && !problem.contains("wrong"),
        "{problem}"
    );
    app.shutdown().await;
    drop((master, replica));
}

#[tokio::test]
async fn behind_sentinel_runs_are_delivered_through_the_master_and_after_a_failover_through_the_new_one()
 {
    let (master, replica) = tokio::task::spawn_blocking(servers).await.unwrap();
    let master_port = master.port();
    let sentinel = tokio::task::spawn_blocking(move || {
        ThrowawayRedis::start_sentinel(master_port, "mymaster", Some((USER, PASSWORD)))
    })
    .await
    .unwrap();
    let url = format!(
        "redis+sentinel://{USER}:{PASSWORD}@127.0.0.1:{}/mymaster",
        sentinel.port()
    );
    let app = spawn_with(url).await;
    for value in 1..=3 {
        echo(&app, value).await;
    }

    // Sentinel promotes the replica; the old master is made its replica and answers
    // writes with READONLY, which sends delivery back to Sentinel
    let sentinel_client =
        redis::Client::open(format!("redis://127.0.0.1:{}", sentinel.port())).unwrap();
    eventually(Duration::from_secs(20), "Sentinel fails over", || async {
        let mut conn = sentinel_client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        // NOGOODSLAVE until Sentinel has seen the replica
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg("mymaster")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "the replica is master and the old master its replica",
        || async {
            // a server being reconfigured drops its clients: not there yet
            let roles = (role(replica.port()).await, role(master.port()).await);
            match &roles {
                (Ok(new), Ok(old)) if new == "master" && old == "slave" => Ok(()),
                _ => Err(roles),
            }
        },
    )
    .await;
    for value in 4..=6 {
        echo(&app, value).await;
    }
    // the workers a READONLY answer stopped were restarted, and count as healthy again
    eventually(Duration::from_secs(20), "the worker is ready", || async {
        let ready: Value = app.get_json("/readyz").await;
        (ready["checks"]["worker"] == "ok")
            .then_some(())
            .ok_or(ready)
    })
    .await;
    app.shutdown().await;
    drop((sentinel, master, replica));
}
