//! Verifying a bundle, as the numbered steps of DESIGN decision 4. The output type,
//! [`VerifiedBundle`], can only be made here.

use std::collections::BTreeSet;
use std::io::{self, Read};

use ed25519_dalek::Signature;
use sha2::{Digest, Sha256};

use super::container::{self, SignatureRecord};
use super::manifest::Manifest;
use super::sign::signed_message;
use super::Limits;
use crate::error::{BundleError, Section};
use crate::keys::KeyId;
use crate::trust::{Expiry, TrustRoot};

/// What [`verify`] checks besides the signatures.
#[derive(Clone, Debug, Default)]
pub struct VerifyPolicy {
    /// Size limits.
    pub limits: Limits,
    /// Expiry enforcement.
    pub expiry: Expiry,
    /// The device's anti-rollback floor for this model, if any: lower versions are refused.
    pub floor: Option<semver::Version>,
    /// The time to check expiry against (unix seconds); `None` = the system clock.
    pub now: Option<u64>,
}

/// A bundle whose signatures, sizes and payload digest have all been checked against a trust
/// root. The only way in to an engine.
#[derive(Clone, Debug)]
pub struct VerifiedBundle {
    manifest: Manifest,
    version: semver::Version,
    payload: Vec<u8>,
    digest: [u8; 32],
    signers: Vec<KeyId>,
}

impl VerifiedBundle {
    /// The signed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The manifest version, parsed.
    pub fn version(&self) -> &semver::Version {
        &self.version
    }
    /// The verified payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    /// sha256 of the whole bundle file (its content address).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }
    /// `sha256:<hex>` of the whole bundle file.
    pub fn digest_text(&self) -> String {
        format!("sha256:{}", hex::encode(self.digest))
    }
    /// Trusted keys whose signatures verified.
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }
}

/// Hashes everything read through it (the whole-file digest), unless that digest is taken
/// elsewhere (`None`).
struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// From this size on, [`verify_bytes`] takes the whole-file digest on a second thread. Below
/// it the hash is a few milliseconds, and a load already runs one helper beside verification
/// (the payload reader's build, ~10 ms): on a two-core board a third thread made a 4 MB int8
/// bundle's verification slower (4.3 → 3.5–7.9 ms), a 14 MB fp32 one faster (19 → 13 ms).
const PARALLEL_DIGEST_BYTES: usize = 8 << 20;

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verifies a bundle held in memory.
pub fn verify_bytes(
    bytes: &[u8],
    trust: &TrustRoot,
    policy: &VerifyPolicy,
) -> Result<VerifiedBundle, BundleError> {
    let limits = &policy.limits;
    let most = limits.max_manifest_bytes + limits.max_payload_bytes + (1 << 20);
    if bytes.len() < PARALLEL_DIGEST_BYTES || bytes.len() as u64 > most {
        // small, or past every limit (the streaming path refuses it at its header)
        return verify(bytes, trust, policy);
    }
    // the whole file's digest (the bundle's content address) on a second core while the
    // payload's own is checked: the two hashes of the same bytes were half of a 14 MB
    // model's load; where no thread can be started, one pass hashes both. A refused bundle
    // stops the second hash at its next megabyte.
    let refused = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let whole = std::thread::Builder::new()
            .name("edge-bundle-digest".into())
            .spawn_scoped(scope, || {
                let mut hasher = Sha256::new();
                for chunk in bytes.chunks(1 << 20) {
                    if refused.load(std::sync::atomic::Ordering::Relaxed) {
                        return None;
                    }
                    hasher.update(chunk);
                }
                Some(<[u8; 32]>::from(hasher.finalize()))
            });
        let Ok(whole) = whole else {
            return verify(bytes, trust, policy);
        };
        let mut verified = verify_hashing(bytes, trust, policy, false).inspect_err(|_| {
            refused.store(true, std::sync::atomic::Ordering::Relaxed);
        })?;
        verified.digest = match whole.join() {
            Ok(Some(digest)) => digest,
            _ => Sha256::digest(bytes).into(),
        };
        Ok(verified)
    })
}

/// Verifies a bundle read from `reader` against `trust`.
pub fn verify(
    reader: impl Read,
    trust: &TrustRoot,
    policy: &VerifyPolicy,
) -> Result<VerifiedBundle, BundleError> {
    verify_hashing(reader, trust, policy, true)
}

