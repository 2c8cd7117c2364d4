//! The fleet trust root (`trust.cbor`): which keys may sign bundles (with a threshold), which key
//! signs desired states (the director), when the document expires — all signed by the offline
//! root key. TUF-style rotation: a newer document is accepted only if the current root signed it
//! (and its own root key too, when it names a new one).
//!
//! Encoding: CBOR envelope `[body: bytes, signatures: [[key_id, sig]...]]`; the signature covers
//! [`TRUST_DOMAIN`] followed by the body bytes.

use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use minicbor::bytes::{ByteArray, ByteVec};
use minicbor::{Decode, Encode};

use crate::error::TrustError;
use crate::keys::KeyId;

/// Whether expiry dates are enforced. Default: [`Expiry::Enforce`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expiry {
    /// Refuse expired bundles and trust documents.
    #[default]
    Enforce,
    /// **CAUTION**: accept expired bundles and trust documents. An attacker who holds an old,
    /// withdrawn bundle can then install it again. Only for forensics on a bench.
    Ignore,
}

/// Domain-separation prefix of the trust document signature.
pub const TRUST_DOMAIN: &[u8] = b"edgefleet trust root v1\0";
/// Largest trust document accepted.
pub const MAX_TRUST_BYTES: usize = 1024 * 1024;

/// A named public key in the trust document.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct TrustedKey {
    /// Human name (from the `.pub` file name).
    #[n(0)]
    pub name: String,
    /// Ed25519 public key.
    #[n(1)]
    pub key: ByteArray<32>,
}

/// The signed content of a trust document.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct TrustBody {
    /// Monotonic version; rotation needs a higher one.
    #[n(0)]
    pub version: u32,
    /// Creation time, unix seconds.
    #[n(1)]
    pub created: u64,
    /// Expiry, unix seconds.
    #[n(2)]
    pub expires: u64,
    /// The root key that signs this document and the next one.
    #[n(3)]
    pub root_key: ByteArray<32>,
    /// Model-signing keys.
    #[n(4)]
    pub signers: Vec<TrustedKey>,
    /// Signatures needed on a bundle, from distinct signing keys.
    #[n(5)]
    pub threshold: u8,
    /// Key that signs desired-state documents.
    #[n(6)]
    pub director: Option<TrustedKey>,
}

#[derive(Encode, Decode)]
struct SigEntry {
    #[n(0)]
    key_id: ByteArray<32>,
    #[n(1)]
    sig: ByteArray<64>,
}

#[derive(Encode, Decode)]
struct Envelope {
    #[n(0)]
    body: ByteVec,
    #[n(1)]
    signatures: Vec<SigEntry>,
}

/// Where trust in a trust document comes from.
#[derive(Clone, Copy, Debug)]
pub enum RootAnchor {
    /// The root public key provisioned on the device: the document must be signed by it and name
    /// it as its root. The right choice on devices.
    Pinned(VerifyingKey),
    /// **CAUTION**: accept whatever root the document names, as long as it signed the document
    /// (trust on first use). Anyone can make such a document; use only where the file itself is
    /// trusted (an operator's own workstation, a freshly flashed image).
    SelfSigned,
}

/// A verified trust document.
#[derive(Clone, Debug)]
pub struct TrustRoot {
    body: TrustBody,
    root: VerifyingKey,
    signers: Vec<(KeyId, String, VerifyingKey)>,
    director: Option<VerifyingKey>,
    bytes: Vec<u8>,
}

fn key_from(bytes: &ByteArray<32>, what: &str) -> Result<VerifyingKey, TrustError> {
    VerifyingKey::from_bytes(bytes)
        .map_err(|_| TrustError::Malformed(format!("{what} is not a valid ed25519 key")))
}

fn message(body: &[u8]) -> Vec<u8> {
    [TRUST_DOMAIN, body].concat()
}

fn decode_envelope(bytes: &[u8]) -> Result<Envelope, TrustError> {
    if bytes.len() > MAX_TRUST_BYTES {
        return Err(TrustError::TooLarge(bytes.len()));
    }
    minicbor::decode(bytes).map_err(|e| TrustError::Malformed(e.to_string()))
}

fn signed_by(env: &Envelope, key: &VerifyingKey) -> bool {
    let id = KeyId::of(key);
    let msg = message(&env.body);
    env.signatures.iter().any(|s| {
        s.key_id[..] == id.0[..]
            && key
                .verify_strict(&msg, &Signature::from_bytes(&s.sig))
                .is_ok()
    })
}

