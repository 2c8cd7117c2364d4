//! The rollout state machine (DESIGN decision 7), pure: no clock, no store, no network. The
//! engine feeds it the time and the health of the current phase's devices; it answers with the
//! transition to make, which the engine stores with the gate values that caused it.
//!
//! A phase advances only when its soak time has passed **and** its gates pass on telemetry
//! from enough of its devices for the new version. A failing gate pauses the rollout or rolls
//! it back (per `on_gate_failure`). Operators can pause, resume, abort and roll back.

use serde::{Deserialize, Serialize};

/// One phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Share of the selected devices, (0, 100].
    pub percent: f64,
    /// Time to watch the phase before it may advance (0 for the last phase is usual).
    #[serde(default)]
    pub soak_seconds: u64,
}

/// Health limits of a phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Failed installs (self-test, verify, download, trial rollback) / installs attempted.
    #[serde(default)]
    pub max_install_failure_rate: Option<f64>,
    /// Failed predictions / predictions.
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// p99 latency, ms.
    #[serde(default)]
    pub max_p99_latency_ms: Option<f64>,
    /// PSI of predictions against the bundle's reference.
    #[serde(default)]
    pub max_psi: Option<f64>,
    /// Mean top-1 confidence (classification).
    #[serde(default)]
    pub min_mean_confidence: Option<f64>,
    /// Devices of the phase that must report telemetry before a verdict (capped at the phase's
    /// size).
    #[serde(default = "one")]
    pub min_reporting_devices: u64,
    /// Predictions the phase must have served before a verdict on the model signals (error
    /// rate, latency, PSI, confidence are noise on a handful of requests). Default 0.
    #[serde(default)]
    pub min_requests: u64,
}

fn one() -> u64 {
    1
}

/// What to do when a gate fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnGateFailure {
    /// Stop advancing; devices keep what they have.
    #[default]
    Pause,
    /// Send the rollout's devices back to their previous version.
    Rollback,
}

/// A rollout as created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// `sha256:<hex>` of the bundle.
    pub bundle: String,
    /// Cohort selector over device tags.
    #[serde(default)]
    pub selector: String,
    /// Phases, increasing percentages.
    pub phases: Vec<Phase>,
    /// Gates for every phase.
    #[serde(default)]
    pub gates: Gates,
    /// Pause or roll back on a failing gate.
    #[serde(default)]
    pub on_gate_failure: OnGateFailure,
}

impl RolloutSpec {
    /// Checks phases and gates; the message names the problem.
    pub fn check(&self) -> Result<(), String> {
        if self.phases.is_empty() {
            return Err("a rollout needs at least one phase".into());
        }
        let mut last = 0.0;
        for (i, p) in self.phases.iter().enumerate() {
            if !(p.percent > 0.0 && p.percent <= 100.0) {
                return Err(format!(
                    "phase {i}: percent {} is not in (0, 100]",
                    p.percent
                ));
            }
            if p.percent < last {
                return Err(format!(
                    "phase {i}: percent {} is below the previous phase's {last}",
                    p.percent
                ));
            }
            last = p.percent;
        }
        let g = &self.gates;
        for (name, v) in [
            ("max_install_failure_rate", g.max_install_failure_rate),
            ("max_error_rate", g.max_error_rate),
            ("min_mean_confidence", g.min_mean_confidence),
        ] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("gates.{name} {v} is not in [0, 1]"));
                }
            }
        }
        for (name, v) in [
            ("max_p99_latency_ms", g.max_p99_latency_ms),
            ("max_psi", g.max_psi),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!("gates.{name} {v} must be a non-negative number"));
                }
            }
        }
        Ok(())
    }
}

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Advancing through its phases.
    Running,
    /// Stopped by a gate or an operator; devices keep what they have.
    Paused,
    /// Every phase passed.
    Completed,
    /// Stopped for good by an operator; devices keep what they have.
    Aborted,
    /// Devices sent back to their previous version.
    RolledBack,
}

