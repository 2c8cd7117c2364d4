//! Writing a bundle file so that a file with its final name is always complete: `<name>.part`,
//! fsync, rename, fsync of the directory. Used by the device's slots and the server's registry.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `dir/name` durably and atomically; returns the path. A crash leaves either
/// no `name` or the whole file (and perhaps a stray `name.part` to clean up).
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    let part = dir.join(format!("{name}.part"));
    let mut f = File::create(&part)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&part, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_the_whole_file_under_its_name_and_leaves_no_part() {
        let dir = tempfile::tempdir().unwrap();
        let p = super::write_durably(dir.path(), "a.efb", b"abc").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        assert!(!dir.path().join("a.efb.part").exists());
    }
}
