//! The byte layout of a `.efb` file, and nothing else: reading the length-prefixed sections under
//! limits, and writing them. No cryptography and no CBOR here.
//!
//! ```text
//! magic        8 bytes   89 45 46 42 0d 0a 1a 0a   ("\x89EFB\r\n\x1a\n", PNG-style)
//! version      u16 BE    1
//! flags        u16 BE    0 (reserved; any bit set is refused)
//! manifest_len u32 BE    then manifest_len bytes of CBOR (the signed manifest)
//! sig_count    u16 BE    then sig_count records of 32-byte key id + 64-byte ed25519 signature
//! payload_len  u64 BE    then payload_len bytes (the ONNX graph)
//! ```

use std::io::{self, Read};

use super::Limits;
use crate::error::{BundleError, Section};
use crate::keys::KeyId;

/// The magic bytes opening every bundle.
pub const MAGIC: [u8; 8] = *b"\x89EFB\r\n\x1a\n";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes in one signature record.
pub const SIGNATURE_RECORD: usize = 32 + 64;

/// A signature record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureRecord {
    /// Which key signed.
    pub key_id: KeyId,
    /// The ed25519 signature over the domain-separated manifest.
    pub signature: [u8; 64],
}

/// Everything before the payload bytes, read and size-checked but not interpreted.
#[derive(Debug)]
pub struct Head {
    /// Raw manifest bytes (unverified until the signatures are checked).
    pub manifest: Vec<u8>,
    /// Signature records.
    pub signatures: Vec<SignatureRecord>,
    /// Declared payload length.
    pub payload_len: u64,
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], section: Section) -> Result<(), BundleError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => BundleError::Truncated(section),
        _ => BundleError::Io(e),
    })
}

fn read_array<const N: usize>(r: &mut impl Read, section: Section) -> Result<[u8; N], BundleError> {
    let mut b = [0u8; N];
    read_exact_or(r, &mut b, section)?;
    Ok(b)
}

/// Reads magic, header, manifest, signatures and the payload length, enforcing `limits` on every
/// length before allocating for it.
pub fn read_head(r: &mut impl Read, limits: &Limits) -> Result<Head, BundleError> {
    if read_array::<8>(r, Section::Magic)? != MAGIC {
        return Err(BundleError::BadMagic);
    }
    let header = read_array::<4>(r, Section::Header)?;
    let version = u16::from_be_bytes([header[0], header[1]]);
    if version != FORMAT_VERSION {
        return Err(BundleError::UnsupportedVersion(version));
    }
    let flags = u16::from_be_bytes([header[2], header[3]]);
    if flags != 0 {
        return Err(BundleError::UnknownFlags(flags));
    }
    let manifest_len = u32::from_be_bytes(read_array(r, Section::ManifestLength)?) as u64;
    if manifest_len > limits.max_manifest_bytes {
        return Err(BundleError::ManifestTooLarge {
            declared: manifest_len,
            limit: limits.max_manifest_bytes,
        });
    }
    let mut manifest = vec![0u8; manifest_len as usize];
    read_exact_or(r, &mut manifest, Section::Manifest)?;

    let count = u16::from_be_bytes(read_array(r, Section::SignatureCount)?) as u64;
    if count > limits.max_signatures {
        return Err(BundleError::TooManySignatures {
            declared: count,
            limit: limits.max_signatures,
        });
    }
    let mut signatures = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let rec = read_array::<SIGNATURE_RECORD>(r, Section::Signature)?;
        let mut key_id = [0u8; 32];
        key_id.copy_from_slice(&rec[..32]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&rec[32..]);
        signatures.push(SignatureRecord {
            key_id: KeyId(key_id),
            signature,
        });
    }
    let payload_len = u64::from_be_bytes(read_array(r, Section::PayloadLength)?);
    Ok(Head {
        manifest,
        signatures,
        payload_len,
    })
}

/// Writes a whole bundle.
pub fn write(manifest: &[u8], signatures: &[SignatureRecord], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        8 + 4 + 4 + manifest.len() + 2 + signatures.len() * SIGNATURE_RECORD + 8 + payload.len(),
    );
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(manifest.len() as u32).to_be_bytes());
    out.extend_from_slice(manifest);
    out.extend_from_slice(&(signatures.len() as u16).to_be_bytes());
    for s in signatures {
        out.extend_from_slice(&s.key_id.0);
        out.extend_from_slice(&s.signature);
    }
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Offsets of each section in a bundle written by [`write`] (for tests and `inspect`).
#[derive(Clone, Debug)]
pub struct SectionOffsets {
    /// (section, start, end) in file order.
    pub sections: Vec<(Section, usize, usize)>,
}

/// Computes section offsets for a bundle with the given part sizes.
pub fn offsets(manifest_len: usize, sig_count: usize, payload_len: usize) -> SectionOffsets {
    let mut at = 0;
    let mut sections = Vec::new();
    for (section, len) in [
        (Section::Magic, 8),
        (Section::Header, 4),
        (Section::ManifestLength, 4),
        (Section::Manifest, manifest_len),
        (Section::SignatureCount, 2),
        (Section::Signature, sig_count * SIGNATURE_RECORD),
        (Section::PayloadLength, 8),
        (Section::Payload, payload_len),
    ] {
        sections.push((section, at, at + len));
        at += len;
    }
    SectionOffsets { sections }
}