impl Status {
    /// No further transitions.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Aborted | Status::RolledBack
        )
    }
}

/// The health of one phase's devices for the rollout's version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseHealth {
    /// Devices in the phase (selected and bucketed in).
    pub devices: u64,
    /// Devices that sent telemetry for the new version during the phase.
    pub reporting_devices: u64,
    /// Install attempts and failures (events).
    pub installs: u64,
    /// Failed installs.
    pub install_failures: u64,
    /// Predictions and failed predictions.
    pub requests: u64,
    /// Failed predictions.
    pub errors: u64,
    /// p99 latency, ms.
    pub p99_ms: Option<f64>,
    /// Prediction PSI against the reference.
    pub psi: Option<f64>,
    /// Mean top-1 confidence.
    pub mean_confidence: Option<f64>,
}

/// A gate verdict.
#[derive(Clone, Debug, PartialEq)]
pub enum GateVerdict {
    /// Not enough evidence yet (says what is missing).
    Wait(String),
    /// Every gate holds.
    Pass,
    /// A gate failed (names it and the value).
    Fail(String),
}

/// Judges a phase's health against the gates.
pub fn evaluate(gates: &Gates, h: &PhaseHealth) -> GateVerdict {
    if h.installs > 0 {
        if let Some(max) = gates.max_install_failure_rate {
            let rate = h.install_failures as f64 / h.installs as f64;
            let needed = gates.min_reporting_devices.min(h.devices).max(1);
            if h.installs >= needed && rate > max {
                return GateVerdict::Fail(format!(
                    "install failure rate {rate:.3} ({} of {}) over {max}",
                    h.install_failures, h.installs
                ));
            }
        }
    }
    if h.devices == 0 {
        return GateVerdict::Pass; // nobody to judge: the phase is empty
    }
    let needed = gates.min_reporting_devices.min(h.devices);
    if h.reporting_devices < needed {
        return GateVerdict::Wait(format!(
            "{} of {needed} devices reporting",
            h.reporting_devices
        ));
    }
    if h.requests < gates.min_requests {
        return GateVerdict::Wait(format!(
            "{} of {} predictions served",
            h.requests, gates.min_requests
        ));
    }
    if let Some(max) = gates.max_error_rate {
        let rate = if h.requests == 0 {
            0.0
        } else {
            h.errors as f64 / h.requests as f64
        };
        if rate > max {
            return GateVerdict::Fail(format!("error rate {rate:.4} over {max}"));
        }
    }
    if let (Some(max), Some(p99)) = (gates.max_p99_latency_ms, h.p99_ms) {
        if p99 > max {
            return GateVerdict::Fail(format!("p99 latency {p99:.2} ms over {max} ms"));
        }
    }
    if let (Some(max), Some(psi)) = (gates.max_psi, h.psi) {
        if psi > max {
            return GateVerdict::Fail(format!("prediction PSI {psi:.3} over {max}"));
        }
    }
    if let (Some(min), Some(c)) = (gates.min_mean_confidence, h.mean_confidence) {
        if c < min {
            return GateVerdict::Fail(format!("mean confidence {c:.3} under {min}"));
        }
    }
    GateVerdict::Pass
}

/// One stored transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Unix seconds.
    pub at: u64,
    /// Phase before and after.
    pub from_phase: usize,
    /// Phase after.
    pub to_phase: usize,
    /// Status before.
    pub from_status: Status,
    /// Status after.
    pub to_status: Status,
    /// Why (gate values, operator action).
    pub reason: String,
    /// The health the engine saw, for gate-driven transitions.
    pub health: Option<PhaseHealth>,
}

/// A rollout's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Id.
    pub id: String,
    /// Model name (from the bundle).
    pub model: String,
    /// Model version (from the bundle).
    pub version: String,
    /// As created.
    pub spec: RolloutSpec,
    /// Status.
    pub status: Status,
    /// Current phase index.
    pub phase: usize,
    /// When the current phase started, unix seconds.
    pub phase_started: u64,
    /// Every transition, oldest first.
    pub transitions: Vec<Transition>,
}

