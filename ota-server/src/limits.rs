//! The process's open-file limit, which bounds how many devices one server holds: on the
//! embedded broker each connected device costs three descriptors in this process (its TLS
//! socket, the gate's loopback link to rumqttd and rumqttd's end of it). At start the soft limit
//! is raised to the hard one and the resulting device capacity is logged; measured in
//! docs/benchmarks.md (`edgectl simulate`).

/// Descriptors per connected device on the embedded broker.
pub const FDS_PER_DEVICE: u64 = 3;
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

/// Devices the embedded broker can hold under a soft limit of `soft` descriptors.
pub fn embedded_capacity(soft: u64) -> u64 {
    soft.saturating_sub(RESERVED_FDS) / FDS_PER_DEVICE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_three_descriptors_a_device() {
        assert_eq!(embedded_capacity(20_000), 6_581);
        assert_eq!(embedded_capacity(100), 0);
        let (soft, hard) = raise_open_files().unwrap();
        assert_eq!(soft, hard, "soft limit raised to the hard one");
    }
}
