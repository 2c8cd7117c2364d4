//! `examples/c/predict.c`, compiled with the host C compiler against `libedgefleet.so` and run on
//! the digits bundle: its JSON answer matches the Rust API's. (cross/test.sh does the same for
//! aarch64 under qemu-aarch64.)

mod common;

use std::path::PathBuf;
use std::process::Command;

use edge_runtime::trust::{RootAnchor, TrustRoot};
use edge_runtime::{LoadOptions, Model};

/// `target/<profile>`, next to this test's `deps/`, after building `libedgefleet.so` there: cargo
/// builds only the rlib for a crate's own tests, so the C library could be stale without this.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "edge-runtime-capi", "--lib"]);
    if dir.file_name().is_some_and(|p| p == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo build -p edge-runtime-capi failed");
    dir
}

#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "built for another architecture: cross/test.sh runs the C example under qemu"
)]
fn the_c_example_predicts_like_the_rust_api() {
    let fleet = common::digits_fleet();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let lib = lib_dir();
    assert!(
        lib.join("libedgefleet.so").exists(),
        "{} has no libedgefleet.so",
        lib.display()
    );
    let exe = fleet.path("predict");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-I"])
        .arg(root.join("runtime/include"))
        .arg(root.join("examples/c/predict.c"))
        .arg("-L")
        .arg(&lib)
        .args(["-ledgefleet", "-o"])
        .arg(&exe)
        .output()
        .expect("a C compiler (cc) is installed");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let trust = TrustRoot::from_bytes(
        &fleet.trust,
        RootAnchor::Pinned(edge_runtime::keys::parse_public_key(&fleet.root_pub, "root").unwrap()),
    )
    .unwrap();
    let model = Model::load(&fleet.bundle, &trust, &LoadOptions::default()).unwrap();
    let labels = edge_runtime::npy::read(
        std::fs::File::open(common::models().join("digits/test_y.npy")).unwrap(),
        1 << 20,
    )
    .unwrap()
    .to_f64_vec();

    let run = |input: &str, root_pub: &str| {
        Command::new(&exe)
            .arg(fleet.path("digits.efb"))
            .arg(fleet.path("trust.cbor"))
            .arg(fleet.path(root_pub))
            .arg(fleet.path(input))
            .env("LD_LIBRARY_PATH", &lib)
            .output()
            .unwrap()
    };
    let mut correct = 0;
    for (i, label) in labels.iter().enumerate().take(5) {
        let digit = common::digit(i);
        common::write_npy(&fleet.path("x.npy"), &digit);
        let out = run("x.npy", "root.pub");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "predict exited {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = stdout.lines();
        let answer: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        let rust = model.predict(vec![digit.clone()]).unwrap();
        let rust: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&rust).unwrap()).unwrap();
        assert_eq!(answer["results"], rust["results"]);
        assert!(lines.next().unwrap().starts_with("output logits [1,10] "));
        if answer["results"][0]["class_index"] == *label as u64 {
            correct += 1;
        }
    }
    assert!(correct >= 4, "{correct}/5 digits right");

    // REPEAT: the latency check prints the median the library measured
    let out = Command::new(&exe)
        .arg(fleet.path("digits.efb"))
        .arg(fleet.path("trust.cbor"))
        .arg(fleet.path("root.pub"))
        .arg(fleet.path("x.npy"))
        .arg("25")
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let median: f64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("median_latency_ms "))
        .and_then(|l| l.strip_suffix(" over 25 (input buffer, pinned: 0)"))
        .expect("a median line")
        .parse()
        .unwrap();
    assert!(median > 0.0 && median < 1000.0, "{median}");
    let stats = stderr
        .lines()
        .find_map(|l| l.strip_prefix("stats: "))
        .unwrap();
    let stats: serde_json::Value = serde_json::from_str(stats).unwrap();
    assert_eq!(stats["requests"], 26, "every call counted");

    // a trust root signed by another root: the C program reports the library's error and code
    common::write_npy(&fleet.path("x.npy"), &common::digit(0));
    let out = run("x.npy", "other-root.pub");
    assert_eq!(out.status.code(), Some(4), "EDGE_ERR_TRUST");
    assert!(String::from_utf8_lossy(&out.stderr).contains("load failed (4)"));
}
