//! The process's open-file limit, which bounds how many devices one server holds: each connected
//! device costs one descriptor in this process (its socket; the gate ends MQTT in-process).
//! At start the soft limit is raised to the hard one and the resulting device capacity is
//! logged; measured in docs/benchmarks.md (`edgectl simulate`).

/// Descriptors per connected device.
pub const FDS_PER_DEVICE: u64 = 1;
/// Descriptors kept for the store, HTTP clients and the rest.
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft open-file limit to the hard limit; (soft limit now, hard limit).
pub fn raise_open_files() -> Option<(u64, u64)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    // `None` is RLIM_INFINITY
    let hard = l.maximum.unwrap_or(u64::MAX);
    let mut soft = l.current.unwrap_or(u64::MAX);
    if soft < hard {
        let raised = Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            soft = hard;
        }
    }
    Some((soft, hard))
}

/// Devices one server can hold under a soft limit of `soft` descriptors.
pub fn device_capacity(soft: u64) -> u64 {
    soft.saturating_sub(RESERVED_FDS) / FDS_PER_DEVICE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_a_descriptor_a_device() {
        assert_eq!(device_capacity(20_000), 19_744);
        assert_eq!(device_capacity(100), 0);
        let (soft, hard) = raise_open_files().unwrap();
        assert_eq!(soft, hard, "soft limit raised to the hard one");
    }
}
