//! What a shadow costs the answered requests: one app thread asks the agent's model host for
//! predictions, in a closed loop or with a pause after each answer (a camera's frame gap), in
//! alternating blocks with a shadow of the same size running beside the model (every request
//! mirrored, within its CPU budget) and without one, in the same run; answered latency p50/p99
//! per condition, and the CPU the shadow worker thread used against its budget (from
//! /proc/self/task/*/stat).
//!
//!     cargo run --release -p device-agent --example shadow_overhead -- \
//!         [MODEL=digits|mobilenetv2] [REQUESTS_PER_BLOCK] [BLOCKS] [BUDGET_CORES] [GAP_MS]
//!
//! Prints one JSON line. `bench/shadow.sh` runs it for both sample models.

use std::sync::Arc;
use std::time::{Duration, Instant};

use device_agent::host::ModelHost;
use device_agent::shadow::Shadow;
use device_agent::slots::SlotRef;
use edge_fleet_kit::fixtures::{pack_sample, test_rows};
use edge_fleet_kit::keys::FleetKeys;
use edge_runtime::{LoadOptions, Model, PredictOptions, Tensor};
use serde_json::json;

/// CPU seconds (user + system) of this process's threads named `name`.
fn thread_cpu(name: &str) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // fields after the command's closing parenthesis: state is field 3, utime 14, stime 15
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let get = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total += get(11) + get(12);
    }
    total as f64 / ticks
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "digits".into());
    let per_block: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(400);
    let blocks: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let budget: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0.5);
    let gap_ms: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0.0);
    let gap = Duration::from_secs_f64(gap_ms / 1e3);
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = FleetKeys::create(dir.path()).expect("keys");
    let bundle = pack_sample(&name, &keys.signer).expect("pack the sample model");
    let trust = device_agent::core::read_trust(&keys.trust, Some(&keys.root_pub)).expect("trust");
    let mut options = LoadOptions::default();
    options.engine.threads = Some(1);
    let load = || Arc::new(Model::load(&bundle, &trust, &options).expect("load"));
    let (active, candidate) = (load(), load());
    let input: Tensor = if name == "digits" {
        let rows = test_rows();
        Tensor::f32(
            vec![1, 1, 8, 8],
            rows.to_f64_vec()[..64].iter().map(|v| *v as f32).collect(),
        )
    } else {
        let path = edge_fleet_kit::binaries::workspace()
            .join("models")
            .join(&name)
            .join("ref_input.npy");
        let all = edge_runtime::npy::read(std::fs::File::open(path).expect("ref_input"), 1 << 30)
            .expect("npy");
        let per: usize = all.shape[1..].iter().product();
        let mut shape = all.shape.clone();
        shape[0] = 1;
        Tensor::f32(
            shape,
            all.to_f64_vec()[..per].iter().map(|v| *v as f32).collect(),
        )
    };
    let host = ModelHost::new(Default::default());
    host.activate(active.clone());
    let slot = SlotRef {
        version: candidate.model_ref().version.clone(),
        sha256: "bench".into(),
    };
    // warm up both models
    for _ in 0..20 {
        let _ = active.predict(vec![input.clone()]);
        let _ = candidate.predict(vec![input.clone()]);
    }
    let mut off = Vec::new();
    let mut on = Vec::new();
    let (mut on_wall, mut shadow_cpu) = (Duration::ZERO, 0.0);
    let mut skipped = 0u64;
    let mirrored_before = candidate.stats().requests;
    for block in 0..blocks {
        let shadowing = block % 2 == 1;
        if shadowing {
            host.set_shadow(
                &active.model_ref().model,
                Shadow::new(
                    candidate.clone(),
                    slot.clone(),
                    0,
                    1_000_000,
                    (budget * 1000.0) as u32,
                ),
            );
        }
        let cpu_before = thread_cpu("shadow");
        let start = Instant::now();
        for _ in 0..per_block {
            let t = Instant::now();
            host.predict(
                &active.model_ref().model,
                vec![input.clone()],
                &PredictOptions::default(),
            )
            .expect("predict");
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if shadowing {
                on.push(ms)
            } else {
                off.push(ms)
            }
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
        }
        if shadowing {
            // the shadow's queue drains before the block is closed: its CPU counts in full
            std::thread::sleep(Duration::from_millis(50));
            on_wall += start.elapsed();
            shadow_cpu += thread_cpu("shadow") - cpu_before;
            if let Some(s) = host.remove_shadow(&active.model_ref().model) {
                let a = s.take();
                skipped += a.skipped_budget + a.skipped_busy;
            }
        }
    }
    off.sort_by(f64::total_cmp);
    on.sort_by(f64::total_cmp);
    let mirrored = candidate.stats().requests - mirrored_before;
    let (p50_off, p99_off) = (quantile(&off, 0.5), quantile(&off, 0.99));
    let (p50_on, p99_on) = (quantile(&on, 0.5), quantile(&on, 0.99));
    let cores = shadow_cpu / on_wall.as_secs_f64();
    // what the bucket allows: the budget, one burst per shadow started (one per block here),
    // and the 10 ms resolution of the kernel's per-thread CPU counters, per block
    let blocks_on = (blocks / 2) as f64;
    let allowed = budget + blocks_on * (0.1 + 0.01) / on_wall.as_secs_f64();
    println!(
        "{}",
        json!({
            "model": name,
            "gap_ms": gap_ms,
            "requests_per_condition": off.len(),
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "answered_p50_ms": {"shadow_off": p50_off, "shadow_on": p50_on, "ratio": p50_on / p50_off},
            "answered_p99_ms": {"shadow_off": p99_off, "shadow_on": p99_on, "ratio": p99_on / p99_off},
            "shadow": {
                "budget_cores": budget,
                "cpu_cores_used": cores,
                "allowed_cores": allowed,
                "within_budget": cores <= allowed,
                "mirrored": mirrored,
                "skipped": skipped,
            },
        })
    );
}
