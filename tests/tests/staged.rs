//! Scenario 1 of issue 5, the happy path: a fleet of agents in three sites on the embedded
//! broker; v2 in three phases (10 % → 50 % → 100 %), never ahead of its phase, every device on
//! v2 at the end, every prediction counted once. 50 agents (`FLEET_AGENTS=N` for another size).

use fleet_tests::staged::{fleet_size, staged_rollout};

#[test]
fn three_phase_rollout_to_the_whole_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let n = fleet_size();
    let run = staged_rollout(dir.path(), n, None);
    eprintln!(
        "{n} agents: v2 converged in {:.1} s; devices per phase {:?}; {} predictions counted",
        run.converge.as_secs_f64(),
        run.phase_devices,
        run.answered
    );
}
