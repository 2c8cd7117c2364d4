//! ONNX Runtime's QOperator ops that the runtime adds to tract (engine/qops.rs), checked
//! against ONNX Runtime's own outputs for one graph using all of them (tests/data/qops/make.py).

use edge_pack::{onnx_graph, pack};
use edge_runtime::bundle::Dim;
use edge_runtime::{npy, LoadOptions, Model, Tensor};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/qops/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn load(onnx: &[u8]) -> Model {
    load_shaped(onnx, [1, 4, 5, 5])
}

fn load_shaped(onnx: &[u8], shape: [u64; 4]) -> Model {
    let itf = onnx_graph::interface(onnx).unwrap();
    let inputs = onnx_graph::concrete_inputs(&itf, &[]).unwrap();
    assert_eq!(inputs[0].shape, shape.map(Dim::Fixed).to_vec());
    let (bundle, trust) = pack::throwaway_bundle(onnx, "qops", inputs, "y", 1_800_000_000).unwrap();
    Model::load(&bundle, &trust, &LoadOptions::default()).unwrap()
}

#[test]
fn qoperator_ops_match_onnx_runtime_within_one_quantization_step() {
    let model = load(&data("qops.onnx"));
    let x: Tensor = npy::read(&data("x.npy")[..], 1 << 20).unwrap();
    let expected = npy::read(&data("y.npy")[..], 1 << 20).unwrap().to_f64_vec();
    let got = model.run(vec![x]).unwrap()[0].to_f64_vec();
    assert_eq!(got.len(), 6);
    // output scale 0.03: intermediate roundings may differ by one level, never more
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            (g - e).abs() <= 0.0301,
            "got {got:?}, ONNX Runtime {expected:?}"
        );
    }
    assert!(
        expected.iter().any(|v| v.abs() > 0.1),
        "a degenerate reference"
    );
}

#[test]
fn qlinear_convolutions_match_onnx_runtime() {
    // strided 3×3 with per-channel int8 weights and a bias, 1×1 per tensor, depthwise with u8
    // weights and SAME_UPPER padding (tests/data/qops/make_conv.py)
    let model = load_shaped(&data("qconv.onnx"), [1, 4, 9, 9]);
    let x: Tensor = npy::read(&data("xc.npy")[..], 1 << 20).unwrap();
    let expected = npy::read(&data("yc.npy")[..], 1 << 20)
        .unwrap()
        .to_f64_vec();
    let got = model.run(vec![x]).unwrap()[0].to_f64_vec();
    assert_eq!(got.len(), 8 * 5 * 5);
    let step = 0.03;
    let off: Vec<f64> = got
        .iter()
        .zip(&expected)
        .map(|(g, e)| ((g - e) / step).abs())
        .collect();
    let exact = off.iter().filter(|d| **d < 0.01).count();
    let worst = off.iter().cloned().fold(0.0, f64::max);
    // float sums of the same integer products: a rounding may differ by one level, rarely
    assert!(
        worst <= 1.01 && exact * 20 >= off.len() * 19,
        "{exact} of {} outputs exact, worst {worst:.2} steps: got {got:?}, ONNX Runtime {expected:?}",
        off.len()
    );
    assert!(
        expected.iter().filter(|v| v.abs() > 0.5).count() > 20,
        "a degenerate reference"
    );
}

#[test]
fn conv_integer_matches_onnx_runtime() {
    // DynamicQuantizeLinear (zero point computed at run time) → ConvInteger (weight zero
    // point 2) → Cast → scale (tests/data/qops/make_conv.py)
    let model = load_shaped(&data("qconvint.onnx"), [1, 4, 9, 9]);
    let x: Tensor = npy::read(&data("xc.npy")[..], 1 << 20).unwrap();
    let expected = npy::read(&data("yi.npy")[..], 1 << 20)
        .unwrap()
        .to_f64_vec();
    let got = model.run(vec![x]).unwrap()[0].to_f64_vec();
    assert_eq!(got.len(), 6 * 5 * 5);
    // integer sums far under 2^24: the same integers, scaled by the same float
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            (g - e).abs() <= 1e-5 * e.abs().max(1.0),
            "got {got:?}, ONNX Runtime {expected:?}"
        );
    }
    assert!(
        expected.iter().filter(|v| v.abs() > 1.0).count() > 50,
        "a degenerate reference"
    );
}

#[test]
fn a_non_constant_scale_is_a_clear_load_error() {
    // make the QLinearAdd output scale a graph input: the model must be refused, not mis-run
    let onnx = data("qops.onnx");
    let text = String::from_utf8_lossy(&onnx);
    assert!(text.contains("QLinearAdd"));
    let mut proto: tract_onnx::pb::ModelProto = prost::Message::decode(&onnx[..]).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let scale = graph
        .initializer
        .iter()
        .position(|t| t.name == "as")
        .unwrap();
    graph.initializer.remove(scale);
    let mut input = graph.input[0].clone();
    input.name = "as".into();
    graph.input.push(input);
    let bytes = prost::Message::encode_to_vec(&proto);
    let itf = onnx_graph::interface(&bytes).unwrap();
    let inputs = onnx_graph::concrete_inputs(&itf, &[("as".into(), vec![1, 4, 5, 5])]).unwrap();
    let (bundle, trust) =
        pack::throwaway_bundle(&bytes, "qops", inputs, "y", 1_800_000_000).unwrap();
    let err = Model::load(&bundle, &trust, &LoadOptions::default()).unwrap_err();
    assert!(format!("{err:#}").contains("constant"), "{err:#}");
}
