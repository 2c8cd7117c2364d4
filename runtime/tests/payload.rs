//! The optimized payload (NNEF, `edgectl pack`'s default) against the ONNX payload of the same
//! graph: every model that translates gives the same outputs from both (1e-5, relative to the
//! output's scale) through the full device path (verify, read, optimize, run); the manifest
//! names the format and keeps the ONNX file's digest; a graph with an op that has no NNEF form
//! falls back to ONNX under `auto` and is refused, naming the op, under `nnef`; the device's
//! reader of the graph text gives the syntax tree tract's gives.

use edge_pack::onnx_graph;
use edge_pack::pack::{self, PayloadChoice};
use edge_runtime::bundle::{self, PayloadFormat};
use edge_runtime::{LoadOptions, Model};
use sha2::Digest;

fn read(path: &str) -> Vec<u8> {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The graph's inputs, symbolic dims at 2 (first) or as `shapes` says.
fn inputs(onnx: &[u8], shapes: &[(String, Vec<u64>)]) -> Vec<bundle::InputSpec> {
    let itf = onnx_graph::interface(onnx).unwrap();
    onnx_graph::concrete_inputs(&itf, shapes).unwrap()
}

fn packed(onnx: &[u8], inputs: &[bundle::InputSpec], choice: PayloadChoice) -> (Model, Vec<u8>) {
    let itf = onnx_graph::interface(onnx).unwrap();
    let (bytes, trust) = pack::throwaway_bundle_with(
        onnx,
        "m",
        inputs.to_vec(),
        &itf.outputs[0].name,
        1_800_000_000,
        choice,
    )
    .unwrap_or_else(|e| panic!("packing ({choice:?}): {e}"));
    let model = Model::load(&bytes, &trust, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading ({choice:?}): {e}"));
    if choice == PayloadChoice::Nnef {
        same_syntax_tree(&bytes);
    }
    (model, bytes)
}

/// The optimized payload's graph text gives the same syntax tree from the device's reader
/// (`engine::nnef_text`) as from tract's.
fn same_syntax_tree(bundle_bytes: &[u8]) {
    use std::io::Read;
    let len = bundle::inspect(bundle_bytes, &Default::default())
        .unwrap()
        .payload_len as usize;
    let payload = &bundle_bytes[bundle_bytes.len() - len..];
    let mut archive = tar::Archive::new(payload);
    let mut graphs = 0;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().ends_with("graph.nnef") {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            let theirs = tract_nnef::ast::parse::parse_document(&text).unwrap();
            let ours = edge_runtime::engine::nnef_text::parse_document(&text);
            assert_eq!(
                ours,
                Some(theirs),
                "the two readers differ on\n{text:.2000}"
            );
            graphs += 1;
        }
    }
    assert_eq!(graphs, 1, "one graph.nnef in the payload");
}

/// Both payloads of `path`: equal outputs on synthetic inputs; the optimized one says so in its
/// manifest.
fn same_outputs(path: &str, shapes: &[(&str, &[u64])]) {
    let onnx = read(path);
    let shapes: Vec<(String, Vec<u64>)> = shapes
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect();
    let specs = inputs(&onnx, &shapes);
    let (reference, _) = packed(&onnx, &specs, PayloadChoice::Onnx);
    let (optimized, bytes) = packed(&onnx, &specs, PayloadChoice::Nnef);
    let manifest = bundle::inspect(&bytes, &Default::default())
        .unwrap()
        .manifest;
    assert_eq!(manifest.payload.format, PayloadFormat::Nnef, "{path}");
    let source: [u8; 32] = sha2::Sha256::digest(&onnx).into();
    assert_eq!(
        manifest.payload.source_sha256.map(|s| *s),
        Some(source),
        "{path}: the ONNX digest is kept for provenance"
    );
    let xs = pack::synthetic_inputs(&specs, 7);
    let want = reference.run(xs.clone()).unwrap();
    let got = optimized.run(xs).unwrap();
    assert_eq!(want.len(), got.len(), "{path}: outputs");
    for (k, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w.shape, g.shape, "{path} output {k}");
        let (w, g) = (w.to_f64_vec(), g.to_f64_vec());
        let scale = w.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        let worst = w
            .iter()
            .zip(&g)
            .map(|(a, b)| (a - b).abs() / scale)
            .fold(0.0, f64::max);
        assert!(
            worst <= 1e-5,
            "{path} output {k}: {worst:e} relative difference"
        );
    }
}

#[test]
fn the_sample_models_give_the_same_outputs_from_both_payloads() {
    same_outputs("../models/mobilenetv2/model.onnx", &[]);
    same_outputs("../models/digits/model.onnx", &[]);
    same_outputs("../models/vibration/model.onnx", &[]);
    same_outputs("../models/diabetes/model.onnx", &[]);
    // names that are not NNEF identifiers (Caffe2's `gpu_0/data_0`) stay as they are
    same_outputs("tests/data/payload/odd_names.onnx", &[]);
    // erf-based GELU (BERT, MiniLM), which tract folds into its GeluExact op
    same_outputs("tests/data/payload/gelu_erf.onnx", &[]);
}

