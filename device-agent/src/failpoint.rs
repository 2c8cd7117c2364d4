//! Crash injection for the kill -9 tests. With `EDGE_AGENT_FAILPOINT=<step>` in its environment
//! the agent kills itself with SIGKILL (no destructors, no flush: exactly a `kill -9` or a power
//! cut as far as the process can tell) when it reaches that step of a reconcile: `download`
//! (half the bundle received), `write` (bundle stored, slot not yet touched), `verify` (bundle
//! verified and self-tested, not yet activated), `activate` (trial recorded and model swapped
//! in), `trial` (trial window running with traffic). Unset, every check is one env lookup at a
//! reconcile step, never on the request path.

/// Environment variable naming the step to die at.
pub const ENV: &str = "EDGE_AGENT_FAILPOINT";

/// Dies with SIGKILL if the failpoint `step` is armed.
pub fn hit(step: &str) {
    if std::env::var(ENV).is_ok_and(|v| v == step) {
        tracing::warn!(step, "failpoint: SIGKILL");
        let me = rustix::process::getpid();
        let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
    }
}
