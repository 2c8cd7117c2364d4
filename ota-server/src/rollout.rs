//! The rollout state machine (DESIGN decision 7), pure: no clock, no store, no network. The
//! engine feeds it the time and the health of the current phase's devices; it answers with the
//! transition to make, which the engine stores with the gate values that caused it. The data
//! (spec, status, transitions, health) is the REST contract's, `edge_protocol::rest`.
//!
//! A phase advances only when its soak time has passed **and** its gates pass on telemetry
//! from enough of its devices for the new version. A failing gate pauses the rollout or rolls
//! it back (per `on_gate_failure`). Operators can pause, resume, abort and roll back.

pub use edge_protocol::rest::{
    ExperimentLook, Gates, Inconclusive, OnGateFailure, Phase, PhaseHealth, Rollout, RolloutSpec,
    RolloutStatus as Status, ShadowHealth, Transition,
};

/// Looks kept per rollout (past it, every other older one is dropped).
pub const MAX_LOOKS: usize = 240;

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

/// Judges a phase's health against the gates: a shadow phase (its health has `shadow`) on the
/// candidate's shadow runs, the others on the answers it served and the apps' feedback.
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
    if let Some(shadow) = &h.shadow {
        return evaluate_shadow(gates, h, shadow);
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
    evaluate_feedback(gates, h)
}

/// The gates on the apps' ground truth: accuracy and MAE, once `min_labels` arrived.
fn evaluate_feedback(gates: &Gates, h: &PhaseHealth) -> GateVerdict {
    let f = h.feedback.clone().unwrap_or_default();
    if gates.min_accuracy.is_some() && f.labelled < gates.min_labels {
        return GateVerdict::Wait(format!(
            "{} of {} labels received",
            f.labelled, gates.min_labels
        ));
    }
    if gates.max_mae.is_some() && f.values < gates.min_labels {
        return GateVerdict::Wait(format!(
            "{} of {} true values received",
            f.values, gates.min_labels
        ));
    }
    if let (Some(min), Some(a)) = (gates.min_accuracy, f.accuracy) {
        if a < min {
            return GateVerdict::Fail(format!(
                "accuracy {a:.4} on {} labels under {min}",
                f.labelled
            ));
        }
    }
    if let (Some(max), Some(mae)) = (gates.max_mae, f.mae) {
        if mae > max {
            return GateVerdict::Fail(format!("MAE {mae:.4} on {} values over {max}", f.values));
        }
    }
    GateVerdict::Pass
}

/// A shadow phase's gates (after the install gate every phase has): enough devices and
/// mirrored requests, then the candidate's error rate, its own p99 and its agreement with the
/// active model.
fn evaluate_shadow(gates: &Gates, h: &PhaseHealth, s: &ShadowHealth) -> GateVerdict {
    let needed = gates.min_reporting_devices.min(h.devices);
    if s.reporting_devices < needed {
        return GateVerdict::Wait(format!(
            "{} of {needed} devices reporting shadow runs",
            s.reporting_devices
        ));
    }
    if s.requests < gates.min_shadow_requests.max(1) {
        return GateVerdict::Wait(format!(
            "{} of {} shadow requests run",
            s.requests,
            gates.min_shadow_requests.max(1)
        ));
    }
    if let Some(max) = gates.max_error_rate {
        let rate = s.errors as f64 / s.requests as f64;
        if rate > max {
            return GateVerdict::Fail(format!("shadow error rate {rate:.4} over {max}"));
        }
    }
    if let (Some(max), Some(p99)) = (gates.max_shadow_p99_ms, s.p99_ms) {
        if p99 > max {
            return GateVerdict::Fail(format!("shadow p99 latency {p99:.2} ms over {max} ms"));
        }
    }
    if let Some(min) = gates.min_shadow_agreement {
        match s.agreement {
            Some(a) if a < min => {
                return GateVerdict::Fail(format!(
                    "shadow agreement {a:.4} on {} compared answers under {min}",
                    s.compared
                ))
            }
            Some(_) => {}
            None => return GateVerdict::Wait("no shadow answers compared yet".into()),
        }
    }
    GateVerdict::Pass
}

/// The decision log's account of a look: estimate, interval, p-value and samples.
pub fn experiment_summary(l: &edge_protocol::rest::ExperimentLook) -> String {
    let interval = l
        .interval
        .map_or("-".to_string(), |(lo, hi)| format!("[{lo:+.4}, {hi:+.4}]"));
    format!(
        "{:?} B−A {:+.4}, confidence sequence {interval}, p {:.4}, samples A {} / B {}",
        l.metric, l.estimate, l.p_value, l.incumbent.samples, l.candidate.samples
    )
}

