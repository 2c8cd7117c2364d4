//! What each device should run (DESIGN decision 1), computed from the rollouts, never
//! commanded. For each model, the device's rollouts of that model are taken oldest first; a
//! rollout that reaches the device (its selector matches the device's tags and the device's
//! bucket is inside the current phase) sets the desired version to its bundle, unless it was
//! rolled back, in which case the device goes back to what the earlier rollouts gave it, or,
//! failing that, to the version it reported before this rollout first reached it (its
//! *baseline*). A model no rollout reaches is left out (the agent keeps what it has).

use std::collections::{BTreeMap, HashMap};

use crate::rollout::Rollout;
use edge_protocol::rest::PhaseRole;

/// A model version as the desired state names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Bundle sha256, hex.
    pub sha256: String,
    /// Bundle size.
    pub size: u64,
}

/// A candidate a device runs as a shadow (a rollout's shadow phase).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShadowTarget {
    /// The candidate.
    pub target: Target,
    /// Share of requests mirrored, parts per million.
    pub sample_ppm: u32,
    /// CPU budget, thousandths of a core.
    pub cpu_millicores: u32,
}

/// What a device should run: its models and its shadows, both sorted by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wanted {
    /// Models to run.
    pub models: Vec<Target>,
    /// Candidates to run as shadows.
    pub shadows: Vec<ShadowTarget>,
}

/// A rollout with what the engine needs to place devices.
pub struct Placed<'a> {
    /// The rollout.
    pub rollout: &'a Rollout,
    /// Its bundle as a target.
    pub target: &'a Target,
    /// Per device: what it ran before this rollout reached it (recorded at first inclusion).
    pub baselines: &'a HashMap<String, Target>,
}

/// Whether the rollout reaches the device now.
pub fn reaches(p: &Placed<'_>, device_id: &str, tags: &BTreeMap<String, String>) -> bool {
    p.rollout.reaches(device_id, tags)
}

