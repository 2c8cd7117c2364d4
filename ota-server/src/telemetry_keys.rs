//! Where telemetry-derived records live in the store's Telemetry table: one module owns the key
//! formats, so the ingest path that writes them and the engine, health and API code that read
//! them agree without importing each other.

/// Key of a phase's merged telemetry ([`crate::health::PhaseAggregate`]).
pub fn phase_key(rollout: &str, phase: usize) -> String {
    format!("{rollout}/{phase:04}")
}

/// Key of a phase's install tally ([`crate::ingest::InstallTally`]).
pub fn installs_key(rollout: &str, phase: usize) -> String {
    format!("installs/{}", phase_key(rollout, phase))
}

/// Key of an experiment phase's arms ([`crate::health::ArmsAggregate`]).
pub fn arms_key(rollout: &str, phase: usize) -> String {
    format!("arms/{}", phase_key(rollout, phase))
}

/// Key of a rollout's baselines: what each device it reached was told before.
pub fn baselines_key(rollout: &str) -> String {
    format!("baselines/{rollout}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formats are stored data: changing one orphans what existing servers wrote.
    #[test]
    fn key_formats_are_stable() {
        assert_eq!(phase_key("r-7", 2), "r-7/0002");
        assert_eq!(installs_key("r-7", 2), "installs/r-7/0002");
        assert_eq!(baselines_key("r-7"), "baselines/r-7");
        assert_eq!(arms_key("r-7", 2), "arms/r-7/0002");
    }
}