impl Rollout {
    /// A new rollout, running its first phase from `now`.
    pub fn new(id: String, model: String, version: String, spec: RolloutSpec, now: u64) -> Rollout {
        Rollout {
            id,
            model,
            version,
            spec,
            status: Status::Running,
            phase: 0,
            phase_started: now,
            transitions: Vec::new(),
        }
    }

    /// The current phase's percentage.
    pub fn percent(&self) -> f64 {
        self.spec.phases[self.phase.min(self.spec.phases.len() - 1)].percent
    }

    fn go(
        &mut self,
        now: u64,
        to_phase: usize,
        to_status: Status,
        reason: String,
        health: Option<PhaseHealth>,
    ) -> Transition {
        let t = Transition {
            at: now,
            from_phase: self.phase,
            to_phase,
            from_status: self.status,
            to_status,
            reason,
            health,
        };
        if to_phase != self.phase {
            self.phase_started = now;
        }
        self.phase = to_phase;
        self.status = to_status;
        self.transitions.push(t.clone());
        t
    }

    /// One engine step: with the current phase's health at `now`, advance, fail or wait.
    pub fn tick(&mut self, now: u64, health: &PhaseHealth) -> Option<Transition> {
        if self.status != Status::Running {
            return None;
        }
        match evaluate(&self.spec.gates, health) {
            GateVerdict::Fail(reason) => {
                let to = match self.spec.on_gate_failure {
                    OnGateFailure::Pause => Status::Paused,
                    OnGateFailure::Rollback => Status::RolledBack,
                };
                Some(self.go(
                    now,
                    self.phase,
                    to,
                    format!("gate failed in phase {}: {reason}", self.phase),
                    Some(health.clone()),
                ))
            }
            GateVerdict::Wait(_) => None,
            GateVerdict::Pass => {
                let soak = self.spec.phases[self.phase].soak_seconds;
                if now < self.phase_started.saturating_add(soak) {
                    return None;
                }
                let reason = format!(
                    "phase {} passed its gates after {} s of soak",
                    self.phase,
                    now - self.phase_started
                );
                if self.phase + 1 < self.spec.phases.len() {
                    Some(self.go(
                        now,
                        self.phase + 1,
                        Status::Running,
                        reason,
                        Some(health.clone()),
                    ))
                } else {
                    Some(self.go(
                        now,
                        self.phase,
                        Status::Completed,
                        reason,
                        Some(health.clone()),
                    ))
                }
            }
        }
    }

    /// Operator: pause a running rollout.
    pub fn pause(&mut self, now: u64, who: &str) -> Result<Transition, String> {
        if self.status != Status::Running {
            return Err(format!("rollout is {:?}, not running", self.status));
        }
        Ok(self.go(
            now,
            self.phase,
            Status::Paused,
            format!("paused by {who}"),
            None,
        ))
    }

    /// Operator: resume a paused rollout (the phase's soak starts over).
    pub fn resume(&mut self, now: u64, who: &str) -> Result<Transition, String> {
        if self.status != Status::Paused {
            return Err(format!("rollout is {:?}, not paused", self.status));
        }
        self.phase_started = now;
        Ok(self.go(
            now,
            self.phase,
            Status::Running,
            format!("resumed by {who}"),
            None,
        ))
    }

    /// Operator: stop for good; devices keep what they have.
    pub fn abort(&mut self, now: u64, who: &str) -> Result<Transition, String> {
        if self.status.is_final() {
            return Err(format!("rollout is already {:?}", self.status));
        }
        Ok(self.go(
            now,
            self.phase,
            Status::Aborted,
            format!("aborted by {who}"),
            None,
        ))
    }

    /// Operator: send devices back to their previous version.
    pub fn rollback(&mut self, now: u64, who: &str) -> Result<Transition, String> {
        if matches!(self.status, Status::RolledBack) {
            return Err("rollout is already rolled back".into());
        }
        Ok(self.go(
            now,
            self.phase,
            Status::RolledBack,
            format!("rolled back by {who}"),
            None,
        ))
    }

