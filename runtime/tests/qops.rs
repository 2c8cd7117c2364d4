//! ONNX Runtime's QOperator ops that the runtime adds to tract (engine/qops.rs), checked
//! against ONNX Runtime's own outputs for one graph using all of them (tests/data/qops/make.py).

use edge_runtime::bundle::Dim;
use edge_runtime::{npy, onnx_graph, pack, LoadOptions, Model, Tensor};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/qops/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn load(onnx: &[u8]) -> Model {
    let itf = onnx_graph::interface(onnx).unwrap();
    let inputs = onnx_graph::concrete_inputs(&itf, &[]).unwrap();
    assert_eq!(inputs[0].shape, [1, 4, 5, 5].map(Dim::Fixed).to_vec());
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