/// The rollout state machine over the stored [`Rollout`]: engine ticks and operator actions,
/// each recording its [`Transition`].
pub trait Lifecycle {
    /// Moves to `to_phase` / `to_status` at `now` and records why.
    fn go(
        &mut self,
        now: u64,
        to_phase: usize,
        to_status: Status,
        reason: String,
        health: Option<PhaseHealth>,
    ) -> Transition;
    /// One engine step: with the current phase's health at `now`, advance, fail or wait.
    fn tick(&mut self, now: u64, health: &PhaseHealth) -> Option<Transition>;
    /// To the next phase, or completed after the last one.
    fn advance(&mut self, now: u64, reason: String, health: &PhaseHealth) -> Option<Transition>;
    /// Keeps an experiment's look when its samples differ from the last one's (older looks are
    /// thinned past [`MAX_LOOKS`]); true if it was kept.
    fn record_look(&mut self, look: ExperimentLook) -> bool;
    /// Operator: pause a running rollout.
    fn pause(&mut self, now: u64, who: &str) -> Result<Transition, String>;
    /// Operator: resume a paused rollout (the phase's soak starts over).
    fn resume(&mut self, now: u64, who: &str) -> Result<Transition, String>;
    /// Operator: stop for good; devices keep what they have.
    fn abort(&mut self, now: u64, who: &str) -> Result<Transition, String>;
    /// Operator: send devices back to their previous version.
    fn rollback(&mut self, now: u64, who: &str) -> Result<Transition, String>;
}

impl Lifecycle for Rollout {
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

    fn tick(&mut self, now: u64, health: &PhaseHealth) -> Option<Transition> {
        if self.status != Status::Running {
            return None;
        }
        let verdict = evaluate(&self.spec.gates, health);
        if let GateVerdict::Fail(reason) = verdict {
            let to = match self.spec.on_gate_failure {
                OnGateFailure::Pause => Status::Paused,
                OnGateFailure::Rollback => Status::RolledBack,
            };
            return Some(self.go(
                now,
                self.phase,
                to,
                format!("gate failed in phase {}: {reason}", self.phase),
                Some(health.clone()),
            ));
        }
        let soaked = now
            >= self
                .phase_started
                .saturating_add(self.spec.phases[self.phase].soak_seconds);
        let reason = match self.current_phase().experiment.clone() {
            // an experiment phase: the sequential test decides, within its maximum duration
            Some(spec) => {
                let look = health.experiment.as_ref()?;
                let summary = experiment_summary(look);
                let expired = now >= self.phase_started.saturating_add(spec.max_seconds);
                let phase = self.phase;
                let roll_back = |why: String| (Status::RolledBack, why);
                let decided = match look.verdict.as_str() {
                    "candidate_worse" => Some(roll_back(format!(
                        "experiment in phase {phase}: the candidate is worse ({summary})"
                    ))),
                    "candidate_better" if verdict == GateVerdict::Pass && soaked => {
                        return self.advance(
                            now,
                            format!(
                                "experiment in phase {phase}: the candidate is better ({summary})"
                            ),
                            health,
                        );
                    }
                    _ if expired => match spec.on_inconclusive {
                        Inconclusive::Promote => {
                            return self.advance(
                                now,
                                format!(
                                    "experiment in phase {phase} undecided after {} s; promoted \
                                     as the spec says ({summary})",
                                    spec.max_seconds
                                ),
                                health,
                            )
                        }
                        Inconclusive::Rollback => Some(roll_back(format!(
                            "experiment in phase {phase} undecided after {} s; rolled back as \
                             the spec says ({summary})",
                            spec.max_seconds
                        ))),
                    },
                    _ => None,
                };
                let (to, why) = decided?;
                return Some(self.go(now, phase, to, why, Some(health.clone())));
            }
            None => {
                if verdict != GateVerdict::Pass || !soaked {
                    return None;
                }
                format!(
                    "phase {} passed its gates after {} s of soak",
                    self.phase,
                    now - self.phase_started
                )
            }
        };
        self.advance(now, reason, health)
    }

