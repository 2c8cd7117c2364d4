//! The C example cross-built for a board (`cross/build.sh TARGET` leaves it in
//! `target/cross/TARGET/examples/predict`, linked against that target's `libedgefleet.so`), run
//! under qemu-user on the x86-64 digits bundle: it must print the right digit and the logits
//! x86-64 computed, within 1e-5.
//!
//! Ignored in a plain `cargo test` (it needs the cross build); cross/test.sh runs it with
//! `EDGE_CROSS_TARGET=TARGET cargo test -p edge-runtime-capi --test cross_c_example -- --ignored`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use edge_runtime::TensorData;

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
    let data = workspace().join("runtime/tests/data");
    let tmp = tempfile::tempdir().unwrap();
    let golden = edge_runtime::npy::read(
        std::fs::File::open(data.join("digits-golden-logits.npy")).unwrap(),
        1 << 20,
    )
    .unwrap();
    let TensorData::F32(golden) = golden.data else {
        panic!("f32 logits")
    };
    let labels = common::read_npy("digits/test_y.npy").to_f64_vec();
    let other_root = edge_runtime::keys::generate().unwrap();
    std::fs::write(
        tmp.path().join("other-root.pub"),
        edge_runtime::keys::public_key_text(&other_root.verifying_key()),
    )
    .unwrap();

    let run = |row: usize, root: PathBuf| {
        let input = tmp.path().join(format!("digit{row}.npy"));
        common::write_npy(&input, &common::digit(row));
        Command::new(qemu)
            .args(["-L", sysroot])
            .arg(&predict)
            .arg(data.join("digits-golden.efb"))
            .arg(data.join("trust.cbor"))
            .arg(root)
            .arg(&input)
            .env("LD_LIBRARY_PATH", &out_dir)
            .output()
            .unwrap()
    };
    for row in 0..3 {
        let out = run(row, data.join("root.pub"));
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
        assert_eq!(answer["results"][0]["class_index"], labels[row] as u64);
        let logits: Vec<f32> = lines
            .next()
            .unwrap()
            .strip_prefix("output logits [1,10] ")
            .expect("the logits line")
            .split(' ')
            .map(|v| v.parse().unwrap())
            .collect();
        for (got, want) in logits.iter().zip(&golden[row * 10..row * 10 + 10]) {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{target}: logit {got} vs x86-64 {want}"
            );
        }
    }
    let out = run(0, tmp.path().join("other-root.pub"));
    assert_eq!(out.status.code(), Some(4), "EDGE_ERR_TRUST under {qemu}");
}
