//! `edgectl keygen`: a new ed25519 key pair on disk, the secret readable only by its owner.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use edge_runtime::keys;

/// Writes `DIR/NAME.key` (0600) and `DIR/NAME.pub`; refuses to overwrite.
pub fn keygen(dir: &Path, name: &str) -> Result<()> {
    if name.is_empty() || name.contains(['/', '\\']) {
        bail!("key name '{name}' must be a plain file name");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = keys::generate()?;
    let secret_path = dir.join(format!("{name}.key"));
    let public_path = dir.join(format!("{name}.pub"));
    for p in [&secret_path, &public_path] {
        if p.exists() {
            bail!("{} exists; refusing to overwrite a key", p.display());
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(&secret_path)
        .with_context(|| format!("cannot create {}", secret_path.display()))?;
    f.write_all(keys::secret_key_text(&key).as_bytes())?;
    f.sync_all()?;
    std::fs::write(&public_path, keys::public_key_text(&key.verifying_key()))?;
    println!(
        "{} (secret, 0600)\n{} (public)\nkey id {}",
        secret_path.display(),
        public_path.display(),
        keys::KeyId::of(&key.verifying_key())
    );
    Ok(())
}
