//! Polling with a deadline: what every fleet step waits with.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Polls `f` every `every` until it returns `Some`, or fails with `what` and `context()` at
/// `deadline`.
pub fn until<T>(
    what: &str,
    deadline: Instant,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> Result<T> {
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}\n{}", context());
        }
        std::thread::sleep(every);
    }
}

/// [`until`] for tests: polls every 100 ms for `timeout`, panics with the context.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    until(what, deadline, Duration::from_millis(100), f, context).unwrap_or_else(|e| panic!("{e}"))
}