impl TrustRoot {
    /// Verifies a trust document. With [`RootAnchor::Pinned`] the signature is checked before the
    /// body is decoded.
    pub fn from_bytes(bytes: &[u8], anchor: RootAnchor) -> Result<TrustRoot, TrustError> {
        let env = decode_envelope(bytes)?;
        if let RootAnchor::Pinned(root) = anchor {
            if !signed_by(&env, &root) {
                return Err(TrustError::NotSignedByRoot(KeyId::of(&root).short()));
            }
        }
        let body: TrustBody =
            minicbor::decode(&env.body).map_err(|e| TrustError::Malformed(e.to_string()))?;
        let root = key_from(&body.root_key, "root key")?;
        if let RootAnchor::Pinned(pinned) = anchor {
            if pinned != root {
                return Err(TrustError::WrongRoot {
                    pinned: KeyId::of(&pinned).short(),
                    found: KeyId::of(&root).short(),
                });
            }
        }
        if !signed_by(&env, &root) {
            return Err(TrustError::NotSignedByRoot(KeyId::of(&root).short()));
        }
        Self::from_verified_body(body, root, bytes.to_vec())
    }

    fn from_verified_body(
        body: TrustBody,
        root: VerifyingKey,
        bytes: Vec<u8>,
    ) -> Result<TrustRoot, TrustError> {
        let signers = body
            .signers
            .iter()
            .map(|k| {
                let key = key_from(&k.key, "signing key")?;
                Ok((KeyId::of(&key), k.name.clone(), key))
            })
            .collect::<Result<Vec<_>, TrustError>>()?;
        if body.threshold == 0 || body.threshold as usize > signers.len() {
            return Err(TrustError::BadThreshold {
                threshold: body.threshold,
                signers: signers.len(),
            });
        }
        let director = body
            .director
            .as_ref()
            .map(|d| key_from(&d.key, "director key"))
            .transpose()?;
        Ok(TrustRoot {
            body,
            root,
            signers,
            director,
            bytes,
        })
    }

    /// Accepts `new` as the successor of this trust document: it must be signed by this
    /// document's root key (and by its own root key, if it rotates the root), carry a higher
    /// version, and not be expired.
    pub fn rotate(&self, new: &[u8], expiry: Expiry, now: u64) -> Result<TrustRoot, TrustError> {
        let env = decode_envelope(new)?;
        if !signed_by(&env, &self.root) {
            return Err(TrustError::NotSignedByRoot(KeyId::of(&self.root).short()));
        }
        let next = TrustRoot::from_bytes(new, RootAnchor::SelfSigned)?;
        if next.body.version <= self.body.version {
            return Err(TrustError::NotNewer {
                current: self.body.version,
                new: next.body.version,
            });
        }
        if expiry == Expiry::Enforce {
            next.check_expiry(now)?;
        }
        Ok(next)
    }

    /// Refuses an expired document.
    pub fn check_expiry(&self, now: u64) -> Result<(), TrustError> {
        if now >= self.body.expires {
            return Err(TrustError::Expired {
                version: self.body.version,
                expired_at: self.body.expires,
                now,
            });
        }
        Ok(())
    }

    /// The trusted signing key with this id.
    pub fn signing_key(&self, id: &KeyId) -> Option<&VerifyingKey> {
        self.signers
            .iter()
            .find(|(k, _, _)| k == id)
            .map(|(_, _, key)| key)
    }

    /// Signing keys: id, name, key.
    pub fn signers(&self) -> &[(KeyId, String, VerifyingKey)] {
        &self.signers
    }

    /// Signatures required on a bundle.
    pub fn threshold(&self) -> usize {
        self.body.threshold as usize
    }

    /// The director key, if the fleet has one.
    pub fn director(&self) -> Option<&VerifyingKey> {
        self.director.as_ref()
    }

    /// The root key.
    pub fn root(&self) -> &VerifyingKey {
        &self.root
    }

    /// The verified body.
    pub fn body(&self) -> &TrustBody {
        &self.body
    }