/// [`verify`], taking the whole-file digest as it reads when `whole_file` (else the caller
/// sets [`VerifiedBundle::digest`]).
fn verify_hashing(
    reader: impl Read,
    trust: &TrustRoot,
    policy: &VerifyPolicy,
    whole_file: bool,
) -> Result<VerifiedBundle, BundleError> {
    let now = policy.now.unwrap_or_else(now_unix);
    let limits = &policy.limits;
    let mut r = HashingReader {
        inner: reader,
        hasher: whole_file.then(Sha256::new),
    };

    // 0. The trust root must itself be current.
    if policy.expiry == Expiry::Enforce {
        trust.check_expiry(now)?;
    }

    // 1. Magic, format version, flags; section lengths checked against the limits before any
    //    allocation (container::read_head).
    let head = container::read_head(&mut r, limits)?;

    // 2. Signatures over the domain-separated manifest bytes: every record naming a trusted key
    //    must verify (verify_strict); the distinct trusted keys must reach the threshold.
    let signers = check_signatures(&head.manifest, &head.signatures, trust)?;

    // 3. Only now is the (authenticated) manifest decoded.
    let manifest: Manifest =
        minicbor::decode(&head.manifest).map_err(|e| BundleError::BadManifest(e.to_string()))?;
    let version = semver::Version::parse(&manifest.version).map_err(|e| {
        BundleError::BadManifest(format!("version '{}' is not semver: {e}", manifest.version))
    })?;

    // 4. Payload size: the header must agree with the signed size, which must be under the limit.
    if head.payload_len != manifest.payload.size {
        return Err(BundleError::PayloadSizeMismatch {
            header: head.payload_len,
            manifest: manifest.payload.size,
        });
    }
    if manifest.payload.size > limits.max_payload_bytes {
        return Err(BundleError::PayloadTooLarge {
            declared: manifest.payload.size,
            limit: limits.max_payload_bytes,
        });
    }

    // 5. Expiry and the anti-rollback floor (cheap, before streaming a large payload).
    if let (Expiry::Enforce, Some(expires)) = (policy.expiry, manifest.expires) {
        if now >= expires {
            return Err(BundleError::Expired {
                expired_at: expires,
                now,
            });
        }
    }
    if let Some(floor) = &policy.floor {
        if &version < floor {
            return Err(BundleError::BelowFloor {
                version: version.to_string(),
                floor: floor.to_string(),
            });
        }
    }

    // 6. Stream the payload through sha256 (and into memory: its size is now signed and bounded),
    //    then require end of file.
    let mut payload = Vec::with_capacity(manifest.payload.size as usize);
    let mut payload_hasher = Sha256::new();
    let mut remaining = manifest.payload.size;
    let mut chunk = vec![0u8; 64 * 1024];
    while remaining > 0 {
        let want = remaining.min(chunk.len() as u64) as usize;
        let n = r.read(&mut chunk[..want])?;
        if n == 0 {
            return Err(BundleError::Truncated(Section::Payload));
        }
        payload_hasher.update(&chunk[..n]);
        payload.extend_from_slice(&chunk[..n]);
        remaining -= n as u64;
    }
    let mut trailing = 0u64;
    loop {
        let n = r.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        trailing += n as u64;
    }
    if trailing > 0 {
        return Err(BundleError::TrailingBytes(trailing));
    }
    let actual: [u8; 32] = payload_hasher.finalize().into();
    if actual[..] != manifest.payload.sha256[..] {
        return Err(BundleError::PayloadDigestMismatch {
            expected: hex::encode(&manifest.payload.sha256[..]),
            actual: hex::encode(actual),
        });
    }

    let digest = r.hasher.map(|h| h.finalize().into()).unwrap_or_default();
    Ok(VerifiedBundle {
        manifest,
        version,
        payload,
        digest,
        signers,
    })
}

fn check_signatures(
    manifest: &[u8],
    records: &[SignatureRecord],
    trust: &TrustRoot,
) -> Result<Vec<KeyId>, BundleError> {
    if records.is_empty() {
        return Err(BundleError::Unsigned);
    }
    let message = signed_message(manifest);
    let mut valid = BTreeSet::new();
    let mut unknown = Vec::new();
    for rec in records {
        match trust.signing_key(&rec.key_id) {
            Some(key) => {
                let sig = Signature::from_bytes(&rec.signature);
                key.verify_strict(&message, &sig)
                    .map_err(|_| BundleError::BadSignature {
                        key: rec.key_id.short(),
                    })?;
                valid.insert(rec.key_id);
            }
            None => unknown.push(rec.key_id.short()),
        }
    }
    let threshold = trust.threshold();
    if valid.len() < threshold {
        return Err(BundleError::BelowThreshold {
            valid: valid.len(),
            threshold,
            unknown,
        });
    }
    Ok(valid.into_iter().collect())
}

/// What `inspect` can say about a bundle without a trust root. **Unverified**: for display only.
#[derive(Debug)]
pub struct Inspection {
    /// The manifest as decoded (not authenticated).
    pub manifest: Manifest,
    /// Key ids of the signature records.
    pub signers: Vec<KeyId>,
    /// Declared payload length.
    pub payload_len: u64,
    /// sha256 of the whole file.
    pub digest: [u8; 32],
}

/// Decodes a bundle's manifest without checking signatures, for `edgectl inspect`.
pub fn inspect(bytes: &[u8], limits: &Limits) -> Result<Inspection, BundleError> {
    let mut r = bytes;
    let head = container::read_head(&mut r, limits)?;
    let manifest: Manifest =
        minicbor::decode(&head.manifest).map_err(|e| BundleError::BadManifest(e.to_string()))?;
    Ok(Inspection {
        manifest,
        signers: head.signatures.iter().map(|s| s.key_id).collect(),
        payload_len: head.payload_len,
        digest: Sha256::digest(bytes).into(),
    })
}
