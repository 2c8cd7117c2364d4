//! The `gpu` engine against the CPU engine on every sample model (and MobileNetV2): same outputs
//! within 1e-3, same digits classes, unsupported graphs loading on the CPU with a reason. Needs a
//! Vulkan adapter: CI installs Mesa's lavapipe (`.ci/deps`), so this runs without a GPU.
#![cfg(feature = "gpu")]

mod common;

use common::*;
use edge_runtime::engine::{EngineKind, EngineOptions};
use edge_runtime::DType;
use edge_runtime::{LoadOptions, Model, Tensor, TensorData};

fn load(bytes: &[u8], trust: &edge_runtime::trust::TrustRoot, kind: EngineKind) -> Model {
    let options = LoadOptions {
        engine: EngineOptions {
            kind: Some(kind),
            threads: None,
        },
        ..Default::default()
    };
    Model::load(bytes, trust, &options).unwrap()
}

fn pair(model: &str) -> (Model, Model) {
    let signer = key();
    let (_, trust) = trust_with(&key(), &[&signer], 1, u64::MAX);
    let bytes = pack_model(model, std::slice::from_ref(&signer));
    let cpu = load(&bytes, &trust, EngineKind::Cpu);
    let gpu = load(&bytes, &trust, EngineKind::Gpu);
    assert_eq!(cpu.engine_choice().used, "cpu");
    assert_eq!(
        gpu.engine_choice().used,
        "gpu",
        "{model} did not load on the gpu engine: {:?} (a Vulkan driver is needed; CI installs \
         lavapipe through .ci/deps)",
        gpu.engine_choice().reason
    );
    (cpu, gpu)
}

fn values(t: &Tensor) -> &[f32] {
    match &t.data {
        TensorData::F32(v) => v,
        other => panic!("{other:?}"),
    }
}

/// Largest |gpu - cpu| / max(1, |cpu|) over every output.
fn max_diff(cpu: &Model, gpu: &Model, x: &Tensor) -> f32 {
    let a = cpu.run(vec![x.clone()]).unwrap();
    let b = gpu.run(vec![x.clone()]).unwrap();
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a.shape, b.shape);
        for (x, y) in values(a).iter().zip(values(b)) {
            assert!(y.is_finite(), "gpu output {y}");
            worst = worst.max((x - y).abs() / x.abs().max(1.0));
        }
    }
    worst
}

/// The first `n` rows of `x` (the sample models cap their batch).
fn first_rows(x: &Tensor, n: usize) -> Tensor {
    let rows = x.shape[0].min(n);
    let row: usize = x.shape[1..].iter().product();
    Tensor {
        shape: [rows]
            .into_iter()
            .chain(x.shape[1..].iter().copied())
            .collect(),
        data: TensorData::F32(values(x)[..rows * row].to_vec()),
    }
}

#[test]
fn every_sample_model_matches_the_cpu_engine_on_the_gpu_engine() {
    for (model, input) in [
        ("diabetes", "diabetes/test_x.npy"),
        ("vibration", "vibration/test_x.npy"),
        ("digits", "digits/test_x.npy"),
        ("mobilenetv2", "mobilenetv2/ref_input.npy"),
    ] {
        let (cpu, gpu) = pair(model);
        let x = first_rows(&read_npy(input), 64);
        let diff = max_diff(&cpu, &gpu, &x);
        eprintln!(
            "{model}: max relative difference {diff:e} on {} ({})",
            gpu.engine_choice().device,
            x.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x")
        );
        assert!(diff <= 1e-3, "{model}: {diff}");
        // a second shape (one row) gets its own plan and the same answers
        if x.shape[0] > 1 {
            assert!(
                max_diff(&cpu, &gpu, &first_rows(&x, 1)) <= 1e-3,
                "{model}: one row"
            );
        }
    }
}

/// A plain ONNX file packed with a throwaway key, loaded on `kind`.
fn load_onnx(onnx: &[u8], name: &str, kind: EngineKind) -> Model {
    let (bytes, trust) =
        edge_pack::pack::throwaway_bundle_for_onnx(onnx, name, &[], now(), Default::default())
            .unwrap();
    load(&bytes, &trust, kind)
}

/// Every graph of `tests/data/gpu_ops` (made by its `make.py`: the ops of PP-OCR's detector and
/// recognizer, ResNet's strided shortcut, LRN, opset-11 softmax, transposed and grouped
/// convolutions, linear and nearest resizing, attention masks (booleans, Where, IsNaN, GatherND),
/// dynamic quantization (DynamicQuantizeLinear, ConvInteger, MatMulInteger)) runs on the gpu
/// engine, not the CPU fallback, and gives the CPU engine's outputs within 1e-3.
#[test]
fn every_op_family_graph_runs_on_the_gpu_engine_with_the_cpu_engines_outputs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gpu_ops");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let onnx = std::fs::read(&path).unwrap();
        let cpu = load_onnx(&onnx, &name, EngineKind::Cpu);
        let gpu = load_onnx(&onnx, &name, EngineKind::Gpu);
        assert_eq!(
            gpu.engine_choice().used,
            "gpu",
            "{name} fell back: {:?}",
            gpu.engine_choice().reason
        );
        let shape: Vec<usize> = cpu.manifest().inputs[0]
            .shape
            .iter()
            .map(|d| d.to_string().parse().unwrap())
            .collect();
        let n: usize = shape.iter().product();
        let data = match cpu.manifest().inputs[0].dtype {
            // token ids below 50, one negative (counts from the end)
            DType::I64 => TensorData::I64((0..n as i64).map(|i| (i * 7) % 50 - 1).collect()),
            _ => TensorData::F32((0..n).map(|i| (i as f32 * 0.37).sin() * 2.0).collect()),
        };
        let x = Tensor { shape, data };
        let diff = max_diff(&cpu, &gpu, &x);
        assert!(diff <= 1e-3, "{name}: {diff}");
    }
}