    /// The document's bytes, as verified.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Parameters of a new trust document.
pub struct TrustSpec {
    /// Version (1 for a new fleet; higher for a rotation).
    pub version: u32,
    /// Creation time, unix seconds.
    pub created: u64,
    /// Expiry, unix seconds.
    pub expires: u64,
    /// Model-signing keys with names.
    pub signers: Vec<(String, VerifyingKey)>,
    /// Threshold.
    pub threshold: u8,
    /// Director key with its name.
    pub director: Option<(String, VerifyingKey)>,
}

impl TrustSpec {
    /// A throwaway spec: version 1, never expiring, trusting exactly `signer` (threshold 1), no
    /// director. For in-process trust roots only (the packer's provisional load, tests); a
    /// fleet's real trust root comes from `edgectl trust init`, with an expiry.
    pub fn ephemeral(signer: &VerifyingKey) -> TrustSpec {
        TrustSpec {
            version: 1,
            created: 0,
            expires: u64::MAX,
            signers: vec![("ephemeral".into(), *signer)],
            threshold: 1,
            director: None,
        }
    }
}

/// Makes and signs a trust document. `root` is the document's root key; `previous_root`, when
/// rotating to a new root key, is the current root, which must sign too.
pub fn create(
    spec: &TrustSpec,
    root: &SigningKey,
    previous_root: Option<&SigningKey>,
) -> Result<Vec<u8>, TrustError> {
    if spec.threshold == 0 || spec.threshold as usize > spec.signers.len() {
        return Err(TrustError::BadThreshold {
            threshold: spec.threshold,
            signers: spec.signers.len(),
        });
    }
    let tk = |(name, key): &(String, VerifyingKey)| TrustedKey {
        name: name.clone(),
        key: ByteArray::from(key.to_bytes()),
    };
    let body = TrustBody {
        version: spec.version,
        created: spec.created,
        expires: spec.expires,
        root_key: ByteArray::from(root.verifying_key().to_bytes()),
        signers: spec.signers.iter().map(tk).collect(),
        threshold: spec.threshold,
        director: spec.director.as_ref().map(tk),
    };
    let body_bytes = minicbor::to_vec(&body).map_err(|e| TrustError::Build(e.to_string()))?;
    let msg = message(&body_bytes);
    let mut signatures = Vec::new();
    for key in std::iter::once(root).chain(previous_root) {
        signatures.push(SigEntry {
            key_id: ByteArray::from(KeyId::of(&key.verifying_key()).0),
            sig: ByteArray::from(key.sign(&msg).to_bytes()),
        });
    }
    minicbor::to_vec(Envelope {
        body: ByteVec::from(body_bytes),
        signatures,
    })
    .map_err(|e| TrustError::Build(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate;

    fn spec(version: u32, expires: u64, signer: &SigningKey) -> TrustSpec {
        TrustSpec {
            version,
            created: 0,
            expires,
            signers: vec![("s".into(), signer.verifying_key())],
            threshold: 1,
            director: None,
        }
    }

    #[test]
    fn pinned_root_and_rotation() {
        let root = generate().unwrap();
        let other = generate().unwrap();
        let signer = generate().unwrap();
        let doc = create(&spec(1, u64::MAX, &signer), &root, None).unwrap();
        let trust = TrustRoot::from_bytes(&doc, RootAnchor::Pinned(root.verifying_key())).unwrap();
        assert_eq!(trust.threshold(), 1);
        // a document made by another root is refused when the root is pinned
        let forged = create(&spec(2, u64::MAX, &signer), &other, None).unwrap();
        assert!(matches!(
            TrustRoot::from_bytes(&forged, RootAnchor::Pinned(root.verifying_key())),
            Err(TrustError::NotSignedByRoot(_))
        ));
        // ... and as a rotation
        assert!(matches!(
            trust.rotate(&forged, Expiry::Enforce, 1),
            Err(TrustError::NotSignedByRoot(_))
        ));
        // a rotation to a new root signed by both is accepted; the same version is not
        let rotated = create(&spec(2, u64::MAX, &signer), &other, Some(&root)).unwrap();
        let next = trust.rotate(&rotated, Expiry::Enforce, 1).unwrap();
        assert_eq!(next.root(), &other.verifying_key());
        assert!(matches!(
            next.rotate(&rotated, Expiry::Enforce, 1),
            Err(TrustError::NotNewer { .. })
        ));
        // expired
        let old = create(&spec(3, 10, &signer), &other, None).unwrap();
        assert!(matches!(
            next.rotate(&old, Expiry::Enforce, 11),
            Err(TrustError::Expired { .. })
        ));
        // threshold above the signer count
        let mut bad = spec(1, u64::MAX, &signer);
        bad.threshold = 2;
        assert!(matches!(
            create(&bad, &root, None),
            Err(TrustError::BadThreshold { .. })
        ));
        // garbage
        assert!(TrustRoot::from_bytes(b"\xff\x00garbage", RootAnchor::SelfSigned).is_err());
    }
}
