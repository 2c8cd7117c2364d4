//! The C example cross-built for a board (`cross/build.sh TARGET` leaves it in
//! `target/cross/TARGET/examples/predict`, linked against that target's `libedgefleet.so`), run
//! under qemu-user on a digits bundle packed here as devices get them (the optimized NNEF
//! payload: board builds have no ONNX reader): it must print the right digit and the logits the
//! host computes from the same bundle, within 1e-5.
//!
//! Ignored in a plain `cargo test` (it needs the cross build); cross/test.sh runs it with
//! `EDGE_CROSS_TARGET=TARGET cargo test -p edge-runtime-capi --test cross_c_example -- --ignored`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use edge_runtime::trust::{RootAnchor, TrustRoot};
use edge_runtime::{LoadOptions, Model, TensorData};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
#[ignore = "needs cross/build.sh TARGET first; run by cross/test.sh"]
fn the_cross_built_c_example_predicts_under_qemu() {
    let target = std::env::var("EDGE_CROSS_TARGET").expect("EDGE_CROSS_TARGET names the target");
    let (qemu, sysroot) = match target.as_str() {
        "aarch64-unknown-linux-gnu" => ("qemu-aarch64", "/usr/aarch64-linux-gnu"),
        "armv7-unknown-linux-gnueabihf" => ("qemu-arm", "/usr/arm-linux-gnueabihf"),
        other => panic!("unknown target {other}"),
    };
    let out_dir = workspace().join("target/cross").join(&target);
    let predict = out_dir.join("examples/predict");
    assert!(predict.exists(), "run cross/build.sh {target} first");
    let fleet = common::digits_fleet();
    let trust = TrustRoot::from_bytes(
        &fleet.trust,
        RootAnchor::Pinned(edge_runtime::keys::parse_public_key(&fleet.root_pub, "root").unwrap()),
    )
    .unwrap();
    let host = Model::load(&fleet.bundle, &trust, &LoadOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let labels = common::read_npy("digits/test_y.npy").to_f64_vec();

    let run = |row: usize, root: PathBuf| {
        let input = tmp.path().join(format!("digit{row}.npy"));
        common::write_npy(&input, &common::digit(row));
        Command::new(qemu)
            .args(["-L", sysroot])
            .arg(&predict)
            .arg(fleet.path("digits.efb"))
            .arg(fleet.path("trust.cbor"))
            .arg(root)
            .arg(&input)
            .env("LD_LIBRARY_PATH", &out_dir)
            .output()
            .unwrap()
    };
    for (row, label) in labels.iter().enumerate().take(3) {
        let out = run(row, fleet.path("root.pub"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{qemu} predict exited {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = stdout.lines();
        let answer: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        println!("{target} digit {row}: {}", answer["results"][0]);
        assert_eq!(answer["results"][0]["class_index"], *label as u64);
        let logits: Vec<f32> = lines
            .next()
            .unwrap()
            .strip_prefix("output logits [1,10] ")
            .expect("the logits line")
            .split(' ')
            .map(|v| v.parse().unwrap())
            .collect();
        let outputs = host.run(vec![common::digit(row)]).unwrap();
        let TensorData::F32(want) = &outputs[0].data else {
            panic!("f32 logits")
        };
        for (got, want) in logits.iter().zip(want) {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{target}: logit {got} vs x86-64 {want}"
            );
        }
    }
    let out = run(0, fleet.path("other-root.pub"));
    assert_eq!(out.status.code(), Some(4), "EDGE_ERR_TRUST under {qemu}");
}
