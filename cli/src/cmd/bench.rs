//! `edgectl bench`: load time (verify + optimize + self-test), first inference, latency
//! percentiles over many runs, throughput and peak RSS — the numbers users compare runtimes by.
//! MODEL is a bundle or any plain `.onnx` file (packed on the fly with a throwaway key). With
//! `--compare-ort` the same inputs also go through ONNX Runtime (`ort.rs`) in the same run, and
//! the report adds its figures, the latency ratio and the largest output difference.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use edge_pack::{onnx_graph, pack};
use edge_runtime::bundle::{self, VerifyPolicy};
use edge_runtime::engine::{EngineKind, EngineOptions};
use edge_runtime::trust::TrustRoot;
use edge_runtime::{LoadOptions, Model, Tensor};

use super::ort;
use crate::TrustArgs;

/// Arguments of `edgectl bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// A bundle (.efb), or a plain ONNX file (.onnx), packed on the fly with a throwaway key.
    model: PathBuf,
    /// The fleet trust root (bundles only).
    #[arg(long)]
    trust: Option<PathBuf>,
    /// Pin the root public key (bundles only).
    #[arg(long)]
    root: Option<PathBuf>,
    /// CAUTION: accept an expired bundle.
    #[arg(long)]
    ignore_expiry: bool,
    /// Intra-op threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Engine: auto (cuda, then gpu, then cpu), cpu, gpu (wgpu: Vulkan/Metal) or cuda. Default:
    /// the bundle's hint, else cpu. The report says which engine ran and why.
    #[arg(long)]
    engine: Option<EngineKind>,
    /// Timed runs (after the first).
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Input file for the first input (default: the bundle's first self-test vector, else
    /// seeded random data shaped by the model).
    #[arg(long)]
    input: Option<PathBuf>,
    /// The payload a plain ONNX file is packed to: `auto` (the optimized NNEF payload a device
    /// loads, else the ONNX file), `nnef` or `onnx` (the ONNX front end at load, as before).
    #[arg(long, default_value = "auto", value_parser = parse_payload)]
    payload: pack::PayloadChoice,
    /// Concrete shapes for inputs with symbolic dims: `NAME=1x3x224x224;NAME2=1x128`.
    #[arg(long)]
    shape: Option<String>,
    /// Also run ONNX Runtime (CPU, same threads, same inputs) and report the ratio and the
    /// largest output difference. Installs `onnxruntime` into a cache if Python lacks it.
    #[arg(long)]
    compare_ort: bool,
    /// Also run the CPU engine on the same inputs: its median latency and the largest output
    /// difference from the engine under test (for `--engine gpu|cuda|auto`).
    #[arg(long)]
    compare_cpu: bool,
    /// Also print where one run's time goes, per op kind in the optimized plan (cpu engine):
    /// milliseconds per run (median of the timed runs) and share, slowest first.
    #[arg(long)]
    profile: bool,
    /// Mark each timed run for an instruction counter (`../shared/armlab`, bench/aarch64.sh):
    /// `close(-(100000 + i))` before the first timed run and after each one, a call that fails
    /// with EBADF and does nothing else; the inputs are copied before the first mark.
    #[arg(long)]
    markers: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// armlab's marker `i` (see `edge_kernels::marker`).
fn mark(i: usize) {
    edge_runtime::engine::kernels::marker::mark(i as u32);
}

fn parse_payload(s: &str) -> Result<pack::PayloadChoice, String> {
    s.parse()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Median latency of a one-op graph (`Relu` on 16 floats) on the engine `options` pick: the fixed
/// cost per inference (dispatch, synchronization, copies), apart from the model's own work.
fn overhead_p50_ms(options: &LoadOptions, iterations: usize) -> Result<f64> {
    let onnx = onnx_graph::one_op_graph(16);
    let (bytes, trust) = pack::throwaway_bundle_for_onnx(
        &onnx,
        "one_op",
        &[],
        unix_now(),
        pack::PayloadChoice::Auto,
    )?;
    let model = Model::load(&bytes, &trust, options).context("loading the one-op graph")?;
    let x = Tensor {
        shape: vec![1, 16],
        data: edge_runtime::TensorData::F32(vec![0.5; 16]),
    };
    model.run(vec![x.clone()])?;
    let mut lat: Vec<f64> = (0..iterations.max(20))
        .map(|_| {
            let input = vec![x.clone()];
            let t = Instant::now();
            model.run(input).map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()?;
    lat.sort_by(f64::total_cmp);
    Ok(percentile(&lat, 0.5))
}

/// Peak resident set size of this process in KiB (Linux), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn is_onnx(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// The bundle bytes, the trust root and the policy to verify them with.
fn bundle_and_trust(
    args: &BenchArgs,
    bytes: Vec<u8>,
) -> Result<(Vec<u8>, TrustRoot, VerifyPolicy)> {
    if is_onnx(&args.model) {
        let shapes = match &args.shape {
            Some(s) => onnx_graph::parse_shapes(s).map_err(anyhow::Error::msg)?,
            None => Vec::new(),
        };
        let name = args
            .model
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model");
        let (bundle, trust) =
            pack::throwaway_bundle_for_onnx(&bytes, name, &shapes, unix_now(), args.payload)?;
        return Ok((bundle, trust, VerifyPolicy::default()));
    }
    if args.shape.is_some() {
        bail!("--shape is for plain .onnx files; a bundle's manifest fixes its input shapes");
    }
    let Some(trust) = &args.trust else {
        bail!("a bundle needs --trust TRUST.cbor (or pass a plain .onnx file)");
    };
    let trust_args = TrustArgs {
        trust: trust.clone(),
        root: args.root.clone(),
        ignore_expiry: args.ignore_expiry,
    };
    let trust = crate::trust_arg::load_trust(&trust_args)?;
    Ok((bytes, trust, crate::trust_arg::policy(&trust_args)))
}

fn bench_inputs(args: &BenchArgs, model: &Model) -> Result<Vec<Tensor>> {
    let specs = &model.manifest().inputs;
    let mut inputs: Vec<Tensor> = match model.manifest().self_test.vectors.first() {
        Some(v) if v.inputs.len() == specs.len() => v
            .inputs
            .iter()
            .map(|t| t.to_tensor().context("a self-test input does not decode"))
            .collect::<Result<_>>()?,
        _ => pack::synthetic_inputs(specs, 1),
    };
    if let Some(p) = &args.input {
        inputs[0] = crate::input::load(p, &specs[0])?;
    }
    Ok(inputs)
}

/// Runs `edgectl bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let bytes = std::fs::read(&args.model)
        .with_context(|| format!("cannot read {}", args.model.display()))?;
    let packing = Instant::now();
    let source = is_onnx(&args.model).then(|| bytes.clone());
    let (bundle_bytes, trust, policy) = bundle_and_trust(&args, bytes)?;
    // a plain .onnx is packed and signed here first: not part of a device's load (`load_ms`)
    let packing_ms = packing.elapsed().as_secs_f64() * 1e3;
    let t0 = Instant::now();
    let options = LoadOptions {
        verify: policy.clone(),
        engine: EngineOptions {
            threads: Some(args.threads),
            kind: args.engine,
        },
        ..Default::default()
    };
    // as `Model::load` does it: the payload's reader built while the bundle is verified
    let reader = edge_runtime::engine::PayloadReader::prefetch();
    let verified = bundle::verify_bytes(&bundle_bytes, &trust, &policy)
        .with_context(|| format!("cannot verify {}", args.model.display()))?;
    let verify_ms = t0.elapsed().as_secs_f64() * 1e3;
    let payload_format = verified.manifest().payload.format;
    let payload_bytes = verified.payload().len();
    // ONNX Runtime gets the very payload the signature covers, or, for an optimized payload,
    // the ONNX file it was translated from (its digest is the manifest's `source_sha256`)
    let payload = if !args.compare_ort {
        None
    } else if verified.manifest().payload.format == bundle::PayloadFormat::Onnx {
        Some(verified.payload().to_vec())
    } else if let Some(onnx) = source {
        Some(onnx)
    } else {
        bail!(
            "--compare-ort needs the ONNX graph, and this bundle carries the optimized (nnef) \
             payload: run it on the .onnx file the bundle was packed from"
        );
    };
    let model = Model::from_verified(verified, &options)
        .with_context(|| format!("cannot load {}", args.model.display()))?;
    drop(reader);
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    drop(bundle_bytes);

    let inputs = bench_inputs(&args, &model)?;
    let t1 = Instant::now();
    let outputs = model.run(inputs.clone())?;
    let first_ms = t1.elapsed().as_secs_f64() * 1e3;
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.iterations as u64)
    };
    let mut lat = Vec::with_capacity(args.iterations);
    // with markers, every copy is made before the first mark so that the marks bracket the
    // runs alone
    let mut copies: Vec<Vec<Tensor>> = if args.markers {
        (0..args.iterations).map(|_| inputs.clone()).collect()
    } else {
        Vec::new()
    };
    if args.markers {
        mark(0);
    }
    let total = Instant::now();
    for i in 0..args.iterations {
        // the copy an app would not make (its input is new each call) stays outside the timing
        let input = copies.pop().unwrap_or_else(|| inputs.clone());
        let t = Instant::now();
        model.predict(input)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        if args.markers {
            mark(i + 1);
        }
        bar.inc(1);
    }
    let total_s = total.elapsed().as_secs_f64();
    bar.finish_and_clear();
    lat.sort_by(f64::total_cmp);
    let batch = inputs[0].shape.first().copied().unwrap_or(1);
    let p50 = percentile(&lat, 0.5);
    let mut report = serde_json::json!({
        "model": model.model_ref().model,
        "version": model.model_ref().version,
        "engine": model.engine_name(),
        "payload": payload_format.name(),
        "payload_bytes": payload_bytes,
        "engine_requested": model.engine_choice().requested,
        "engine_device": model.engine_choice().device,
        "engine_reason": model.engine_choice().reason,
        "overhead_p50_ms": overhead_p50_ms(&options, args.iterations)?,
        "threads": args.threads,
        "batch": batch,
        "iterations": args.iterations,
        "load_ms": load_ms,
        "load_steps_ms": load_steps(packing_ms, verify_ms, &model),
        "first_inference_ms": first_ms,
        "p50_ms": p50,
        "p90_ms": percentile(&lat, 0.9),
        "p99_ms": percentile(&lat, 0.99),
        "throughput_per_s": (args.iterations * batch) as f64 / total_s,
        "peak_rss_mib": peak_rss_kib().map(|k| k as f64 / 1024.0),
    });
    if args.compare_cpu {
        let cpu_options = LoadOptions {
            engine: EngineOptions {
                threads: Some(args.threads),
                kind: Some(EngineKind::Cpu),
            },
            ..options.clone()
        };
        let (bundle_bytes, trust, policy) = bundle_and_trust(&args, std::fs::read(&args.model)?)?;
        let verified = bundle::verify_bytes(&bundle_bytes, &trust, &policy)?;
        let cpu = Model::from_verified(verified, &cpu_options).context("loading on the cpu")?;
        let cpu_outputs = cpu.run(inputs.clone())?;
        let diff = ort::max_abs_diff(
            model.output_names(),
            &outputs,
            cpu.output_names(),
            &cpu_outputs,
        )?;
        let mut cpu_lat: Vec<f64> = (0..args.iterations)
            .map(|_| {
                let input = inputs.clone();
                let t = Instant::now();
                cpu.run(input).map(|_| t.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<Result<_, _>>()?;
        cpu_lat.sort_by(f64::total_cmp);
        let obj = report.as_object_mut().expect("an object");
        obj.insert("cpu_p50_ms".into(), percentile(&cpu_lat, 0.5).into());
        obj.insert("cpu_max_abs_diff".into(), diff.into());
    }
    if let Some(payload) = payload {
        let mut normalized = inputs.clone();
        for (spec, t) in model.manifest().inputs.iter().zip(&mut normalized) {
            edge_runtime::preprocess::normalize(spec, t);
        }
        let names: Vec<&str> = model
            .manifest()
            .inputs
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let ort = ort::run(&payload, &names, &normalized, args.threads, args.iterations)?;
        let diff = ort::max_abs_diff(
            model.output_names(),
            &outputs,
            &ort.output_names,
            &ort.outputs,
        )?;
        let obj = report.as_object_mut().expect("an object");
        obj.insert("ort_runtime".into(), ort.runtime.clone().into());
        obj.insert("ort_p50_ms".into(), ort.p50_ms.into());
        obj.insert("ort_p90_ms".into(), ort.p90_ms.into());
        obj.insert("ort_load_ms".into(), ort.load_ms.into());
        obj.insert("ort_peak_rss_mib".into(), ort.peak_rss_mib.into());
        obj.insert("ratio".into(), (p50 / ort.p50_ms).into());
        obj.insert("max_abs_diff".into(), diff.into());
        // the scale the difference is read against
        let magnitude = ort
            .outputs
            .iter()
            .flat_map(|t| t.to_f64_vec())
            .filter(|v| v.is_finite())
            .fold(0f64, |m, v| m.max(v.abs()));
        obj.insert("ort_max_abs_output".into(), magnitude.into());
    }
    let profile = if args.profile {
        let ops = model
            .profile(inputs.clone(), args.iterations)
            .context("profiling")?;
        report
            .as_object_mut()
            .expect("an object")
            .insert("profile".into(), serde_json::to_value(&ops)?);
        ops
    } else {
        vec![]
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for (k, v) in report.as_object().into_iter().flatten() {
            if k != "profile" {
                println!("{k:<20} {v}");
            }
        }
        print_profile(&profile);
    }
    Ok(())
}

/// The profile as a table: op kind, nodes, ms per run, share of the ops' total.
fn print_profile(ops: &[edge_runtime::engine::OpTime]) {
    if ops.is_empty() {
        return;
    }
    let total: f64 = ops.iter().map(|o| o.ms).sum();
    println!(
        "\n{:<32} {:>6} {:>10} {:>7}",
        "op (per run)", "nodes", "ms", "share"
    );
    for o in ops {
        let share = if total > 0.0 { o.ms / total * 1e2 } else { 0.0 };
        println!("{:<32} {:>6} {:>10.3} {:>6.1}%", o.op, o.nodes, o.ms, share);
    }
    println!("{:<32} {:>6} {:>10.3}", "total", "", total);
}

/// Where the load went, by step: packing a plain `.onnx` on the fly (`pack`, bench only, not in
/// `load_ms`), `verify` (signatures, digest), then the model's own steps (`graph`: reading the
/// payload, declutter, substitute, codegen, plan, self-test).
fn load_steps(packing_ms: f64, verify_ms: f64, model: &Model) -> serde_json::Value {
    let mut steps = serde_json::Map::new();
    steps.insert("pack".into(), packing_ms.into());
    steps.insert("verify".into(), verify_ms.into());
    for (name, ms) in model.load_steps() {
        steps.insert(name.into(), ms.into());
    }
    steps.into()
}
