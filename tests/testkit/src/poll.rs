//! The one way tests wait: poll a condition until it holds or a deadline passes, and fail
//! naming what did not happen. Speed targets live in the benchmark; a wait here only has a
//! deadline for correctness, and returns how long it took so a test may report it.

use std::time::{Duration, Instant};

/// How often a condition is checked.
const EVERY: Duration = Duration::from_millis(20);

/// Blocks the thread until `check` holds; panics after `limit` naming `what`.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(EVERY);
    }
    started.elapsed()
}

/// Awaits until `check` holds; panics after `limit` naming `what`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(EVERY).await;
    }
    started.elapsed()
}

/// [`eventually`] for a check that must await (a query to a server).
pub async fn eventually_async(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(EVERY).await;
    }
    started.elapsed()
}
