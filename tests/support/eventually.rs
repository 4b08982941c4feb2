//! `eventually`: the one way tests wait for something another task or process does.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// How often `eventually` looks again.
const EVERY: Duration = Duration::from_millis(20);

/// Calls `probe` every 20 ms until it answers `Ok`, and returns that. After `within` it
/// fails, naming `what` and showing the last `Err` the probe answered (what it saw).
pub async fn eventually<T, E, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(found) => return found,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "not within {within:?}: {what}; last seen: {seen:#?}"
            ),
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[tokio::test]
async fn eventually_returns_what_the_probe_found_and_fails_on_time_saying_what_it_saw() {
    let mut calls = 0;
    let found = eventually(Duration::from_secs(1), "the third call", || {
        calls += 1;
        let answer = if calls == 3 { Ok(calls) } else { Err(calls) };
        async move { answer }
    })
    .await;
    assert_eq!(found, 3);
    let late = tokio::spawn(eventually(Duration::from_millis(50), "never", || async {
        Err::<(), _>("still nothing")
    }));
    let message = late.await.unwrap_err().into_panic();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("never") && message.contains("still nothing"),
        "{message}"
    );
}
