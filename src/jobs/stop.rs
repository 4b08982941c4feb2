//! How an apalis monitor (the table path's or an agent queue's in Redis) is told to stop.

use tokio_util::sync::CancellationToken;

/// The signal an apalis monitor stops on: `shutdown` firing.
pub(crate) fn stop_signal(
    shutdown: &CancellationToken,
) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
    let shutdown = shutdown.clone();
    async move {
        shutdown.cancelled().await;
        Ok(())
    }
}
