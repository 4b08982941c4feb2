//! The PostgreSQL dialect: the same engine as SQLite (one writer connection per process
//! that group-commits, a read pool), with statements written for many writing processes
//! (`sql`), and a listener that wakes this process's idle workers when another process
//! makes runs claimable (`LISTEN agentq_ready`).

mod sql;

#[path = "../engine/mod.rs"]
#[allow(
    clippy::duplicate_mod,
    reason = "the engine is compiled once per dialect, on purpose (see engine/mod.rs)"
)]
pub(super) mod engine;

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgSslMode};

use super::{StoreError, StoreOptions};

type Db = sqlx::Postgres;
type Conn = sqlx::PgConnection;
type ConnectOpts = PgConnectOptions;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

const READY_CHANNEL: &str = "agentq_ready";

/// The query parameters sqlx reads from a PostgreSQL URL. Any other is refused at start:
/// sqlx would log it, value and all (a libpq `sslpassword=…`, say), and ignore it.
const KNOWN_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Checks a PostgreSQL URL without connecting: that it parses (`sslmode`'s value among
/// the rest), that it names no parameter sqlx ignores, that its TLS settings mean what
/// they say, and that the files its `sslrootcert`, `sslcert` and `sslkey` (or
/// `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`) name hold PEM, so a wrong one is named at
/// start rather than at the first connection. The error names `--database-url` and the
/// parameter, never the password.
pub fn check_url(url: &str) -> Result<(), String> {
    let options = PgConnectOptions::from_str(url).map_err(|e| format!("--database-url: {e}"))?;
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or_default();
    let mut files: Vec<(String, String)> = [
        ("PGSSLROOTCERT", "sslrootcert"),
        ("PGSSLCERT", "sslcert"),
        ("PGSSLKEY", "sslkey"),
    ]
    .iter()
    .filter_map(|(var, key)| std::env::var(var).ok().map(|v| (key.to_string(), v)))
    .collect();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let known = KNOWN_PARAMETERS.contains(&key.as_ref()) || key.starts_with("options[");
        if !known {
            return Err(format!("--database-url: unknown parameter `{key}`"));
        }
        let file = match key.as_ref() {
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => "sslrootcert",
            "sslcert" | "ssl-cert" => "sslcert",
            "sslkey" | "ssl-key" => "sslkey",
            _ => continue,
        };
        files.retain(|(k, _)| k != file);
        files.push((file.to_owned(), value.into_owned()));
    }
    for (key, value) in &files {
        let holds = if key == "sslkey" {
            "PRIVATE KEY-----"
        } else {
            "CERTIFICATE-----"
        };
        // sqlx takes a PEM given inline as well as a file's path
        let pem = if value.contains("-----BEGIN") {
            value.clone().into_bytes()
        } else {
            std::fs::read(value).map_err(|e| format!("--database-url: {key}={value}: {e}"))?
        };
        if !String::from_utf8_lossy(&pem).contains(holds) {
            return Err(format!(
                "--database-url: {key}={value}: holds no PEM `{holds}` block"
            ));
        }
    }
    let root_cert = files.iter().any(|(k, _)| k == "sslrootcert");
    match options.get_ssl_mode() {
        // sqlx adds sslrootcert to the system's roots: without the host name check, any
        // certificate a public authority issued for any name would pass
        PgSslMode::VerifyCa => Err(
            "--database-url: sslmode=verify-ca is not supported: the certificate is checked against sslrootcert and the system's roots, so without the host name check any publicly issued certificate would pass; use verify-full".into(),
        ),
        PgSslMode::Require | PgSslMode::Prefer | PgSslMode::Allow if root_cert => Err(
            "--database-url: sslrootcert is not checked with this sslmode (the certificate is not verified): use sslmode=verify-full".into(),
        ),
        _ => Ok(()),
    }
}

