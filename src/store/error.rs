//! Store errors, with sqlx errors mapped once.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("run not found")]
    NotFound,
    /// Some of a new run's `depends_on` (by index) name no run or runs that failed:
    /// (index, code, message).
    #[error("invalid dependencies")]
    BadDependencies(Vec<(usize, &'static str, String)>),
    /// The run is in a state that does not allow the change (e.g. cancelling a finished run).
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached or is busy; the caller may try again.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The writer has stopped (the process is shutting down).
    #[error("store is closed")]
    Closed,
    #[error("{0}")]
    Unsupported(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(e.to_string())
            }
            sqlx::Error::Database(ref db)
                if db
                    .code()
                    .is_some_and(|c| c == "5" || c == "6" || c == "517") =>
            {
                // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_SNAPSHOT
                Self::Unavailable(e.to_string())
            }
            other => Self::Database(other),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}