/// QOperator (`QLinearConv`, integer convolution), dynamic quantization, LRN, resize, the
/// OCR backbone and transformer blocks: ops of ours and of tract's ONNX extension in NNEF.
#[test]
fn quantized_and_extension_ops_give_the_same_outputs_from_both_payloads() {
    for path in [
        "tests/data/qops/qconv.onnx",
        "tests/data/qops/qconvint.onnx",
        "tests/data/qops/qops.onnx",
        "tests/data/gpu_ops/dynamic_quant_conv_matmul.onnx",
        "tests/data/gpu_ops/lrn.onnx",
        "tests/data/gpu_ops/resize_linear_and_nearest.onnx",
        "tests/data/gpu_ops/ppocr_backbone_mix.onnx",
        "tests/data/gpu_ops/svtr_block.onnx",
        "tests/data/gpu_ops/softmax_opset11.onnx",
        "tests/data/gpu_ops/conv_transpose_grouped.onnx",
    ] {
        same_outputs(path, &[]);
    }
}

/// Every classical-ML test model (scikit-learn, LightGBM, XGBoost): tree ensembles (classifiers
/// with int and string labels, regressors, `TreeEnsemble` v5), linear models, SVMs (binary,
/// RBF with probabilities, regressor) and the feature transforms (`Scaler`, `Normalizer`,
/// `Imputer`, `Binarizer`, `OneHotEncoder`, `LabelEncoder`, `ArrayFeatureExtractor`,
/// `FeatureVectorizer`, `ZipMap`): our ops' NNEF forms. (`tests/ml.rs` runs these same models,
/// packed to the optimized payload, against ONNX Runtime's outputs.)
#[test]
fn classical_ml_models_give_the_same_outputs_from_both_payloads() {
    let dir = format!("{}/tests/data/ml", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".onnx").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 19, "{names:?}");
    for name in names {
        same_outputs(&format!("tests/data/ml/{name}.onnx"), &[]);
    }
}

/// A graph with an op that has no NNEF form (MaxPool's indices output): `auto` ships the ONNX
/// file and says why; `nnef` refuses, naming the op.
#[test]
fn a_graph_without_an_nnef_form_falls_back_to_onnx_or_is_refused() {
    let onnx = read("tests/data/payload/maxpool_indices.onnx");
    let specs = inputs(&onnx, &[]);
    let (payload, info, note) = pack::payload_for(&onnx, &specs, PayloadChoice::Auto).unwrap();
    assert_eq!(info.format, PayloadFormat::Onnx);
    assert_eq!(payload, onnx);
    let note = note.expect("auto says why it fell back");
    assert!(note.contains("MaxPool"), "{note}");
    let err = pack::payload_for(&onnx, &specs, PayloadChoice::Nnef).unwrap_err();
    assert!(
        err.to_string().contains("no optimized (NNEF) form"),
        "{err}"
    );
}

/// int8 MobileNetV2 (our quantizer's QDQ graph): the optimized payload keeps the 8-bit weights
/// (about the ONNX file's size) and the device plans the very ops it plans from the ONNX payload
/// (our integer 1×1, depthwise and first-conv kernels where the CPU has them), on every
/// instruction set this runs on: under qemu for the boards too. (tract's NNEF writer turns
/// einsums into prefix matmuls; read back that way, aarch64's channel-first plan of a quantized
/// graph lost its integer 1×1 kernels.)
#[test]
fn an_int8_model_plans_the_same_ops_from_both_payloads_and_keeps_8_bit_weights() {
    use edge_pack::quantize::{quantize, QuantizeOptions, RangeMethod};
    let onnx = read("../models/mobilenetv2/model.onnx");
    let calibration =
        edge_runtime::npy::read(&read("../models/mobilenetv2/calib_x.npy")[..], 1 << 28)
            .unwrap()
            .rows(0, 2);
    let options = QuantizeOptions {
        weights_only: false,
        range: RangeMethod::MinMax,
    };
    let (int8, _) = quantize(&onnx, &[vec![calibration]], &options).unwrap();
    let specs = inputs(&int8, &[]);
    let (reference, onnx_bundle) = packed(&int8, &specs, PayloadChoice::Onnx);
    let (optimized, nnef_bundle) = packed(&int8, &specs, PayloadChoice::Nnef);
    let payload = |b: &[u8]| bundle::inspect(b, &Default::default()).unwrap().payload_len;
    let (onnx_len, nnef_len) = (payload(&onnx_bundle), payload(&nnef_bundle));
    assert!(
        nnef_len as f64 <= onnx_len as f64 * 1.15,
        "optimized payload {nnef_len} bytes against the ONNX file's {onnx_len}"
    );
    let xs = pack::synthetic_inputs(&specs, 3);
    let plan = |m: &Model| -> Vec<(String, usize)> {
        let mut ops: Vec<(String, usize)> = m
            .profile(xs.clone(), 1)
            .unwrap()
            .into_iter()
            .map(|t| (t.op, t.nodes))
            .collect();
        ops.sort();
        ops
    };
    assert_eq!(
        plan(&optimized),
        plan(&reference),
        "the plan from the optimized payload"
    );
    // where integer kernels run graphs, every 1×1 layer is our integer op, and the classifier
    // too (its flatten sits between the quantize pair's two steps once decluttered)
    use edge_runtime::engine::kernels::{qpointwise, Isa};
    if qpointwise::Kernel::best(Isa::host()).serves_graphs() && edge_runtime::engine::own_kernels()
    {
        let ours = plan(&optimized)
            .into_iter()
            .find(|(op, _)| op == "EdgeQuantizedPointwiseConv");
        // (on aarch64 the classifier is tract's float product: `pointwise::substitute`)
        let expected = if cfg!(target_arch = "aarch64") {
            34
        } else {
            35
        };
        assert_eq!(
            ours.map(|(_, n)| n),
            Some(expected),
            "34 1×1 layers and the classifier"
        );
    }
    let (want, got) = (
        reference.run(xs.clone()).unwrap(),
        optimized.run(xs).unwrap(),
    );
    assert_eq!(want, got, "the same plan gives the same bits");
}
