//! The statistics of A/B experiment phases (issue 27): an always-valid comparison of two arms,
//! the incumbent (A) and the candidate (B), on one metric (accuracy, error rate, mean reward,
//! latency), that may be looked at after every telemetry window however often the windows come.
//!
//! It is the mixture sequential probability ratio test (mSPRT) of Johari, Koomen, Pekelis and
//! Walsh ("Peeking at A/B tests", KDD 2017), the test behind Optimizely's always-valid p-values:
//! the difference of the arms' means, `θ̂ = mean_B − mean_A`, with variance
//! `s² = var_A/n_A + var_B/n_B`, against `H0: θ = 0`, mixing the alternative over
//! `θ ~ N(0, τ²)`:
//!
//! ```text
//! Λ = sqrt(s² / (s² + τ²)) · exp(θ̂² τ² / (2 s² (s² + τ²)))
//! ```
//!
//! The always-valid p-value is the running minimum of `1/Λ`; the test decides when it reaches
//! α. The set of `θ` the same ratio does not reject is the confidence sequence (Howard, Ramdas,
//! McAuliffe and Sekhon 2021, normal mixture): `θ̂ ± sqrt(s²(s²+τ²)/τ² · (2 ln(1/α) +
//! ln((s²+τ²)/s²)))`, which narrows as samples arrive and holds at every look at once.
//! `τ` is the effect size the experiment cares about (a larger τ spends its power on large
//! effects). Exact for Gaussian data with known variance; with the variance estimated and
//! Bernoulli metrics it is checked by simulation (the tests below, and `examples/ab_sim.rs`
//! for the figures in docs/benchmarks.md).

use serde::{Deserialize, Serialize};

/// One arm's samples of the metric, as sums (so windows from many devices merge by addition).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// Samples.
    pub n: u64,
    /// Sum of the samples.
    pub sum: f64,
    /// Sum of their squares.
    pub sum_sq: f64,
}

impl Arm {
    /// One sample.
    pub fn observe(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sum_sq += x * x;
    }

    /// Another arm's samples added (a window, a device).
    pub fn merge(&mut self, other: &Arm) {
        self.n += other.n;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
    }

    /// The mean (0 without samples).
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    /// The sample variance (0 below two samples).
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        ((self.sum_sq - self.sum * self.sum / n) / (n - 1.0)).max(0.0)
    }
}

/// Which way is better for the metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Accuracy, reward.
    Higher,
    /// Error rate, latency, MAE.
    Lower,
}

/// How an experiment is judged.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The false-positive rate the test keeps, over every look together.
    pub alpha: f64,
    /// The mixing standard deviation: the size of difference the experiment is tuned to find,
    /// in the metric's units (e.g. 0.02 for two points of accuracy).
    pub tau: f64,
    /// Samples each arm needs before a look counts (the variance estimate must mean something).
    pub min_samples: u64,
    /// Which way is better.
    pub better: Better,
}

/// What a look concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Not enough evidence yet.
    Continue,
    /// The candidate is better on the metric.
    CandidateBetter,
    /// The candidate is worse on the metric.
    CandidateWorse,
}

/// One look at the arms: the estimate, its confidence sequence, the always-valid p-value and
/// the verdict (what the decision log records).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Look {
    /// `mean_B − mean_A`.
    pub estimate: f64,
    /// The confidence sequence at this look: `[low, high]` (infinite before `min_samples`).
    pub interval: (f64, f64),
    /// The always-valid p-value so far (running minimum over looks).
    pub p_value: f64,
    /// Samples of A and B.
    pub samples: (u64, u64),
    /// The verdict.
    pub verdict: Verdict,
}

/// A running experiment: its spec and the always-valid p-value so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// How it is judged.
    pub spec: Spec,
    /// The running minimum of `1/Λ` over the looks so far.
    pub p_value: f64,
}

impl Experiment {
    /// A new experiment; `Err` names a spec value out of range.
    pub fn new(spec: Spec) -> Result<Experiment, String> {
        if !(spec.alpha > 0.0 && spec.alpha < 1.0) {
            return Err(format!("alpha {} must be in (0, 1)", spec.alpha));
        }
        if !(spec.tau > 0.0 && spec.tau.is_finite()) {
            return Err(format!("tau {} must be positive", spec.tau));
        }
        Ok(Experiment { spec, p_value: 1.0 })
    }

    /// Looks at the arms' samples so far (cumulative, not per window). Once the p-value has
    /// reached α the verdict stays (the test has stopped).
    pub fn look(&mut self, a: &Arm, b: &Arm) -> Look {
        let estimate = b.mean() - a.mean();
        let samples = (a.n, b.n);
        let min = self.spec.min_samples.max(2);
        if a.n < min || b.n < min {
            return Look {
                estimate,
                interval: (f64::NEG_INFINITY, f64::INFINITY),
                p_value: self.p_value,
                samples,
                verdict: Continue,
            };
        }
        // a variance of exactly zero (every sample alike) would make any difference certain
        let s2 = (a.variance() / a.n as f64 + b.variance() / b.n as f64).max(1e-12);
        let t2 = self.spec.tau * self.spec.tau;
        let log_lambda =
            0.5 * (s2 / (s2 + t2)).ln() + estimate * estimate * t2 / (2.0 * s2 * (s2 + t2));
        self.p_value = self.p_value.min((-log_lambda).exp().min(1.0));
        let radius = (s2 * (s2 + t2) / t2
            * (2.0 * (1.0 / self.spec.alpha).ln() + ((s2 + t2) / s2).ln()))
        .sqrt();
        let verdict = if self.p_value > self.spec.alpha {
            Continue
        } else {
            match (estimate > 0.0, self.spec.better) {
                (true, Better::Higher) | (false, Better::Lower) => CandidateBetter,
                _ => CandidateWorse,
            }
        };
        Look {
            estimate,
            interval: (estimate - radius, estimate + radius),
            p_value: self.p_value,
            samples,
            verdict,
        }
    }
}

