//! What the benchmarks share: fresh databases, agentq processes, and statistics.

#![allow(dead_code)] // each benchmark uses its own part

use std::process::{Child, Command, Stdio};

use sqlx::Connection;

/// The environment variable `name` parsed, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fresh database for one pass: a SQLite file, or a PostgreSQL schema.
pub struct Database {
    pub url: String,
    schema: Option<String>,
    _dir: tempfile::TempDir,
}

impl Database {
    pub async fn new(kind: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match kind {
            "sqlite" => Self {
                url: format!("sqlite://{}", dir.path().join("bench.db").display()),
                schema: None,
                _dir: dir,
            },
            "postgres" => {
                let base = postgres_base();
                let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
                let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let join = if base.contains('?') { '&' } else { '?' };
                Self {
                    url: format!("{base}{join}options=-csearch_path%3D{schema}"),
                    schema: Some(schema),
                    _dir: dir,
                }
            }
            other => panic!("DB must be sqlite or postgres, not {other}"),
        }
    }

    /// (succeeded runs, the latest finished_at in ms).
    pub async fn stats(&self) -> (i64, i64) {
        self.pair(
            "SELECT COUNT(*), COALESCE(MAX(finished_at), 0) FROM runs WHERE status = 'succeeded'",
        )
        .await
    }

    /// Two integers from one row, whatever the dialect.
    pub async fn pair(&self, sql: &'static str) -> (i64, i64) {
        if self.url.starts_with("sqlite") {
            let url = format!("{}?mode=ro", self.url);
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_as(sql).fetch_one(&mut conn).await.unwrap()
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_as(sql).fetch_one(&mut conn).await.unwrap()
        }
    }

    pub async fn drop_schema(&self) {
        if let Some(schema) = &self.schema {
            let mut conn = sqlx::PgConnection::connect(&postgres_base()).await.unwrap();
            let sql = format!("DROP SCHEMA {schema} CASCADE");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

pub fn postgres_base() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// One agentq process.
pub struct Process {
    pub child: Child,
}

impl Process {
    /// `binary role --listen 127.0.0.1:port --database-url … extra…`, logging errors only.
    pub fn spawn(binary: &str, role: &str, db: &Database, port: u16, extra: &[&str]) -> Self {
        let child = Command::new(binary)
            .args([role, "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &db.url])
            .args(extra)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("agentq starts");
        Self { child }
    }

    /// The process's peak resident set (VmHWM), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `p`th percentile of sorted values (NaN when there are none).
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1]
}

/// The median (mean of the middle two for an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}