    fn record_look(&mut self, look: ExperimentLook) -> bool {
        let same = self.looks.last().is_some_and(|l| {
            l.phase == look.phase
                && l.incumbent.samples == look.incumbent.samples
                && l.candidate.samples == look.candidate.samples
        });
        if same {
            return false;
        }
        if self.looks.len() >= MAX_LOOKS {
            let mut i = 0;
            self.looks.retain(|_| {
                i += 1;
                i % 2 == 0
            });
        }
        self.looks.push(look);
        true
    }

    fn advance(&mut self, now: u64, reason: String, health: &PhaseHealth) -> Option<Transition> {
        let (to_phase, to_status) = if self.phase + 1 < self.spec.phases.len() {
            (self.phase + 1, Status::Running)
        } else {
            (self.phase, Status::Completed)
        };
        Some(self.go(now, to_phase, to_status, reason, Some(health.clone())))
    }

    fn pause(&mut self, now: u64, who: &str) -> Result<Transition, String> {
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

    fn resume(&mut self, now: u64, who: &str) -> Result<Transition, String> {
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

    fn abort(&mut self, now: u64, who: &str) -> Result<Transition, String> {
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

    fn rollback(&mut self, now: u64, who: &str) -> Result<Transition, String> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(on_fail: OnGateFailure) -> RolloutSpec {
        RolloutSpec {
            bundle: "sha256:00".into(),
            selector: Default::default(),
            phases: vec![
                Phase::canary(5.0, 600),
                Phase::canary(25.0, 1800),
                Phase::canary(100.0, 0),
            ],
            gates: Gates {
                max_install_failure_rate: Some(0.05),
                max_error_rate: Some(0.01),
                max_p99_latency_ms: Some(50.0),
                max_psi: Some(0.2),
                min_mean_confidence: Some(0.6),
                min_reporting_devices: 3,
                min_requests: 0,
                ..Default::default()
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
            ..Default::default()
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

    fn shadow_health(requests: u64, agreement: f64) -> PhaseHealth {
        PhaseHealth {
            devices: 4,
            installs: 4,
            shadow: Some(ShadowHealth {
                reporting_devices: 4,
                requests,
                compared: requests,
                agreement: Some(agreement),
                p99_ms: Some(3.0),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn shadow_phases_are_judged_on_their_shadow_runs() {
        let gates = Gates {
            min_shadow_agreement: Some(0.9),
            max_shadow_p99_ms: Some(10.0),
            min_shadow_requests: 100,
            min_reporting_devices: 4,
            ..Default::default()
        };
        assert!(matches!(
            evaluate(&gates, &shadow_health(99, 0.1)),
            GateVerdict::Wait(m) if m.contains("99 of 100 shadow requests")
        ));
        assert!(matches!(
            evaluate(&gates, &shadow_health(100, 0.5)),
            GateVerdict::Fail(m) if m.contains("shadow agreement 0.5000")
        ));
        assert_eq!(
            evaluate(&gates, &shadow_health(100, 0.95)),
            GateVerdict::Pass
        );
        let mut slow = shadow_health(100, 0.95);
        slow.shadow.as_mut().unwrap().p99_ms = Some(25.0);
        assert!(
            matches!(evaluate(&gates, &slow), GateVerdict::Fail(m) if m.contains("shadow p99"))
        );
        let mut few = shadow_health(100, 0.95);
        few.shadow.as_mut().unwrap().reporting_devices = 3;
        assert!(matches!(evaluate(&gates, &few), GateVerdict::Wait(_)));
        // the served-answer gates do not judge a shadow phase (its candidate answered nothing)
        let strict = Gates {
            min_requests: 1000,
            ..gates.clone()
        };
        assert_eq!(
            evaluate(&strict, &shadow_health(100, 0.95)),
            GateVerdict::Pass
        );
    }

    #[test]
    fn feedback_gates_wait_for_labels_then_judge_accuracy_and_mae() {
        let gates = Gates {
            min_accuracy: Some(0.9),
            max_mae: Some(2.0),
            min_labels: 50,
            ..Default::default()
        };
        let mut h = healthy();
        h.feedback = Some(edge_protocol::rest::FeedbackHealth {
            labelled: 49,
            accuracy: Some(0.5),
            values: 60,
            mae: Some(1.0),
            ..Default::default()
        });
        assert!(matches!(evaluate(&gates, &h), GateVerdict::Wait(m) if m.contains("49 of 50")));
        h.feedback.as_mut().unwrap().labelled = 50;
        assert!(
            matches!(evaluate(&gates, &h), GateVerdict::Fail(m) if m.contains("accuracy 0.5000"))
        );
        h.feedback.as_mut().unwrap().accuracy = Some(0.95);
        h.feedback.as_mut().unwrap().mae = Some(3.0);
        assert!(matches!(evaluate(&gates, &h), GateVerdict::Fail(m) if m.contains("MAE 3.0000")));
    }

    fn experiment_rollout(on_inconclusive: Inconclusive) -> Rollout {
        let mut s = spec(OnGateFailure::Pause);
        s.phases[0].experiment = Some(edge_protocol::rest::ExperimentPhase {
            metric: edge_protocol::rest::ExperimentMetric::Accuracy,
            alpha: 0.05,
            tau: 0.02,
            min_samples: 100,
            max_seconds: 3600,
            on_inconclusive,
        });
        s.phases[0].soak_seconds = 0;
        s.check().unwrap();
        Rollout::new("r".into(), "m".into(), "2".into(), s, 0)
    }

    fn with_look(verdict: &str) -> PhaseHealth {
        let mut h = healthy();
        h.experiment = Some(edge_protocol::rest::ExperimentLook {
            at: 0,
            phase: 0,
            metric: edge_protocol::rest::ExperimentMetric::Accuracy,
            incumbent: Default::default(),
            candidate: Default::default(),
            estimate: 0.02,
            interval: Some((0.01, 0.03)),
            p_value: 0.01,
            verdict: verdict.into(),
        });
        h
    }

    #[test]
    fn experiments_advance_roll_back_or_follow_the_spec_when_undecided() {
        let mut r = experiment_rollout(Inconclusive::Rollback);
        assert_eq!(
            r.tick(10, &with_look("continue")),
            None,
            "undecided, within time"
        );
        let t = r.tick(11, &with_look("candidate_better")).unwrap();
        assert_eq!((t.to_phase, r.status), (1, Status::Running));
        assert!(t.reason.contains("candidate is better") && t.reason.contains("p 0.0100"));

        let mut r = experiment_rollout(Inconclusive::Promote);
        let t = r.tick(20, &with_look("candidate_worse")).unwrap();
        assert_eq!(
            r.status,
            Status::RolledBack,
            "worse rolls back whatever on_gate_failure says"
        );
        assert!(t.reason.contains("candidate is worse"));

        let mut r = experiment_rollout(Inconclusive::Promote);
        let t = r.tick(3600, &with_look("continue")).unwrap();
        assert_eq!((t.to_phase, r.status), (1, Status::Running));
        assert!(t.reason.contains("promoted"));
        let mut r = experiment_rollout(Inconclusive::Rollback);
        r.tick(3600, &with_look("continue")).unwrap();
        assert_eq!(r.status, Status::RolledBack);

        // a failing gate still fails the phase, and "better" waits for the gates to pass
        let mut r = experiment_rollout(Inconclusive::Rollback);
        let mut bad = with_look("candidate_better");
        bad.errors = 500;
        r.tick(5, &bad).unwrap();
        assert_eq!(r.status, Status::Paused);
        let mut r = experiment_rollout(Inconclusive::Rollback);
        let mut waiting = with_look("candidate_better");
        waiting.reporting_devices = 0;
        assert_eq!(r.tick(5, &waiting), None);
    }

    #[test]
    fn phase_kinds_are_checked() {
        let mut s = spec(OnGateFailure::Pause);
        s.phases[2].shadow = Some(edge_protocol::rest::ShadowPhase {
            sample: 1.0,
            cpu_budget: 0.5,
        });
        assert!(s.check().unwrap_err().contains("last phase"));
        let mut s = spec(OnGateFailure::Pause);
        s.phases[0].shadow = Some(edge_protocol::rest::ShadowPhase {
            sample: 0.0,
            cpu_budget: 0.5,
        });
        assert!(s.check().unwrap_err().contains("shadow.sample"));
        let json = r#"{"bundle":"sha256:ab","phases":[{"percent":10,"shadow":{}},
            {"percent":50,"experiment":{"metric":"mean_reward","max_seconds":600}},{"percent":100}]}"#;
        let s: RolloutSpec = serde_json::from_str(json).unwrap();
        s.check().unwrap();
        assert_eq!(s.phases[0].shadow.as_ref().unwrap().cpu_budget, 0.5);
        assert_eq!(s.phases[1].experiment.as_ref().unwrap().alpha, 0.05);
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
