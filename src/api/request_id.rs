//! The request id of the request being handled, for problem bodies. Set by the
//! problem middleware around every handler.

tokio::task_local! {
    static REQUEST_ID: Option<String>;
}

pub(super) fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok().flatten()
}

pub(super) async fn scope<F: Future>(id: Option<String>, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}