    /// Whether devices of this rollout should run its version now (running, paused, completed or
    /// aborted keep what they were given; rolled back do not).
    pub fn delivers(&self) -> bool {
        !matches!(self.status, Status::RolledBack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(on_fail: OnGateFailure) -> RolloutSpec {
        RolloutSpec {
            bundle: "sha256:00".into(),
            selector: String::new(),
            phases: vec![
                Phase {
                    percent: 5.0,
                    soak_seconds: 600,
                },
                Phase {
                    percent: 25.0,
                    soak_seconds: 1800,
                },
                Phase {
                    percent: 100.0,
                    soak_seconds: 0,
                },
            ],
            gates: Gates {
                max_install_failure_rate: Some(0.05),
                max_error_rate: Some(0.01),
                max_p99_latency_ms: Some(50.0),
                max_psi: Some(0.2),
                min_mean_confidence: Some(0.6),
                min_reporting_devices: 3,
                min_requests: 0,
            },
            on_gate_failure: on_fail,
        }
    }

    fn healthy() -> PhaseHealth {
        PhaseHealth {
            devices: 10,
            reporting_devices: 10,
            installs: 10,
            install_failures: 0,
            requests: 1000,
            errors: 1,
            p99_ms: Some(20.0),
            psi: Some(0.05),
            mean_confidence: Some(0.9),
        }
    }

    #[test]
    fn phases_advance_only_after_soak_and_passing_gates() {
        let mut r = Rollout::new(
            "r".into(),
            "m".into(),
            "2.0.0".into(),
            spec(OnGateFailure::Pause),
            1000,
        );
        assert_eq!(r.tick(1599, &healthy()), None, "soak not over");
        let t = r.tick(1600, &healthy()).unwrap();
        assert_eq!(
            (t.from_phase, t.to_phase, r.status),
            (0, 1, Status::Running)
        );
        assert!(t.health.is_some());
        assert_eq!(r.tick(1600 + 1799, &healthy()), None);
        let mut few = healthy();
        few.reporting_devices = 2;
        assert_eq!(r.tick(1600 + 1800, &few), None, "too few devices reporting");
        r.tick(1600 + 1800, &healthy()).unwrap();
        assert_eq!(r.phase, 2);
        r.tick(3400, &healthy()).unwrap();
        assert_eq!(r.status, Status::Completed);
        assert_eq!(r.tick(9999, &healthy()), None);
    }

    #[test]
    fn each_gate_fails_the_phase_with_its_value_named() {
        type Edit = Box<dyn Fn(&mut PhaseHealth)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|h| h.install_failures = 2), "install failure rate"),
            (Box::new(|h| h.errors = 50), "error rate"),
            (Box::new(|h| h.p99_ms = Some(80.0)), "p99 latency 80.00"),
            (Box::new(|h| h.psi = Some(0.5)), "PSI 0.500"),
            (
                Box::new(|h| h.mean_confidence = Some(0.3)),
                "mean confidence 0.300",
            ),
        ];
        for (edit, says) in cases {
            for (policy, status) in [
                (OnGateFailure::Pause, Status::Paused),
                (OnGateFailure::Rollback, Status::RolledBack),
            ] {
                let mut r = Rollout::new("r".into(), "m".into(), "2".into(), spec(policy), 0);
                let mut h = healthy();
                edit(&mut h);
                let t = r.tick(10, &h).unwrap();
                assert_eq!(r.status, status);
                assert!(t.reason.contains(says), "{}", t.reason);
                assert_eq!(t.health, Some(h));
            }
        }
    }

    #[test]
    fn operators_pause_resume_abort_and_roll_back() {
        let mut r = Rollout::new(
            "r".into(),
            "m".into(),
            "2".into(),
            spec(OnGateFailure::Pause),
            0,
        );
        r.pause(5, "op").unwrap();
        assert_eq!(
            r.tick(10_000, &healthy()),
            None,
            "a paused rollout does not advance"
        );
        assert!(r.pause(6, "op").is_err());
        r.resume(10_000, "op").unwrap();
        assert_eq!(r.tick(10_599, &healthy()), None, "soak restarts on resume");
        assert!(r.tick(10_600, &healthy()).is_some());
        r.abort(10_700, "op").unwrap();
        assert!(r.resume(10_800, "op").is_err());
        assert!(r.delivers());
        r.rollback(10_900, "op").unwrap();
        assert!(!r.delivers());
        assert_eq!(r.transitions.len(), 5);
    }

    #[test]
    fn specs_are_checked() {
        let mut s = spec(OnGateFailure::Pause);
        s.phases[1].percent = 1.0;
        assert!(s.check().unwrap_err().contains("below the previous"));
        s.phases.clear();
        assert!(s.check().is_err());
        let mut s = spec(OnGateFailure::Pause);
        s.gates.max_error_rate = Some(2.0);
        assert!(s.check().unwrap_err().contains("max_error_rate"));
        let json = r#"{"bundle":"sha256:ab","selector":"hw=x","phases":[{"percent":5,"soak_seconds":600},{"percent":100}],
                      "gates":{"max_error_rate":0.01,"min_reporting_devices":3},"on_gate_failure":"rollback"}"#;
        let s: RolloutSpec = serde_json::from_str(json).unwrap();
        s.check().unwrap();
        assert_eq!(s.on_gate_failure, OnGateFailure::Rollback);
        assert!(
            serde_json::from_str::<RolloutSpec>(r#"{"bundle":"x","phases":[],"typo":1}"#).is_err()
        );
    }

    #[test]
    fn no_verdict_on_model_signals_before_enough_predictions() {
        let gates = Gates {
            max_psi: Some(0.2),
            min_reporting_devices: 1,
            min_requests: 100,
            ..Default::default()
        };
        let mut h = PhaseHealth {
            devices: 1,
            reporting_devices: 1,
            requests: 19,
            psi: Some(1.3),
            ..Default::default()
        };
        assert!(matches!(evaluate(&gates, &h), GateVerdict::Wait(m) if m.contains("19 of 100")));
        h.requests = 100;
        assert!(matches!(evaluate(&gates, &h), GateVerdict::Fail(m) if m.contains("PSI")));
    }

    proptest! {
        /// Whatever the health sequence, a rollout never skips a phase, never advances before its
        /// soak, never advances on a failing gate, and ends Completed only from the last phase.
        #[test]
        fn invariants_hold_for_any_health_sequence(
            steps in proptest::collection::vec((0u64..2000, 0u64..12, 0u64..40, 0u64..30, proptest::bool::ANY), 1..60)
        ) {
            let mut r = Rollout::new("r".into(), "m".into(), "2".into(), spec(OnGateFailure::Pause), 0);
            let mut now = 0;
            for (dt, reporting, errors, p99, resume) in steps {
                now += dt;
                let mut h = healthy();
                h.reporting_devices = reporting;
                h.errors = errors;
                h.p99_ms = Some(p99 as f64 * 2.0);
                let before = r.clone();
                if let Some(t) = r.tick(now, &h) {
                    let verdict = evaluate(&before.spec.gates, &h);
                    match t.to_status {
                        Status::Running => {
                            prop_assert_eq!(t.to_phase, before.phase + 1);
                            prop_assert_eq!(verdict, GateVerdict::Pass);
                            prop_assert!(now >= before.phase_started + before.spec.phases[before.phase].soak_seconds);
                        }
                        Status::Completed => {
                            prop_assert_eq!(before.phase, before.spec.phases.len() - 1);
                            prop_assert_eq!(verdict, GateVerdict::Pass);
                        }
                        Status::Paused => prop_assert!(matches!(verdict, GateVerdict::Fail(_))),
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                if resume && r.status == Status::Paused {
                    r.resume(now, "op").unwrap();
                }
            }
        }
    }
}