/// The device's desired models and shadows. `rollouts` must be in creation order. A rollout in
/// a shadow phase gives its version as a shadow (the newest such rollout of a model wins); in
/// an experiment phase, only to the devices of the candidate's arm (the others keep what the
/// earlier rollouts gave them).
pub fn desired_for(
    device_id: &str,
    tags: &BTreeMap<String, String>,
    rollouts: &[Placed<'_>],
) -> Wanted {
    let mut by_model: BTreeMap<String, Option<Target>> = BTreeMap::new();
    let mut shadows: BTreeMap<String, ShadowTarget> = BTreeMap::new();
    for p in rollouts {
        if !reaches(p, device_id, tags) {
            continue;
        }
        let slot = by_model.entry(p.target.name.clone()).or_default();
        if !p.rollout.delivers() {
            if slot.is_none() {
                *slot = p.baselines.get(device_id).cloned();
            }
            continue;
        }
        match p.rollout.role(device_id) {
            PhaseRole::Candidate => {
                *slot = Some(p.target.clone());
                shadows.remove(&p.target.name);
            }
            PhaseRole::Incumbent => {}
            PhaseRole::Shadow => {
                let spec = p.rollout.current_phase().shadow.clone().unwrap_or(
                    edge_protocol::rest::ShadowPhase {
                        sample: 1.0,
                        cpu_budget: 0.5,
                    },
                );
                shadows.insert(
                    p.target.name.clone(),
                    ShadowTarget {
                        target: p.target.clone(),
                        sample_ppm: (spec.sample * 1e6).round() as u32,
                        cpu_millicores: (spec.cpu_budget * 1e3).round() as u32,
                    },
                );
            }
        }
    }
    Wanted {
        models: by_model.into_values().flatten().collect(),
        shadows: shadows.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{Lifecycle, Phase, RolloutSpec};
    use crate::selector::Selector;

    fn target(v: &str) -> Target {
        Target {
            name: "digits".into(),
            version: v.into(),
            sha256: format!("{v}-sha"),
            size: 1,
        }
    }

    fn rollout(id: &str, percent: f64) -> Rollout {
        selecting(id, percent, Selector::default())
    }

    fn selecting(id: &str, percent: f64, selector: Selector) -> Rollout {
        Rollout::new(
            id.into(),
            "digits".into(),
            "x".into(),
            RolloutSpec {
                bundle: "sha256:00".into(),
                selector,
                phases: vec![Phase::canary(percent, 0)],
                gates: Default::default(),
                on_gate_failure: Default::default(),
            },
            0,
        )
    }

    /// What `id` is told by two rollouts of the model, `r1` (giving `t1`) then `r2` (`t2`).
    fn two_rollouts(
        id: &str,
        tags: &BTreeMap<String, String>,
        (r1, t1): (&Rollout, &Target),
        (r2, t2): (&Rollout, &Target),
    ) -> Wanted {
        let none = HashMap::new();
        let list = [
            Placed {
                rollout: r1,
                target: t1,
                baselines: &none,
            },
            Placed {
                rollout: r2,
                target: t2,
                baselines: &none,
            },
        ];
        desired_for(id, tags, &list)
    }

    #[test]
    fn newest_reaching_rollout_wins_and_rollback_returns_to_the_earlier_one() {
        let tags: BTreeMap<String, String> = [("hw".to_string(), "x86".to_string())].into();
        let arm = Selector::parse("hw=arm").unwrap();
        let (t1, t2) = (target("1.0.0"), target("2.0.0"));
        let none = HashMap::new();
        let r1 = rollout("r1", 100.0);
        let mut r2 = rollout("r2", 100.0);
        let placed = |r2: &Rollout| two_rollouts("dev-1", &tags, (&r1, &t1), (r2, &t2)).models;
        assert_eq!(placed(&r2), vec![t2.clone()]);
        r2.rollback(1, "op").unwrap();
        assert_eq!(placed(&r2), vec![t1.clone()]);
        // a rollout whose selector does not match changes nothing
        let list = [
            Placed {
                rollout: &r1,
                target: &t1,
                baselines: &none,
            },
            Placed {
                rollout: &selecting("r3", 100.0, arm),
                target: &t2,
                baselines: &none,
            },
        ];
        assert_eq!(desired_for("dev-1", &tags, &list).models, vec![t1]);
    }

    #[test]
    fn a_rolled_back_first_rollout_returns_devices_to_their_baseline() {
        let tags = BTreeMap::new();
        let t2 = target("2.0.0");
        let baselines: HashMap<String, Target> = [("dev-1".to_string(), target("0.9.0"))].into();
        let mut r = rollout("r", 100.0);
        r.rollback(1, "gate").unwrap();
        let list = [Placed {
            rollout: &r,
            target: &t2,
            baselines: &baselines,
        }];
        assert_eq!(
            desired_for("dev-1", &tags, &list).models,
            vec![target("0.9.0")]
        );
        assert_eq!(
            desired_for("dev-2", &tags, &list).models,
            vec![],
            "no baseline: left as it is"
        );
    }

    #[test]
    fn devices_outside_the_phase_keep_what_they_have() {
        let tags = BTreeMap::new();
        let t2 = target("2.0.0");
        let none = HashMap::new();
        let r = rollout("r", 5.0);
        let list = [Placed {
            rollout: &r,
            target: &t2,
            baselines: &none,
        }];
        let reached = (0..1000)
            .filter(|i| {
                !desired_for(&format!("dev-{i}"), &tags, &list)
                    .models
                    .is_empty()
            })
            .count();
        assert!(
            (20..=80).contains(&reached),
            "5% of 1000 devices: {reached}"
        );
    }

    #[test]
    fn shadow_phases_send_shadows_and_experiments_split_devices_into_arms() {
        let tags = BTreeMap::new();
        let (t1, t2) = (target("1.0.0"), target("2.0.0"));
        let r1 = rollout("r1", 100.0);
        let mut r2 = rollout("r2", 100.0);
        r2.spec.phases = vec![
            Phase {
                shadow: Some(edge_protocol::rest::ShadowPhase {
                    sample: 0.25,
                    cpu_budget: 0.5,
                }),
                ..Phase::canary(100.0, 0)
            },
            Phase {
                experiment: Some(edge_protocol::rest::ExperimentPhase {
                    metric: edge_protocol::rest::ExperimentMetric::Accuracy,
                    alpha: 0.05,
                    tau: 0.02,
                    min_samples: 10,
                    max_seconds: 60,
                    on_inconclusive: Default::default(),
                }),
                ..Phase::canary(100.0, 0)
            },
        ];
        let list = |r2: &Rollout, id: &str| two_rollouts(id, &tags, (&r1, &t1), (r2, &t2));
        let w = list(&r2, "dev-1");
        assert_eq!(
            w.models,
            vec![t1.clone()],
            "a shadow phase keeps the active model"
        );
        assert_eq!(w.shadows.len(), 1);
        assert_eq!(
            (w.shadows[0].sample_ppm, w.shadows[0].cpu_millicores),
            (250_000, 500)
        );
        r2.phase = 1;
        let versions: Vec<Vec<Target>> = (0..200)
            .map(|i| list(&r2, &format!("dev-{i}")).models)
            .collect();
        let candidates = versions.iter().filter(|m| m[0] == t2).count();
        assert!(
            (70..=130).contains(&candidates),
            "half in each arm: {candidates}"
        );
        assert!(versions.iter().all(|m| m[0] == t2 || m[0] == t1));
        assert!((0..200).all(|i| list(&r2, &format!("dev-{i}")).shadows.is_empty()));
    }
}
