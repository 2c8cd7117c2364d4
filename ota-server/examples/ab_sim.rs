//! The A/B statistics by simulation (`cargo run --release -p ota-server --example ab_sim --
//! [RUNS]`): over RUNS simulated A/A experiments (accuracy 0.94 in both arms, a look after every
//! window of 50 labels per arm, at most 100 looks) the share the always-valid test
//! (`ota_server::experiment`) declares different, beside a fixed-horizon z-test peeked at the
//! same looks; then with a real difference (0.95 against 0.93) its power at the maximum
//! duration and the median labels per arm to a decision. Prints one JSON object.

use ota_server::experiment::{simulate_bernoulli, Arm, Better, Spec, SplitMix, Verdict};

fn main() {
    let runs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let spec = Spec {
        alpha: 0.05,
        tau: 0.02,
        min_samples: 100,
        better: Better::Higher,
    };
    let (window, looks) = (50u64, 100u64);
    let mut rng = SplitMix(0x5eed_a0a0);
    let always_valid = (0..runs)
        .filter(|_| simulate_bernoulli(spec, 0.94, 0.94, window, looks, &mut rng).is_some())
        .count() as f64
        / runs as f64;
    // the naive way: a two-proportion z-test at 1.96, looked at after every window
    let mut rng = SplitMix(0x5eed_a0a0);
    let peeked = (0..runs)
        .filter(|_| {
            let (mut a, mut b) = (Arm::default(), Arm::default());
            (0..looks).any(|_| {
                for _ in 0..window {
                    a.observe(f64::from(u8::from(rng.uniform() < 0.94)));
                    b.observe(f64::from(u8::from(rng.uniform() < 0.94)));
                }
                let s = (a.variance() / a.n as f64 + b.variance() / b.n as f64).sqrt();
                a.n >= spec.min_samples && s > 0.0 && ((b.mean() - a.mean()) / s).abs() > 1.96
            })
        })
        .count() as f64
        / runs as f64;
    let mut rng = SplitMix(7);
    let mut decided: Vec<u64> = Vec::new();
    let (mut better, mut worse) = (0u64, 0u64);
    for _ in 0..runs {
        match simulate_bernoulli(spec, 0.93, 0.95, window, looks, &mut rng) {
            Some((k, Verdict::CandidateBetter)) => {
                better += 1;
                decided.push(k * window);
            }
            Some((k, _)) => {
                worse += 1;
                decided.push(k * window);
            }
            None => {}
        }
    }
    decided.sort();
    let median = decided.get(decided.len() / 2).copied();
    let se = (spec.alpha * (1.0 - spec.alpha) / runs as f64).sqrt();
    println!(
        "{}",
        serde_json::json!({
            "runs": runs, "alpha": spec.alpha, "tau": spec.tau,
            "window_labels_per_arm": window, "max_looks": looks,
            "a_a_false_positive_rate": always_valid,
            "a_a_binomial_se": se,
            "a_a_naive_z_test_peeked_every_window": peeked,
            "difference_0_95_vs_0_93": {
                "power_at_max_duration": better as f64 / runs as f64,
                "decided_wrong_way": worse,
                "median_labels_per_arm_to_decision": median,
            }
        })
    );
}
