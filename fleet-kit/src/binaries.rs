//! The workspace's binaries (`ota-server`, `edge-agent`, `edgectl`): next to the running
//! executable (`edgectl` installed with them, or `target/<profile>/`), or one directory up (a test
//! runs from `target/<profile>/deps`); when missing and cargo is around (`cargo run`, `cargo
//! test`), built once with the same profile, cargo's progress shown (a first build is minutes).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// The workspace root (where this crate was built from).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The path of workspace binary `name`, built if missing.
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let here = exe.parent().context("the executable has no directory")?;
    let dirs = [Some(here), here.parent().filter(|_| here.ends_with("deps"))];
    let found = |dirs: &[Option<&Path>]| {
        dirs.iter()
            .flatten()
            .map(|d| d.join(name))
            .find(|p| p.exists())
    };
    if let Some(path) = found(&dirs) {
        return Ok(path);
    }
    let profile_dir = dirs.iter().flatten().last().copied().unwrap_or(here);
    build(profile_dir)?;
    match found(&dirs) {
        Some(path) => Ok(path),
        None => bail!(
            "{name} not found next to {}: build it (cargo build --release -p ota-server \
             -p device-agent -p edgectl)",
            exe.display()
        ),
    }
}

/// Builds the three binaries into `profile_dir`'s profile, once per process.
fn build(profile_dir: &Path) -> Result<()> {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return Ok(());
    }
    let Ok(cargo) = std::env::var("CARGO") else {
        return Ok(()); // not under cargo: the caller says what is missing
    };
    eprintln!(
        "building ota-server, edge-agent and edgectl (a first build takes a few minutes; \
         cargo's progress follows) ..."
    );
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-p",
        "ota-server",
        "-p",
        "device-agent",
        "-p",
        "edgectl",
    ])
    .current_dir(workspace());
    if profile_dir.ends_with("release") {
        cmd.arg("--release");
    }
    if !cmd.status()?.success() {
        bail!("building the workspace's binaries failed");
    }
    *built = true;
    Ok(())
}
