//! The `ai.onnx.ml` operators (engine/ml) against ONNX Runtime's outputs, model by model: what
//! scikit-learn, LightGBM and XGBoost export (tree ensembles with every binary and multi-class
//! layout, missing values, random forests, linear and SVM pipelines) and hand-built graphs for
//! the pipeline transforms and `TreeEnsemble` (ai.onnx.ml 5). Labels must be equal, scores
//! within 1e-5 (relative). Data and reference outputs: tests/data/ml/make.py.

use edge_pack::{onnx_graph, pack};
use edge_runtime::bundle::NanPolicy;
use edge_runtime::trust::{self, RootAnchor, TrustRoot, TrustSpec};
use edge_runtime::{npy, LoadOptions, Model, Tensor, TensorData};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/ml/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn tensor(name: &str) -> Tensor {
    npy::read(&data(name)[..], 1 << 24).unwrap()
}

/// The model packed into a throwaway bundle for inputs of `x`'s shape, NaN allowed in.
fn load(name: &str, x: &Tensor) -> Model {
    let onnx = data(&format!("{name}.onnx"));
    let itf = onnx_graph::interface(&onnx).unwrap();
    let shape = x.shape.iter().map(|&d| d as u64).collect();
    let shapes = [(itf.inputs[0].name.clone(), shape)];
    let mut inputs = onnx_graph::concrete_inputs(&itf, &shapes).unwrap();
    inputs[0].nan_policy = NanPolicy::Allow;
    let output = itf.outputs[0].name.clone();
    let (bundle, trust) = pack::throwaway_bundle(&onnx, name, inputs, &output, 1_800_000_000)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    Model::load(&bundle, &trust, &LoadOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs `name` on its inputs and compares every output with ONNX Runtime's.
fn check(name: &str) {
    let x = tensor(&format!("{name}.x.npy"));
    let model = load(name, &x);
    let got = model.run(vec![x]).unwrap_or_else(|e| panic!("{name}: {e}"));
    let references = (0..)
        .take_while(|i| {
            std::path::Path::new(&format!(
                "{}/tests/data/ml/{name}.out{i}.npy",
                env!("CARGO_MANIFEST_DIR")
            ))
            .exists()
        })
        .count();
    assert_eq!(got.len(), references, "{name}: outputs");
    for (i, g) in got.iter().enumerate() {
        let want = tensor(&format!("{name}.out{i}.npy"));
        let (g, w) = (g.to_f64_vec(), want.to_f64_vec());
        assert_eq!(
            g.len(),
            w.len(),
            "{name} output {i}: {} values, ONNX Runtime {}",
            g.len(),
            w.len()
        );
        let integer = matches!(want.data, TensorData::I64(_) | TensorData::I32(_));
        for (k, (a, b)) in g.iter().zip(&w).enumerate() {
            if integer {
                assert_eq!(a, b, "{name} output {i} (labels) at {k}: {g:?} vs {w:?}");
            } else {
                let close = (a - b).abs() <= 1e-5 * (1.0 + b.abs()) || (a.is_nan() && b.is_nan());
                assert!(close, "{name} output {i} at {k}: {a} vs ONNX Runtime {b}");
            }
        }
    }
}

#[test]
fn gradient_boosted_classifiers_match_onnx_runtime() {
    check("gbt_binary");
    check("gbt_binary_zipmap");
    check("gbt_multiclass");
    check("lgbm_binary_missing");
    check("xgb_multiclass");
}

#[test]
fn forests_and_boosted_regressors_match_onnx_runtime() {
    check("rf_multiclass");
    check("rf_string_labels_zipmap");
    check("rf_regressor");
    check("xgb_regressor");
    check("tree_ensemble_v5");
}

#[test]
fn linear_and_svm_pipelines_match_onnx_runtime() {
    check("scaler_normalizer_logreg");
    check("scaler_logreg_binary");
    check("linear_regression");
    check("ridge_two_targets");
    check("svc_rbf_proba");
    check("svc_binary");
    check("svr_rbf");
}

#[test]
fn pipeline_transforms_match_onnx_runtime() {
    check("transforms");
    check("encoders");
}

/// A classifier with string classes, packed from a spec that names its output but lists no
/// labels: the bundle's output spec takes the model's classes, and answers name them.
#[test]
fn a_classifier_packed_without_labels_answers_with_the_models_class_names() {
    let onnx = data("rf_string_labels_zipmap.onnx");
    let spec: pack::PackSpec = toml::from_str(
        r#"
        name = "iris-forest"
        version = "1.0.0"
        [input]
        name = "X"
        dtype = "f32"
        shape = ["N", 4]
        layout = "NC"
        [output]
        name = "output_probability"
        task = "classification"
        "#,
    )
    .unwrap();
    let key = edge_runtime::keys::generate().unwrap();
    let (bytes, _) =
        pack::pack(&onnx, spec, None, std::slice::from_ref(&key), 1_800_000_000).unwrap();
    let doc = trust::create(&TrustSpec::ephemeral(&key.verifying_key()), &key, None).unwrap();
    let root = TrustRoot::from_bytes(&doc, RootAnchor::Pinned(key.verifying_key())).unwrap();
    let model = Model::load(&bytes, &root, &LoadOptions::default()).unwrap();
    let x = tensor("rf_string_labels_zipmap.x.npy");
    let want = tensor("rf_string_labels_zipmap.out0.npy").to_f64_vec();
    let names = ["setosa", "versicolor", "virginica"];
    let answer = model.predict(vec![x]).unwrap();
    assert_eq!(answer.results.len(), want.len());
    for (row, (got, want)) in answer.results.iter().zip(&want).enumerate() {
        match got {
            edge_protocol::Prediction::Classification { label, .. } => {
                assert_eq!(label, names[*want as usize], "row {row}")
            }
            other => panic!("row {row}: not a classification: {other:?}"),
        }
    }
}
