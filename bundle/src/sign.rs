//! Building a bundle: fill in the payload identity, encode the manifest, sign it with each key.

use ed25519_dalek::{Signer, SigningKey};
use minicbor::bytes::ByteArray;
use sha2::{Digest, Sha256};

use super::container::{self, SignatureRecord};
use super::manifest::{Manifest, PayloadInfo};
use crate::keys::KeyId;

/// Domain-separation prefix of the signed message: a bundle signature can never be replayed as a
/// signature over some other kind of document.
pub const MANIFEST_DOMAIN: &[u8] = b"edgefleet bundle manifest v1\0";

/// The message a bundle signature covers.
pub(crate) fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(MANIFEST_DOMAIN.len() + manifest.len());
    m.extend_from_slice(MANIFEST_DOMAIN);
    m.extend_from_slice(manifest);
    m
}

/// Builds a bundle from a manifest (whose `payload` digest and size are overwritten with the
/// payload's real ones; its format and source digest are kept) and signs it with every key given.
pub fn build(mut manifest: Manifest, payload: &[u8], keys: &[SigningKey]) -> Vec<u8> {
    manifest.payload = PayloadInfo {
        format: manifest.payload.format,
        sha256: ByteArray::from(<[u8; 32]>::from(Sha256::digest(payload))),
        size: payload.len() as u64,
        source_sha256: manifest.payload.source_sha256,
    };
    let manifest_bytes = minicbor::to_vec(&manifest).expect("encoding into a Vec cannot fail");
    let message = signed_message(&manifest_bytes);
    let signatures: Vec<SignatureRecord> = keys
        .iter()
        .map(|k| SignatureRecord {
            key_id: KeyId::of(&k.verifying_key()),
            signature: k.sign(&message).to_bytes(),
        })
        .collect();
    container::write(&manifest_bytes, &signatures, payload)
}
