//! The errors of reading keys, bundles and trust documents: each says what was wrong and what to do.

use thiserror::Error;

/// Reading or generating keys.
#[derive(Debug, Error)]
pub enum KeyError {
    /// File could not be read.
    #[error("cannot read key file {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not 64 hex characters.
    #[error("key file {path} is malformed: expected a header line and 64 hex characters (make one with `edgectl keygen`)")]
    Malformed {
        /// File path.
        path: String,
    },
    /// A secret key given where a public key was expected, or the reverse.
    #[error("key file {path} holds '{found}', expected '{expected}'")]
    WrongKind {
        /// File path.
        path: String,
        /// Header expected.
        expected: String,
        /// Header found.
        found: String,
    },
    /// The bytes are not a valid ed25519 point.
    #[error("key file {path} does not hold a valid ed25519 public key")]
    NotAPoint {
        /// File path.
        path: String,
    },
    /// The OS random source failed.
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

/// Which part of a bundle file was cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// The 8-byte magic.
    Magic,
    /// Format version and flags.
    Header,
    /// The manifest's length field.
    ManifestLength,
    /// The manifest bytes.
    Manifest,
    /// The signature count.
    SignatureCount,
    /// A signature record.
    Signature,
    /// The payload's length field.
    PayloadLength,
    /// The payload bytes.
    Payload,
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Section::Magic => "magic",
            Section::Header => "header",
            Section::ManifestLength => "manifest length",
            Section::Manifest => "manifest",
            Section::SignatureCount => "signature count",
            Section::Signature => "signature record",
            Section::PayloadLength => "payload length",
            Section::Payload => "payload",
        };
        f.write_str(s)
    }
}

/// Why a bundle was rejected. Nothing of the payload is parsed before all checks pass.
#[derive(Debug, Error)]
pub enum BundleError {
    /// Not an edgefleet bundle.
    #[error("not an edgefleet bundle (bad magic bytes)")]
    BadMagic,
    /// A format version this runtime does not read.
    #[error("bundle format version {0} is not supported (this runtime reads version 1); upgrade the runtime")]
    UnsupportedVersion(u16),
    /// Reserved flag bits set.
    #[error(
        "bundle header has unknown flags {0:#06x}; it was written by a newer or broken packer"
    )]
    UnknownFlags(u16),
    /// The file ends inside a section.
    #[error("bundle is truncated inside its {0} (incomplete download or copy?)")]
    Truncated(Section),
    /// Bytes after the payload.
    #[error("bundle has {0} unexpected trailing bytes after the payload")]
    TrailingBytes(u64),
    /// Manifest length over the limit.
    #[error("bundle manifest declares {declared} bytes, over the limit of {limit}")]
    ManifestTooLarge {
        /// Declared length.
        declared: u64,
        /// Limit.
        limit: u64,
    },
    /// Too many signatures.
    #[error("bundle carries {declared} signatures, over the limit of {limit}")]
    TooManySignatures {
        /// Declared count.
        declared: u64,
        /// Limit.
        limit: u64,
    },
    /// No signature at all.
    #[error("bundle is unsigned; sign it with `edgectl pack --key`")]
    Unsigned,
    /// Payload over the limit.
    #[error("bundle payload is {declared} bytes, over the limit of {limit}")]
    PayloadTooLarge {
        /// Declared length.
        declared: u64,
        /// Limit.
        limit: u64,
    },
    /// A signature that does not verify.
    #[error("signature by key {key} does not verify: the manifest or the signature was altered")]
    BadSignature {
        /// Signing key id.
        key: String,
    },
    /// Not enough valid signatures from trusted keys.
    #[error("bundle has {valid} valid signature(s) from trusted signing keys, the trust root requires {threshold}{}", if .unknown.is_empty() { String::new() } else { format!(" (signed by keys the trust root does not list: {})", .unknown.join(", ")) })]
    BelowThreshold {
        /// Valid trusted signatures.
        valid: usize,
        /// Required.
        threshold: usize,
        /// Key ids not in the trust root.
        unknown: Vec<String>,
    },
    /// The manifest's CBOR could not be decoded (it was signed, so the packer was broken).
    #[error("bundle manifest is malformed: {0}")]
    BadManifest(String),
    /// Header payload length disagrees with the signed manifest.
    #[error("bundle payload length {header} disagrees with the signed manifest's {manifest}")]
    PayloadSizeMismatch {
        /// From the header.
        header: u64,
        /// From the manifest.
        manifest: u64,
    },
    /// Payload bytes do not hash to the signed digest.
    #[error("bundle payload sha256 {actual} does not match the signed manifest's {expected}: the payload was altered")]
    PayloadDigestMismatch {
        /// Signed digest.
        expected: String,
        /// Computed digest.
        actual: String,
    },
    /// The bundle's own expiry has passed.
    #[error("bundle expired at unix time {expired_at} (now {now}); pack a fresh one")]
    Expired {
        /// Expiry.
        expired_at: u64,
        /// Now.
        now: u64,
    },
    /// Version below the device's anti-rollback floor.
    #[error("bundle version {version} is below the anti-rollback floor {floor}")]
    BelowFloor {
        /// Bundle version.
        version: String,
        /// Floor.
        floor: String,
    },
    /// Reading the bundle failed for a reason other than its content.
    #[error("cannot read bundle: {0}")]
    Io(#[from] std::io::Error),
    /// The trust root itself is not usable.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// Why a trust document was rejected.
#[derive(Debug, Error)]
pub enum TrustError {
    /// Over the size limit.
    #[error("trust document is {0} bytes, over the 1 MiB limit")]
    TooLarge(usize),
    /// Not decodable.
    #[error("trust document is malformed: {0}")]
    Malformed(String),
    /// Not signed by its root key (or by the pinned root).
    #[error("trust document is not signed by the root key {0}")]
    NotSignedByRoot(String),
    /// Signed by a root other than the pinned one.
    #[error("trust document's root key {found} is not the pinned root key {pinned}")]
    WrongRoot {
        /// Pinned root key id.
        pinned: String,
        /// Root in the doc.
        found: String,
    },
    /// Expired.
    #[error("trust document version {version} expired at unix time {expired_at} (now {now}); the fleet owner must issue a new one with `edgectl trust init`")]
    Expired {
        /// Trust doc version.
        version: u32,
        /// Expiry.
        expired_at: u64,
        /// Now.
        now: u64,
    },
    /// Rotation to a version not newer.
    #[error("trust document version {new} is not newer than the current {current}")]
    NotNewer {
        /// Current version.
        current: u32,
        /// Offered version.
        new: u32,
    },
    /// Threshold 0 or above the number of signers.
    #[error("trust document threshold {threshold} is impossible with {signers} signing key(s)")]
    BadThreshold {
        /// Threshold.
        threshold: u8,
        /// Signer count.
        signers: usize,
    },
    /// Encoding or signing failed.
    #[error("cannot build trust document: {0}")]
    Build(String),
}
