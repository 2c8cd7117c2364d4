//! Ed25519 keys on disk and their ids: generation, the `.key` / `.pub` file formats, key ids.
//!
//! Files are text: one header line naming the kind, then 64 hex characters. A key id is the
//! sha256 of the 32-byte public key; it names a key inside bundles and trust documents.

use std::fmt;
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::KeyError;

const SECRET_HEADER: &str = "edgefleet ed25519 secret key v1";
const PUBLIC_HEADER: &str = "edgefleet ed25519 public key v1";

/// sha256 of a public key: how bundles and trust documents name a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> KeyId {
        KeyId(Sha256::digest(key.as_bytes()).into())
    }

    /// First 8 bytes in hex: what humans see.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.short())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// A new random signing key from the operating system's CSPRNG.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// Text form of a secret key file.
pub fn secret_key_text(key: &SigningKey) -> String {
    format!("{SECRET_HEADER}\n{}\n", hex::encode(key.to_bytes()))
}

/// Text form of a public key file.
pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_HEADER}\n{}\n", hex::encode(key.as_bytes()))
}

fn parse_hex32(text: &str, header: &str, path: &str) -> Result<[u8; 32], KeyError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    let hex_line = if first == header {
        lines.next().unwrap_or_default()
    } else if first.starts_with("edgefleet ") {
        return Err(KeyError::WrongKind {
            path: path.into(),
            expected: header.into(),
            found: first.into(),
        });
    } else {
        first
    };
    let bytes = hex::decode(hex_line).map_err(|_| KeyError::Malformed { path: path.into() })?;
    bytes
        .try_into()
        .map_err(|_| KeyError::Malformed { path: path.into() })
}

/// Parses a secret key file's text.
pub fn parse_secret_key(text: &str, path: &str) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&parse_hex32(
        text,
        SECRET_HEADER,
        path,
    )?))
}

/// Parses a public key file's text (a secret key file is refused: it would leak into configs).
pub fn parse_public_key(text: &str, path: &str) -> Result<VerifyingKey, KeyError> {
    let bytes = parse_hex32(text, PUBLIC_HEADER, path)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotAPoint { path: path.into() })
}

/// Reads a `.key` file.
pub fn read_secret_key(path: &Path) -> Result<SigningKey, KeyError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::Io {
        path: p.clone(),
        source: e,
    })?;
    parse_secret_key(&text, &p)
}

/// Reads a `.pub` file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::Io {
        path: p.clone(),
        source: e,
    })?;
    parse_public_key(&text, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_kinds_are_not_confused() {
        let k = generate().unwrap();
        let s = secret_key_text(&k);
        let p = public_key_text(&k.verifying_key());
        assert_eq!(parse_secret_key(&s, "k").unwrap().to_bytes(), k.to_bytes());
        assert_eq!(parse_public_key(&p, "p").unwrap(), k.verifying_key());
        assert!(matches!(
            parse_public_key(&s, "k"),
            Err(KeyError::WrongKind { .. })
        ));
        assert!(matches!(
            parse_secret_key("zz", "k"),
            Err(KeyError::Malformed { .. })
        ));
        assert_ne!(generate().unwrap().to_bytes(), k.to_bytes());
    }
}
