//! `edgectl` as a user runs it: the quickstart (keygen → trust → pack → verify → eval), run on
//! every input kind, MobileNetV2 against ONNX Runtime's reference outputs, refusals of bad input
//! and of tampered bundles, inspect and bench.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use edge_runtime::{npy, Tensor};

fn edgectl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgectl"))
        .args(args)
        .output()
        .expect("edgectl runs")
}

fn ok(args: &[&str]) -> String {
    let out = edgectl(args);
    assert!(
        out.status.success(),
        "edgectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = edgectl(args);
    assert!(!out.status.success(), "edgectl {args:?} should have failed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn m(rel: &str) -> String {
    models().join(rel).display().to_string()
}

/// Keys, trust root and the three sample bundles, made once per test binary.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let s = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        let d = s.dir.path().display().to_string();
        ok(&["keygen", "--out", &d, "--name", "root"]);
        ok(&["keygen", "--out", &d, "--name", "signer"]);
        ok(&[
            "trust",
            "init",
            "--root-key",
            &s.p("root.key"),
            "--signer",
            &s.p("signer.pub"),
            "--out",
            &s.p("trust.cbor"),
        ]);
        for model in ["digits", "mobilenetv2", "diabetes"] {
            let mut args = vec![
                "pack".to_string(),
                m(&format!("{model}/model.onnx")),
                "--spec".into(),
                m(&format!("{model}/spec.toml")),
                "--key".into(),
                s.p("signer.key"),
                "--calibration".into(),
                m(&format!("{model}/calib_x.npy")),
                "--out".into(),
                s.p(&format!("{model}.efb")),
            ];
            if model == "diabetes" {
                args.extend(["--calibration-targets".into(), m("diabetes/calib_y.npy")]);
            }
            ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
        s
    })
}

/// `edgectl eval BUNDLE` on the digits test split, as JSON.
fn eval_digits_test_split(bundle: &str) -> serde_json::Value {
    let t = trust_args(setup());
    let out = ok(&[
        "eval",
        bundle,
        &t[0],
        &t[1],
        "--inputs",
        &m("digits/test_x.npy"),
        "--labels",
        &m("digits/test_y.npy"),
        "--json",
    ]);
    serde_json::from_str(&out).unwrap()
}

/// Every key of a bench report is a positive number.
fn all_positive(v: &serde_json::Value, keys: &[&str]) {
    for k in keys {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {v}");
    }
}

fn trust_args(s: &Setup) -> Vec<String> {
    vec![
        "--trust".into(),
        s.p("trust.cbor"),
        "--root".into(),
        s.p("root.pub"),
    ]
}