pub(super) async fn connect(
    url: &str,
    options: &StoreOptions,
) -> Result<engine::Engine, StoreError> {
    let connect = PgConnectOptions::from_str(url)?
        .application_name("agentq")
        .disable_statement_logging();
    // The writer's statements are all meant to walk an index: by primary key, or a partial
    // index in claim order. With stale statistics (a table that just filled up, before
    // autovacuum analysed it, which is what a burst of runs into a new deployment looks
    // like) the planner picks sorts, sequential scans and bitmap scans over every ready
    // run instead, per claim and per finish (measured: a 20,000-run backlog drained at
    // 500-700 runs/s; 4,300 with these off). These settings only price those plans out;
    // a statement with no index to use still gets one. Reads use the pool, untouched.
    // names this process in the notifications its writer sends (see `listen`)
    let process = uuid::Uuid::now_v7().simple().to_string();
    let writer = connect.clone().options([
        ("enable_sort", "off"),
        ("enable_seqscan", "off"),
        ("enable_bitmapscan", "off"),
        ("agentq.process", process.as_str()),
    ]);
    let conn = writer.connect().await?;
    let pool = PgPoolOptions::new()
        .max_connections(options.read_connections.max(1))
        .min_connections(1)
        .test_before_acquire(false)
        // a request while the database is down answers 503 soon rather than hang
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(connect.clone())
        .await?;
    let engine = engine::Engine::new(conn, writer, pool.clone(), options.clock.clone());
    // the listener holds its connection for good: a pool of its own, not a read connection
    let listening = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(connect.clone());
    engine.spawn_background(listen(listening, engine.writer.waker(), process));
    engine.spawn_background(keep_statistics(pool));
    Ok(engine)
}

/// How often the runs table's statistics are checked.
const STATISTICS_EVERY: Duration = Duration::from_secs(2);

/// Analyses the runs table as soon as a good share of it changed. A queue table changes
/// shape within seconds (a burst of 100,000 runs into a table that held a few), while
/// autovacuum looks once a minute at best; until then the planner believes the old
/// shape and picks plans that walk every ready run per statement (measured: claims of
/// one message at a time taking 3-4 ms over a 20,000-run backlog, against 0.1 ms).
/// One process analyses at a time (an advisory lock); the rest skip that round.
async fn keep_statistics(pool: PgPool) {
    let mut tick = tokio::time::interval(STATISTICS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = analyze_if_stale(&pool).await {
            tracing::debug!(error = %e, "checking the runs table's statistics failed");
        }
    }
}

async fn analyze_if_stale(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let stale: bool = sqlx::query_scalar(sql::STATISTICS_STALE)
        .fetch_one(&mut *conn)
        .await?;
    if !stale {
        return Ok(());
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let ours: bool = sqlx::query_scalar(sql::TRY_ANALYZE_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if ours {
        sqlx::query("ANALYZE runs").execute(&mut *tx).await?;
        tracing::debug!("analysed the runs table");
    }
    tx.commit().await
}

/// Wakes the writer's parked claims whenever another process commits claimable runs.
/// Notifications that arrive together wake it once, and those this process sent (`process`
/// in the payload) not at all: its writer woke its claims at that commit already (each
/// woke them once more, for a claim that found nothing: one statement per run). After a
/// lost connection it wakes them anyway (notifications sent meanwhile are gone) and
/// listens again.
async fn listen(pool: PgPool, waker: engine::writer::Waker, process: String) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for new runs; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        if let Err(e) = listener.listen(READY_CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
            continue;
        }
        backoff = Duration::from_secs(1);
        loop {
            match listener.try_recv().await {
                Ok(Some(first)) => {
                    let mut foreign = first.payload() != process;
                    while let Some(next) = listener.next_buffered() {
                        foreign |= next.payload() != process;
                    }
                    if !foreign {
                        continue;
                    }
                }
                // the connection was lost; `try_recv` connects again on the next call
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "lost the LISTEN connection; reconnecting");
                    tokio::time::sleep(backoff).await;
                    break;
                }
            }
            if waker.wake().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{ConnectOptions, Connection};

    /// On a schema of its own in the PostgreSQL at `AGENTQ_TEST_DATABASE_URL` (or
    /// `DATABASE_URL`, or the local default), which `scripts/test.sh` provides.
    #[tokio::test]
    async fn every_statement_prepares_on_a_freshly_migrated_schema() {
        let base = std::env::var("AGENTQ_TEST_DATABASE_URL")
            .or_else(|_| std::env::var("DATABASE_URL"))
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let mut admin = sqlx::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("no PostgreSQL at {base}: {e}"));
        let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
        let create = format!("CREATE SCHEMA {schema}");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .unwrap();
        let options = <super::ConnectOpts as std::str::FromStr>::from_str(&base)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let mut conn = options.connect().await.unwrap();
        let source = concat!(include_str!("sql.rs"), include_str!("../shared_sql.rs"));
        super::engine::statements::prepare_all(&mut conn, source).await;
        conn.close().await.ok();
        let drop = format!("DROP SCHEMA {schema} CASCADE");
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}
