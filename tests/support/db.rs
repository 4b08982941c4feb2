//! A database of the test's own: a SQLite file, or with `AGENTQ_TEST_DB=postgres` a fresh
//! schema in the PostgreSQL at `AGENTQ_TEST_DATABASE_URL` (or `DATABASE_URL`).

use tempfile::TempDir;

/// A database of its own for one test; a SQLite file is removed with it, a PostgreSQL
/// schema is left for `scripts/test.sh` to drop with its database.
pub struct TestDb {
    pub url: String,
    _dir: TempDir,
}

impl TestDb {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match std::env::var("AGENTQ_TEST_DB").as_deref() {
            Ok("postgres") => postgres_schema().await,
            Ok("sqlite") | Err(_) => format!("sqlite://{}", dir.path().join("agentq.db").display()),
            Ok(other) => panic!("AGENTQ_TEST_DB must be sqlite or postgres, not {other}"),
        };
        Self { url, _dir: dir }
    }
}

/// Creates a fresh schema and returns a URL whose connections use it.
async fn postgres_schema() -> String {
    use sqlx::Connection;
    let base = std::env::var("AGENTQ_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("AGENTQ_TEST_DB=postgres but {base} does not answer: {e}"));
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("a test schema");
    conn.close().await.ok();
    let join = if base.contains('?') { '&' } else { '?' };
    format!("{base}{join}options=-csearch_path%3D{schema}")
}