fn run_json(bundle: &str, input: &Path, extra: &[&str]) -> serde_json::Value {
    let s = setup();
    let mut args = vec!["run".to_string(), s.p(bundle)];
    args.extend(trust_args(s));
    args.extend(["--input".into(), input.display().to_string()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    serde_json::from_str(&ok(&args.iter().map(String::as_str).collect::<Vec<_>>())).unwrap()
}

#[test]
fn keys_are_private_and_verify_accepts_only_valid_bundles() {
    let s = setup();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.p("root.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let t = trust_args(s);
    let out = ok(&["verify", &s.p("digits.efb"), &t[0], &t[1], &t[2], &t[3]]);
    assert!(out.starts_with("valid: digits 1.0.0 sha256:"), "{out}");
    // --engine: which engine runs it here, and why (no CUDA in CI: the driver's reason)
    let out = ok(&[
        "verify",
        &s.p("digits.efb"),
        &t[0],
        &t[1],
        &t[2],
        &t[3],
        "--engine",
        "cuda",
    ]);
    let engine = out.lines().nth(1).unwrap_or_default();
    assert!(
        engine.starts_with("engine: ") && engine.contains("(asked: cuda)"),
        "{out}"
    );
    if !engine.starts_with("engine: cuda on ") {
        assert!(engine.contains("; cuda: "), "{engine}");
    }

    // a flipped payload byte → exit 1 and one line naming the problem
    let mut bytes = std::fs::read(s.p("digits.efb")).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x10;
    let tampered = s.dir.path().join("tampered.efb");
    std::fs::write(&tampered, &bytes).unwrap();
    let out = edgectl(&["verify", tampered.to_str().unwrap(), &t[0], &t[1]]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    assert!(
        stdout.starts_with("invalid: bundle payload sha256"),
        "{stdout}"
    );

    // a trust root pinned to another key is refused
    let d = s.dir.path().display().to_string();
    ok(&["keygen", "--out", &d, "--name", "other-root"]);
    let msg = fails(&[
        "verify",
        &s.p("digits.efb"),
        "--trust",
        &s.p("trust.cbor"),
        "--root",
        &s.p("other-root.pub"),
    ]);
    assert!(msg.contains("not signed by the root key"), "{msg}");
    // refusing to overwrite a key
    assert!(fails(&["keygen", "--out", &d, "--name", "root"]).contains("refusing to overwrite"));
}

#[test]
fn eval_digits_reaches_097() {
    let v = eval_digits_test_split(&setup().p("digits.efb"));
    let acc = v["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.97, "accuracy {acc}");
    assert_eq!(v["per_class_accuracy"].as_object().unwrap().len(), 10);
}

#[test]
fn mobilenetv2_matches_onnx_runtime_within_1e4() {
    let v = run_json(
        "mobilenetv2.efb",
        &models().join("mobilenetv2/ref_input.npy"),
        &["--raw"],
    );
    let ours: Vec<f64> = v["raw"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let reference: Tensor = npy::read(
        std::fs::File::open(models().join("mobilenetv2/ref_output.npy")).unwrap(),
        1 << 20,
    )
    .unwrap();
    let reference = reference.to_f64_vec();
    assert_eq!(ours.len(), 1000);
    let max_diff = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(max_diff <= 1e-4, "max |ours - onnxruntime| = {max_diff}");
    // and the top label is ONNX Runtime's argmax
    let argmax = reference
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(
        v["results"][0]["class_index"].as_u64().unwrap() as usize,
        argmax
    );
    assert_eq!(v["results"][0]["predictions"].as_array().unwrap().len(), 5);
}

#[test]
fn run_takes_npy_json_and_images() {
    let s = setup();
    let x: Tensor = npy::read(
        std::fs::File::open(models().join("digits/test_x.npy")).unwrap(),
        1 << 20,
    )
    .unwrap();
    let y: Tensor = npy::read(
        std::fs::File::open(models().join("digits/test_y.npy")).unwrap(),
        1 << 20,
    )
    .unwrap();
    let row = x.rows(0, 1);
    let truth = y.to_f64_vec()[0] as u64;

    let npy_path = s.dir.path().join("one.npy");
    std::fs::write(&npy_path, npy::write(&row)).unwrap();
    let v = run_json("digits.efb", &npy_path, &["--top-k", "2"]);
    assert_eq!(v["results"][0]["class_index"].as_u64().unwrap(), truth);
    assert_eq!(v["results"][0]["predictions"].as_array().unwrap().len(), 2);
    assert_eq!(v["model"], "digits");

    let values = row.to_f64_vec();
    let nested: Vec<Vec<Vec<Vec<f64>>>> =
        vec![vec![values.chunks(8).map(|c| c.to_vec()).collect()]];
    let json_path = s.dir.path().join("one.json");
    std::fs::write(
        &json_path,
        serde_json::to_string(&serde_json::json!({ "input": nested })).unwrap(),
    )
    .unwrap();
    assert_eq!(
        run_json("digits.efb", &json_path, &[])["results"][0]["class_index"]
            .as_u64()
            .unwrap(),
        truth
    );

    // the same digit drawn as dark ink on white paper, 32x32 PNG: the bundle inverts and resizes
    let img = image::GrayImage::from_fn(32, 32, |px, py| {
        let v = values[(py / 4 * 8 + px / 4) as usize];
        image::Luma([255 - (v / 16.0 * 255.0).round() as u8])
    });
    let png = s.dir.path().join("digit.png");
    img.save(&png).unwrap();
    assert_eq!(
        run_json("digits.efb", &png, &[])["results"][0]["class_index"]
            .as_u64()
            .unwrap(),
        truth
    );

    // regression through JSON gives a value and its interval
    let json_path = s.dir.path().join("patient.json");
    std::fs::write(&json_path, "[[50, 2, 27.0, 95, 190, 115, 50, 4, 4.6, 91]]").unwrap();
    let v = run_json("diabetes.efb", &json_path, &[]);
    let r = &v["results"][0];
    assert_eq!(r["task"], "regression");
    assert!(r["interval"]["lower"].as_f64().unwrap() < r["value"].as_f64().unwrap());
    assert_eq!(r["interval"]["coverage"].as_f64().unwrap(), 0.9);
}

#[test]
fn bad_inputs_exit_non_zero_with_a_clear_message() {
    let s = setup();
    let t = trust_args(s);
    let write = |name: &str, content: &[u8]| {
        let p = s.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    };
    let row = |v: f64| serde_json::to_string(&vec![vec![vec![vec![v; 8]; 8]]]).unwrap();
    let wrong_shape = write("wrong_shape.json", b"[[1, 2, 3]]");
    let wrong_dtype = write(
        "wrong_dtype.npy",
        &npy::write(&Tensor {
            shape: vec![1, 1, 8, 8],
            data: edge_runtime::TensorData::F64(vec![1.0; 64]),
        }),
    );
    let nan = write(
        "nan.json",
        row(1.0).replacen("1.0", "\"NaN\"", 1).as_bytes(),
    );
    let empty = write("empty.json", b"[]");
    let too_large = write(
        "too_large.npy",
        &npy::write(&Tensor::f32(vec![1, 1, 80, 8], vec![1.0; 640])),
    );
    let not_input = write("garbage.npy", b"\x93NUMPY garbage");
    let ok_json = write("ok.json", row(3.0).as_bytes());
    for (input, expected) in [
        (&wrong_shape, "must have shape [N, 1, 8, 8], got [1, 3]"),
        (&wrong_dtype, "must be f32, got f64"),
        (&nan, "non-finite value (NaN) at flat index 0"),
        (&empty, "is empty"),
        (
            &too_large,
            "must have shape [N, 1, 8, 8], got [1, 1, 80, 8]",
        ),
        (&not_input, "not a supported .npy file"),
    ] {
        let msg = fails(&["run", &s.p("digits.efb"), &t[0], &t[1], "--input", input]);
        assert!(
            msg.contains(expected),
            "input {input}: expected '{expected}' in: {msg}"
        );
        assert!(!msg.contains("panicked"), "{msg}");
    }
    ok(&["run", &s.p("digits.efb"), &t[0], &t[1], "--input", &ok_json]);
    // an image for a tabular model
    let msg = fails(&[
        "run",
        &s.p("diabetes.efb"),
        &t[0],
        &t[1],
        "--input",
        &s.p("missing.png"),
    ]);
    assert!(msg.contains("does not take images"), "{msg}");
}

#[test]
fn inspect_and_bench_report_what_users_need() {
    let s = setup();
    let out = ok(&["inspect", &s.p("mobilenetv2.efb"), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["manifest"]["name"], "mobilenetv2");
    assert_eq!(
        v["manifest"]["self_test"]["vectors"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        v["manifest"]["reference"]["features"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "per channel"
    );
    assert!(ok(&["inspect", &s.p("digits.efb")]).contains("classification, 10 labels"));

    let t = trust_args(s);
    let out = ok(&[
        "bench",
        &s.p("digits.efb"),
        &t[0],
        &t[1],
        "--iterations",
        "20",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    all_positive(
        &v,
        &[
            "load_ms",
            "first_inference_ms",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "throughput_per_s",
            "peak_rss_mib",
        ],
    );
    assert!(v["p50_ms"].as_f64() <= v["p99_ms"].as_f64());
}

#[test]
fn bench_compares_any_onnx_file_with_onnx_runtime() {
    // a plain .onnx (QOperator ops included), packed on the fly; ONNX Runtime runs the same input
    let qops = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../runtime/tests/data/qops/qops.onnx"
    );
    let out = ok(&[
        "bench",
        qops,
        "--compare-ort",
        "--iterations",
        "5",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    all_positive(
        &v,
        &[
            "p50_ms",
            "ort_p50_ms",
            "ratio",
            "load_ms",
            "ort_load_ms",
            "peak_rss_mib",
            "ort_peak_rss_mib",
            "ort_max_abs_output",
        ],
    );
    // one output quantization step (0.03) at most
    assert!(v["max_abs_diff"].as_f64().unwrap() <= 0.0301, "{v}");

    let s = setup();
    let msg = fails(&["bench", &s.p("digits.efb")]);
    assert!(msg.contains("needs --trust"), "{msg}");
    let t = trust_args(s);
    let msg = fails(&["bench", &s.p("digits.efb"), &t[0], &t[1], "--shape", "x=1"]);
    assert!(msg.contains("plain .onnx"), "{msg}");
    let msg = fails(&["bench", qops, "--shape", "nope=1x2"]);
    assert!(msg.contains("not a graph input"), "{msg}");
}

#[test]
fn quantized_digits_keep_their_accuracy_within_one_point_and_pack_like_the_float_model() {
    let s = setup();
    let out_path = s.p("digits.int8.onnx");
    let out = ok(&[
        "quantize",
        &m("digits/model.onnx"),
        "--out",
        &out_path,
        "--calibration",
        &m("digits/calib_x.npy"),
        "--spec",
        &m("digits/spec.toml"),
        "--range",
        "99.99",
        "--eval",
        &m("digits/test_x.npy"),
        &m("digits/test_y.npy"),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["weights_quantized"], 4, "{v}");
    assert_eq!(v["activations_quantized"], 4, "{v}");
    assert_eq!(v["per_channel"], true);
    let (before, after) = (
        v["bytes_before"].as_f64().unwrap(),
        v["bytes_after"].as_f64().unwrap(),
    );
    assert!(after < before / 3.0, "{before} -> {after}");
    let e = &v["eval"];
    assert_eq!(e["rows"], 360);
    let (fa, qa) = (
        e["accuracy_float"].as_f64().unwrap(),
        e["accuracy_int8"].as_f64().unwrap(),
    );
    assert!(fa >= 0.97 && qa >= fa - 0.01, "float {fa}, int8 {qa}");
    // the quantized model is really different (int8 weights), and still packs, self-tests, serves
    assert!(e["max_abs_diff"].as_f64().unwrap() > 0.0);
    let pack = |model: &str, out: &str| {
        ok(&[
            "pack",
            model,
            "--spec",
            &m("digits/spec.toml"),
            "--key",
            &s.p("signer.key"),
            "--calibration",
            &m("digits/calib_x.npy"),
            "--out",
            out,
        ])
    };
    let bundle = s.p("digits.int8.efb");
    pack(&out_path, &bundle);
    let acc = eval_digits_test_split(&bundle);
    assert!(
        (acc["accuracy"].as_f64().unwrap() - qa).abs() < 1e-9,
        "{acc}"
    );
    // a quantized graph's self-test allows 2 % of its outputs' range (the spec says 1e-4: a
    // device with other kernels than the packer's lands a step or two apart), a float one not
    let inspect = |bundle: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&["inspect", bundle, "--json"])).unwrap()
    };
    let tolerance = inspect(&bundle)["manifest"]["self_test"]["tolerance"]
        .as_f64()
        .unwrap();
    assert!(tolerance > 1e-3, "tolerance {tolerance}");
    let float = s.p("digits.f32.efb");
    pack(&m("digits/model.onnx"), &float);
    assert_eq!(inspect(&float)["manifest"]["self_test"]["tolerance"], 1e-4);

    // clear errors
    let msg = fails(&["quantize", &m("digits/model.onnx"), "--out", &s.p("x.onnx")]);
    assert!(msg.contains("--weights-only"), "{msg}");
    let msg = fails(&[
        "quantize",
        &m("digits/model.onnx"),
        "--out",
        &s.p("x.onnx"),
        "--weights-only",
        "--range",
        "7",
    ]);
    assert!(msg.contains("percentile"), "{msg}");
    let msg = fails(&[
        "quantize",
        &m("digits/spec.toml"),
        "--out",
        &s.p("x.onnx"),
        "--weights-only",
    ]);
    assert!(msg.contains("not an ONNX model"), "{msg}");
}
