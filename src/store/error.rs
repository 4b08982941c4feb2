//! Store errors, with sqlx errors mapped once.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("run not found")]
    NotFound,
    /// Some of a new run's `depends_on` (by index) name no run or runs that failed:
    /// (index, code, message).
    #[error("invalid dependencies")]
    BadDependencies(Vec<(usize, &'static str, String)>),
    /// Runs of a batch (by index) depend on stored runs that do not exist or failed:
    /// (run index, code, message). Nothing of the batch was stored.
    #[error("invalid dependencies in the batch")]
    BadBatchDependencies(Vec<(usize, &'static str, String)>),
    /// A new run's concurrency key is full and its policy is `reject`.
    #[error("{0}")]
    KeyBusy(String),
    /// The run is in a state that does not allow the change (e.g. cancelling a finished
    /// run): a stable code (`run_finished`, `idempotency_key_reused`, …) and what happened.
    #[error("{1}")]
    Conflict(&'static str, String),
    /// The database cannot be reached or is busy; the caller may try again.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The connection broke, or the database stopped answering, while the write was being
    /// committed: it may have been stored or not. Retried with the same Idempotency-Key, a
    /// stored run is found rather than made twice.
    #[error("the database connection broke while committing: the write may have been stored ({0})")]
    Uncertain(String),
    /// The database's disk (or `--sqlite-max-size`) is full: nothing was written.
    #[error("the database's storage is full: {0}")]
    StorageFull(String),
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
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(e.to_string()),
            sqlx::Error::Database(ref db) if db.code().is_some_and(|c| unavailable_code(&c)) => {
                Self::Unavailable(e.to_string())
            }
            // SQLite: SQLITE_FULL; PostgreSQL: disk_full
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|c| matches!(&*c, "13" | "53100")) =>
            {
                Self::StorageFull(e.to_string())
            }
            other => Self::Database(other),
        }
    }
}

/// Database error codes that mean "not now" rather than "never".
fn unavailable_code(code: &str) -> bool {
    // SQLite: SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_SNAPSHOT
    matches!(code, "5" | "6" | "517")
        // PostgreSQL: connection exceptions (class 08); shutting down, crashed, starting
        // up (57P01-57P03); too many connections
        || code.starts_with("08")
        || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

impl StoreError {
    /// A copy of an error that fails every write of a batch alike (the database away or
    /// full, a commit of unknown outcome); `None` for an error of one write.
    pub(crate) fn alike(&self) -> Option<Self> {
        match self {
            Self::Unavailable(r) => Some(Self::Unavailable(r.clone())),
            Self::StorageFull(r) => Some(Self::StorageFull(r.clone())),
            Self::Uncertain(r) => Some(Self::Uncertain(r.clone())),
            _ => None,
        }
    }

    /// The error of a `COMMIT`: a connection that broke, or a server going away, leaves
    /// its outcome unknown ([`StoreError::Uncertain`]); an answer that says it failed (a
    /// busy SQLite, a conflict) means it was not applied.
    pub(crate) fn from_commit(e: sqlx::Error) -> Self {
        let lost = match &e {
            sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
            sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
            _ => false,
        };
        if lost {
            Self::Uncertain(e.to_string())
        } else {
            Self::from(e)
        }
    }

    /// The database could not be reached or answered too late: whether or not the write was
    /// stored ([`StoreError::Uncertain`]), the caller may try again.
    pub(crate) fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Uncertain(_))
    }

    /// A write that lost a race with another process and is worth applying again:
    /// PostgreSQL's deadlock and serialization failures, and a unique key (an
    /// Idempotency-Key) another process took first, which the retry then finds.
    pub(crate) fn lost_a_race(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|c| matches!(&*c, "40P01" | "40001" | "23505")),
            _ => false,
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}
