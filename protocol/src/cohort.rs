//! Which devices a rollout phase reaches. A device's bucket is a stable hash of (device id,
//! rollout id) into 0..10,000; phase *i* reaches the selected devices whose bucket is below
//! `percent_i × 100`. Phases only grow, so a device stays in once it is in, and a different
//! rollout reshuffles the buckets (the same devices are not always the canaries).
//!
//! In the protocol crate because it is part of what a rollout means: the server places devices
//! with it, and tools (the demo, the simulator) can say which devices a phase will reach.

use sha2::{Digest, Sha256};

/// Buckets per rollout (a percent has two decimals of resolution).
pub const BUCKETS: u32 = 10_000;

/// The device's bucket for this rollout.
pub fn bucket(device_id: &str, rollout_id: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(b"edgefleet cohort v1\0");
    h.update((device_id.len() as u64).to_le_bytes());
    h.update(device_id.as_bytes());
    h.update(rollout_id.as_bytes());
    let d = h.finalize();
    let x = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
    (x % BUCKETS as u64) as u32
}

/// Whether a (selected) device is in a phase of `percent`.
pub fn in_phase(device_id: &str, rollout_id: &str, percent: f64) -> bool {
    let limit = (percent.clamp(0.0, 100.0) * 100.0).round() as u32;
    bucket(device_id, rollout_id) < limit
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fractions_on_10000_devices_are_close_to_the_percentages() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("dev-{i:05}")).collect();
        for percent in [1.0, 5.0, 25.0, 50.0, 100.0] {
            let n = ids.iter().filter(|d| in_phase(d, "r-1", percent)).count() as f64;
            let want = percent * 100.0;
            // binomial s.d. is at most 50 on 10,000 draws: allow 4 s.d.
            assert!(
                (n - want).abs() <= 200.0,
                "{percent}%: {n} devices, wanted about {want}"
            );
        }
        assert_eq!(ids.iter().filter(|d| in_phase(d, "r-1", 0.0)).count(), 0);
    }

    #[test]
    fn another_rollout_picks_other_canaries() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("dev-{i}")).collect();
        let a: Vec<&String> = ids.iter().filter(|d| in_phase(d, "r-1", 5.0)).collect();
        let both = a.iter().filter(|d| in_phase(d, "r-2", 5.0)).count();
        assert!(both < a.len() / 5, "{both} of {} canaries again", a.len());
    }

    proptest! {
        #[test]
        fn stable_and_monotone(device in "[a-z0-9-]{1,40}", rollout in "[a-z0-9-]{1,20}", p in 0.0f64..100.0, q in 0.0f64..100.0) {
            prop_assert_eq!(bucket(&device, &rollout), bucket(&device, &rollout));
            let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
            if in_phase(&device, &rollout, lo) {
                prop_assert!(in_phase(&device, &rollout, hi));
            }
        }
    }
}