use Verdict::{CandidateBetter, CandidateWorse, Continue};

/// A small seeded generator for simulations (splitmix64): the A/A and power checks replay
/// exactly from their seed.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// A uniform number in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One simulated experiment on a Bernoulli metric (accuracy): arms with true rates `p_a` and
/// `p_b`, `window` labelled samples per arm between looks, at most `looks` looks. The look that
/// decided (1-based) and its verdict, or `None` if it ran to the end undecided.
pub fn simulate_bernoulli(
    spec: Spec,
    p_a: f64,
    p_b: f64,
    window: u64,
    looks: u64,
    rng: &mut SplitMix,
) -> Option<(u64, Verdict)> {
    let mut e = Experiment::new(spec).expect("a valid spec");
    let (mut a, mut b) = (Arm::default(), Arm::default());
    for k in 1..=looks {
        for _ in 0..window {
            a.observe(f64::from(u8::from(rng.uniform() < p_a)));
            b.observe(f64::from(u8::from(rng.uniform() < p_b)));
        }
        let look = e.look(&a, &b);
        if look.verdict != Continue {
            return Some((k, look.verdict));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accuracy_spec() -> Spec {
        Spec {
            alpha: 0.05,
            tau: 0.02,
            min_samples: 100,
            better: Better::Higher,
        }
    }

    /// 1,000 A/A experiments (accuracy 0.94 in both arms), a look after every window of 50
    /// labels per arm, 100 looks: the share that declares a difference stays within α plus
    /// three binomial standard errors, although every experiment was looked at 100 times.
    #[test]
    fn a_a_experiments_looked_at_every_window_keep_alpha() {
        let mut rng = SplitMix(0x5eed_a0a0);
        let runs = 1000;
        let false_positives = (0..runs)
            .filter(|_| {
                simulate_bernoulli(accuracy_spec(), 0.94, 0.94, 50, 100, &mut rng).is_some()
            })
            .count();
        let rate = false_positives as f64 / runs as f64;
        let bound = 0.05 + 3.0 * (0.05f64 * 0.95 / runs as f64).sqrt();
        assert!(rate <= bound, "false-positive rate {rate} over {bound}");
    }

    /// A real difference (0.95 against 0.93) is found, for the candidate, in most experiments
    /// before 5,000 labels per arm; the wrong way almost never.
    #[test]
    fn a_real_difference_is_found_the_right_way() {
        let mut rng = SplitMix(7);
        let runs = 300;
        let outcomes: Vec<_> = (0..runs)
            .map(|_| simulate_bernoulli(accuracy_spec(), 0.93, 0.95, 50, 100, &mut rng))
            .collect();
        let better = outcomes
            .iter()
            .filter(|o| matches!(o, Some((_, CandidateBetter))))
            .count();
        let worse = outcomes
            .iter()
            .filter(|o| matches!(o, Some((_, CandidateWorse))))
            .count();
        assert!(better as f64 >= 0.8 * runs as f64, "power {better}/{runs}");
        assert!(worse <= 2, "{worse} decisions the wrong way");
        // a worse candidate on a lower-is-better metric: error rate 0.07 against 0.05
        let spec = Spec {
            better: Better::Lower,
            ..accuracy_spec()
        };
        let worse_candidate = (0..100)
            .filter(|_| {
                matches!(
                    simulate_bernoulli(spec, 0.05, 0.07, 50, 100, &mut rng),
                    Some((_, CandidateWorse))
                )
            })
            .count();
        assert!(worse_candidate >= 80, "{worse_candidate}/100");
    }

    #[test]
    fn the_interval_narrows_and_covers_the_estimate() {
        let mut e = Experiment::new(accuracy_spec()).unwrap();
        let mut rng = SplitMix(3);
        let (mut a, mut b) = (Arm::default(), Arm::default());
        let mut widths = Vec::new();
        for _ in 0..20 {
            for _ in 0..200 {
                a.observe(f64::from(u8::from(rng.uniform() < 0.9)));
                b.observe(f64::from(u8::from(rng.uniform() < 0.9)));
            }
            let look = e.look(&a, &b);
            assert!(look.interval.0 <= look.estimate && look.estimate <= look.interval.1);
            widths.push(look.interval.1 - look.interval.0);
        }
        assert!(widths.last() < widths.first(), "{widths:?}");
        let before = e.look(&Arm::default(), &Arm::default());
        assert_eq!(before.verdict, Continue, "no samples, no verdict");
        assert!(Experiment::new(Spec {
            alpha: 0.0,
            ..accuracy_spec()
        })
        .is_err());
    }

    #[test]
    fn arms_merge_by_addition() {
        let (mut x, mut y, mut all) = (Arm::default(), Arm::default(), Arm::default());
        for (i, v) in [1.0, 2.0, 4.0, 8.0].iter().enumerate() {
            if i % 2 == 0 {
                x.observe(*v)
            } else {
                y.observe(*v)
            }
            all.observe(*v);
        }
        x.merge(&y);
        assert_eq!(x, all);
        assert!((all.mean() - 3.75).abs() < 1e-12);
        assert!((all.variance() - 9.583_333_333_333_334).abs() < 1e-9);
    }
}
