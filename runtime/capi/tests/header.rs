//! The committed C header (`runtime/include/edge_runtime.h`) is what cbindgen makes of the C ABI
//! today. `EDGE_UPDATE_HEADER=1 cargo test -p edge-runtime-capi --test header` rewrites it.

use std::path::PathBuf;

#[test]
fn the_committed_header_is_current() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen parses the C ABI")
        .write(&mut generated);
    let path = crate_dir.join("../include/edge_runtime.h");
    if std::env::var_os("EDGE_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with runtime/capi/src/lib.rs; regenerate it with \
         EDGE_UPDATE_HEADER=1 cargo test -p edge-runtime-capi --test header",
        path.display()
    );
}
