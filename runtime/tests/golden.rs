//! The same signed digits bundle gives the same answers on every architecture we ship.
//!
//! `data/digits-golden.efb` was packed and signed on x86-64 (by a key thrown away afterwards), with
//! `data/trust.cbor` signed by the root in `data/root.pub`; `data/digits-golden-logits.npy` holds
//! the logits x86-64 computed for the first 64 rows of the digits test split. cross/test.sh runs
//! this test under qemu for aarch64 and armv7: the bundle must verify against the pinned root, pass
//! its self-test, and reproduce those logits within 1e-5.
//!
//! Regenerate (x86-64 only; new keys, new bundle): `EDGE_UPDATE_GOLDEN=1 cargo test -p edge-runtime
//! --test golden`.

mod common;

use std::path::PathBuf;

use edge_runtime::trust::{RootAnchor, TrustRoot};
use edge_runtime::{LoadOptions, Model, Tensor, TensorData};

const ROWS: usize = 64;
const TOLERANCE: f32 = 1e-5;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn logits(model: &Model) -> Tensor {
    let x = common::read_npy("digits/test_x.npy").rows(0, ROWS);
    model.run(vec![x]).unwrap().remove(0)
}

fn regenerate() {
    if !cfg!(target_arch = "x86_64") {
        panic!("the golden files are made on x86-64");
    }
    let root = common::key();
    let signer = common::key();
    let (doc, trust) = common::trust_with(&root, &[&signer], 1, 4_102_444_800); // 2100-01-01
    let bundle = common::pack_model("digits", &[signer]);
    let model = Model::load(&bundle, &trust, &LoadOptions::default()).unwrap();
    std::fs::write(data("digits-golden.efb"), &bundle).unwrap();
    std::fs::write(data("trust.cbor"), &doc).unwrap();
    std::fs::write(
        data("root.pub"),
        edge_runtime::keys::public_key_text(&root.verifying_key()),
    )
    .unwrap();
    std::fs::write(
        data("digits-golden-logits.npy"),
        edge_runtime::npy::write(&logits(&model)),
    )
    .unwrap();
}

#[test]
fn the_x86_bundle_verifies_and_predicts_the_same_logits_here() {
    if std::env::var_os("EDGE_UPDATE_GOLDEN").is_some() {
        regenerate();
    }
    let root = edge_runtime::keys::read_public_key(&data("root.pub")).unwrap();
    let trust = TrustRoot::from_bytes(
        &std::fs::read(data("trust.cbor")).unwrap(),
        RootAnchor::Pinned(root),
    )
    .unwrap();
    let bundle = std::fs::read(data("digits-golden.efb")).unwrap();
    let model = Model::load(&bundle, &trust, &LoadOptions::default())
        .expect("the x86-64 bundle verifies and passes its self-test on this architecture");

    let got = logits(&model);
    let want = edge_runtime::npy::read(
        std::fs::File::open(data("digits-golden-logits.npy")).unwrap(),
        1 << 20,
    )
    .unwrap();
    assert_eq!(got.shape, vec![ROWS, 10]);
    assert_eq!(got.shape, want.shape);
    let (TensorData::F32(got), TensorData::F32(want)) = (&got.data, &want.data) else {
        panic!("f32 logits")
    };
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0f32, f32::max);
    eprintln!(
        "{}: max relative logit difference vs x86-64 = {worst:e}",
        std::env::consts::ARCH
    );
    assert!(
        worst <= TOLERANCE,
        "logits differ by {worst:e} > {TOLERANCE:e}"
    );

    // and the same labels
    let labels = |v: &[f32]| -> Vec<usize> {
        v.chunks(10)
            .map(|r| (0..10).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
            .collect()
    };
    assert_eq!(labels(got), labels(want));
}
