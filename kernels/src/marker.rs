//! Markers for an instruction counter: `mark(i)` calls `close(-(100000 + i))`, which fails
//! with EBADF and has no other effect, on a board and under qemu alike; `../shared/armlab`'s
//! plugin snapshots its counters at that call, so a benchmark that marks before its first run
//! and after each one gets per-run instruction counts from one process (`edgectl bench
//! --markers`, `bench/aarch64.sh`).

#[cfg(unix)]
unsafe extern "C" {
    fn close(fd: i32) -> i32;
}

/// Marker `i` (`0..900000`).
pub fn mark(i: u32) {
    assert!(i < 900_000, "marker labels are 0..900000");
    #[cfg(unix)]
    // SAFETY: closing a negative descriptor touches no resource: the call only fails with
    // EBADF, which is the point.
    unsafe {
        close(-(100_000 + i as i32));
    }
}