/// Row `i` of `x` as a batch of one.
fn row(x: &Tensor, i: usize) -> Tensor {
    let len: usize = x.shape[1..].iter().product();
    Tensor {
        shape: [1]
            .into_iter()
            .chain(x.shape[1..].iter().copied())
            .collect(),
        data: TensorData::F32(values(x)[i * len..(i + 1) * len].to_vec()),
    }
}

/// `edgectl quantize`'s static (QDQ, calibrated on the model's calib_x) and weights-only forms of
/// a sample model load on the gpu engine (the pairs run as one f32 kernel, the int8 weights are
/// folded at load) and agree with the CPU engine running the same file.
#[test]
fn quantized_models_run_on_the_gpu_engine_with_the_cpu_engines_outputs() {
    use edge_pack::quantize::{quantize, QuantizeOptions, RangeMethod};
    for (model, rows) in [("digits", 16), ("mobilenetv2", 4)] {
        let onnx = std::fs::read(models().join(model).join("model.onnx")).unwrap();
        let calib = read_npy(&format!("{model}/calib_x.npy"));
        let calibration: Vec<Vec<Tensor>> = (0..calib.shape[0].min(rows))
            .map(|i| vec![row(&calib, i)])
            .collect();
        for weights_only in [false, true] {
            let options = QuantizeOptions {
                weights_only,
                range: RangeMethod::MinMax,
            };
            let (int8, _) = quantize(&onnx, &calibration, &options).unwrap();
            let cpu = load_onnx(&int8, model, EngineKind::Cpu);
            let gpu = load_onnx(&int8, model, EngineKind::Gpu);
            assert_eq!(
                gpu.engine_choice().used,
                "gpu",
                "{model} int8 (weights only: {weights_only}) fell back: {:?}",
                gpu.engine_choice().reason
            );
            let diff = max_diff(&cpu, &gpu, &row(&calib, 0));
            assert!(
                diff <= 1e-3,
                "{model} int8 (weights only: {weights_only}): {diff}"
            );
        }
    }
    // ONNX Runtime's QOperator graphs (tests/data/qops: QLinearConv; QLinearAdd/Mul/Sigmoid/…,
    // QGemm), which the runtime expands into float ops between quantize → dequantize pairs; tract
    // turns some into byte lookup tables
    for (file, input) in [("qops.onnx", "x.npy"), ("qconv.onnx", "xc.npy")] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qops");
        let onnx = std::fs::read(dir.join(file)).unwrap();
        let cpu = load_onnx(&onnx, "qops", EngineKind::Cpu);
        let gpu = load_onnx(&onnx, "qops", EngineKind::Gpu);
        assert_eq!(
            gpu.engine_choice().used,
            "gpu",
            "{file} fell back: {:?}",
            gpu.engine_choice().reason
        );
        let npy = dir.join(input);
        let x = edge_runtime::npy::read(std::fs::File::open(npy).unwrap(), 1 << 30).unwrap();
        let diff = max_diff(&cpu, &gpu, &x);
        assert!(diff <= 1e-3, "{file}: {diff}");
    }
}

#[test]
fn digits_classes_and_accuracy_are_unchanged_on_the_gpu_engine() {
    let (cpu, gpu) = pair("digits");
    let x = read_npy("digits/test_x.npy");
    let y = read_npy("digits/test_y.npy").to_f64_vec();
    let classes = |m: &Model| -> Vec<usize> {
        let out = m.run(vec![x.clone()]).unwrap();
        values(&out[0])
            .chunks(10)
            .map(|row| {
                row.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0
            })
            .collect()
    };
    let (c, g) = (classes(&cpu), classes(&gpu));
    assert_eq!(c, g);
    let accuracy = g
        .iter()
        .zip(&y)
        .filter(|(p, t)| **p == **t as usize)
        .count() as f64
        / y.len() as f64;
    assert!(accuracy > 0.95, "{accuracy}");
}

#[test]
fn a_graph_the_kernels_lack_loads_on_the_cpu_and_says_why() {
    // a 3-d convolution (tests/data/gpu_ops/make.py)
    let onnx = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/gpu_ops/unsupported/conv3d.onnx"),
    )
    .unwrap();
    let model = load_onnx(&onnx, "conv3d", EngineKind::Gpu);
    let choice = model.engine_choice();
    assert_eq!(choice.requested, "gpu");
    assert_eq!(choice.used, "cpu");
    let reason = choice.reason.as_deref().unwrap();
    assert_eq!(reason, "gpu: 3-d convolution or pooling");
    // and it still runs, on the CPU
    let x = Tensor {
        shape: vec![1, 2, 4, 4, 4],
        data: TensorData::F32(vec![0.5; 128]),
    };
    assert_eq!(model.run(vec![x]).unwrap()[0].shape, [1, 3, 4, 4, 4]);
}

#[test]
fn auto_picks_the_gpu_when_cuda_cannot_and_says_why() {
    let signer = key();
    let (_, trust) = trust_with(&key(), &[&signer], 1, u64::MAX);
    let bytes = pack_model("vibration", std::slice::from_ref(&signer));
    let model = load(&bytes, &trust, EngineKind::Auto);
    let choice = model.engine_choice();
    if choice.used == "cuda" {
        return; // a CUDA machine: auto rightly stops at cuda
    }
    assert_eq!((choice.requested.as_str(), choice.used), ("auto", "gpu"));
    // cuda is tried first: not built into this runtime, or no driver here
    assert!(
        choice.reason.as_deref().unwrap().starts_with("cuda: "),
        "{choice:?}"
    );
}
