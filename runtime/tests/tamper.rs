//! The tamper corpus: every single-byte flip in every section, every truncation point, wrong and
//! missing keys, thresholds, expiry, oversized lengths — each rejected with the specific error,
//! never a panic. Plus a property test over arbitrary mutations.

mod common;

use common::*;
use edge_runtime::bundle::{
    self, offsets, verify_bytes, Dim, EngineHints, InputSpec, Layout, Limits, Manifest, NanPolicy,
    OutputSpec, PayloadFormat, PayloadInfo, ReferenceStats, SelfTest, Task, VerifyPolicy,
};
use edge_runtime::error::Section;
use edge_runtime::trust::{RootAnchor, TrustRoot};
use edge_runtime::{BundleError, DType, TrustError};
use proptest::prelude::*;

/// A small bundle: verification never parses the payload, so any bytes serve.
fn small_manifest() -> Manifest {
    Manifest {
        name: "tiny".into(),
        version: "1.2.3".into(),
        description: "tamper corpus".into(),
        created: 0,
        expires: None,
        min_version: None,
        payload: PayloadInfo {
            format: PayloadFormat::Onnx,
            sha256: [0; 32].into(),
            size: 0,
            source_sha256: None,
        },
        engine: EngineHints::default(),
        inputs: vec![InputSpec {
            name: "x".into(),
            dtype: DType::F32,
            shape: vec![Dim::Named("N".into()), Dim::Fixed(4)],
            layout: Layout::NC,
            max_batch: None,
            nan_policy: NanPolicy::Reject,
            normalize: None,
            image: None,
            feature_names: vec![],
        }],
        output: OutputSpec {
            name: "y".into(),
            task: Task::Raw,
        },
        self_test: SelfTest::default(),
        reference: ReferenceStats::default(),
        quantization: None,
        health: None,
    }
}

fn payload() -> Vec<u8> {
    (0..600u32).map(|i| (i * 31 % 251) as u8).collect()
}

struct Fixture {
    signer: edge_runtime::SigningKey,
    trust: TrustRoot,
    bundle: Vec<u8>,
    manifest_len: usize,
}

fn fixture() -> Fixture {
    let root = key();
    let signer = key();
    let (_, trust) = trust_with(&root, &[&signer], 1, u64::MAX);
    let bundle = bundle::build(small_manifest(), &payload(), std::slice::from_ref(&signer));
    let manifest_len = u32::from_be_bytes(bundle[12..16].try_into().unwrap()) as usize;
    Fixture {
        signer,
        trust,
        bundle,
        manifest_len,
    }
}

fn verify(bytes: &[u8], trust: &TrustRoot) -> Result<bundle::VerifiedBundle, BundleError> {
    verify_bytes(bytes, trust, &VerifyPolicy::default())
}

#[test]
fn the_untouched_bundle_verifies() {
    let f = fixture();
    let v = verify(&f.bundle, &f.trust).unwrap();
    assert_eq!(v.manifest().name, "tiny");
    assert_eq!(v.payload(), &payload()[..]);
    assert_eq!(v.signers().len(), 1);
}

/// A bundle past 8 MiB takes its whole-file digest on a second thread: the same digest as
/// the streaming path's, and a flipped payload byte is still the payload's digest error.
#[test]
fn a_large_bundle_has_the_streaming_digest_and_still_catches_a_flipped_payload_byte() {
    let f = fixture();
    let big: Vec<u8> = (0..9u32 << 20).map(|i| (i * 131 % 251) as u8).collect();
    let bundle = bundle::build(small_manifest(), &big, std::slice::from_ref(&f.signer));
    let parallel = verify(&bundle, &f.trust).unwrap();
    let streaming = bundle::verify(&bundle[..], &f.trust, &VerifyPolicy::default()).unwrap();
    assert_eq!(parallel.digest(), streaming.digest());
    assert_ne!(parallel.digest(), [0; 32]);
    assert_eq!(parallel.payload(), &big[..]);
    let mut flipped = bundle.clone();
    let at = flipped.len() - 1000;
    flipped[at] ^= 1;
    assert!(matches!(
        verify(&flipped, &f.trust),
        Err(BundleError::PayloadDigestMismatch { .. })
    ));
    // signed by a key the trust root does not list: refused on its signatures, as when small
    let stranger = bundle::build(small_manifest(), &big, &[key()]);
    let small = bundle::build(small_manifest(), &payload(), &[key()]);
    let (large_error, small_error) = (
        verify(&stranger, &f.trust).unwrap_err(),
        verify(&small, &f.trust).unwrap_err(),
    );
    assert_eq!(
        std::mem::discriminant(&large_error),
        std::mem::discriminant(&small_error),
        "{large_error} / {small_error}"
    );
}

#[test]
fn every_single_byte_flip_is_rejected_with_the_error_of_its_section() {
    let f = fixture();
    let layout = offsets(f.manifest_len, 1, payload().len());
    let mut checked = 0;
    for (section, start, end) in &layout.sections {
        for at in *start..*end {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut b = f.bundle.clone();
                b[at] ^= mask;
                let err = verify(&b, &f.trust)
                    .expect_err(&format!("flip {mask:#x} at {at} ({section}) accepted"));
                let ok = match section {
                    Section::Magic => matches!(err, BundleError::BadMagic),
                    Section::Header if at < 10 => matches!(err, BundleError::UnsupportedVersion(_)),
                    Section::Header => matches!(err, BundleError::UnknownFlags(_)),
                    // a different length moves every later boundary: the file no longer parses, or
                    // the signed bytes differ
                    Section::ManifestLength => matches!(
                        err,
                        BundleError::ManifestTooLarge { .. }
                            | BundleError::Truncated(_)
                            | BundleError::TooManySignatures { .. }
                            | BundleError::BadSignature { .. }
                            | BundleError::BelowThreshold { .. }
                            | BundleError::Unsigned
                    ),
                    Section::Manifest => matches!(err, BundleError::BadSignature { .. }),
                    Section::SignatureCount => matches!(
                        err,
                        BundleError::TooManySignatures { .. }
                            | BundleError::Unsigned
                            | BundleError::Truncated(_)
                            | BundleError::BelowThreshold { .. }
                            | BundleError::PayloadSizeMismatch { .. }
                    ),
                    Section::Signature if at < start + 32 => {
                        matches!(err, BundleError::BelowThreshold { valid: 0, .. })
                    }
                    Section::Signature => matches!(err, BundleError::BadSignature { .. }),
                    Section::PayloadLength => {
                        matches!(err, BundleError::PayloadSizeMismatch { .. })
                    }
                    Section::Payload => matches!(err, BundleError::PayloadDigestMismatch { .. }),
                };
                assert!(
                    ok,
                    "flip {mask:#x} at {at} in {section}: unexpected error {err:?}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, f.bundle.len() * 3);
}

#[test]
fn every_truncation_point_names_the_section_it_cut() {
    let f = fixture();
    let layout = offsets(f.manifest_len, 1, payload().len());
    for cut in 0..f.bundle.len() {
        let (section, _, _) = layout
            .sections
            .iter()
            .find(|(_, s, e)| (*s..*e).contains(&cut))
            .unwrap();
        match verify(&f.bundle[..cut], &f.trust) {
            Err(BundleError::Truncated(s)) => assert_eq!(&s, section, "cut at {cut}"),
            other => panic!("cut at {cut}: expected Truncated({section}), got {other:?}"),
        }
    }
    let mut longer = f.bundle.clone();
    longer.extend_from_slice(b"junk");
    assert!(matches!(
        verify(&longer, &f.trust),
        Err(BundleError::TrailingBytes(4))
    ));
}

#[test]
fn keys_thresholds_and_trust_documents() {
    let f = fixture();
    // a key the trust root does not list
    let stranger = key();
    let foreign = bundle::build(
        small_manifest(),
        &payload(),
        std::slice::from_ref(&stranger),
    );
    match verify(&foreign, &f.trust) {
        Err(BundleError::BelowThreshold {
            valid: 0,
            threshold: 1,
            unknown,
        }) => assert_eq!(unknown.len(), 1),
        other => panic!("{other:?}"),
    }
    // no signature at all
    let unsigned = bundle::build(small_manifest(), &payload(), &[]);
    assert!(matches!(
        verify(&unsigned, &f.trust),
        Err(BundleError::Unsigned)
    ));

    // threshold 2: one signature, or the same key twice, is not enough; two distinct keys are
    let root = key();
    let second = key();
    let (_, two) = trust_with(&root, &[&f.signer, &second], 2, u64::MAX);
    assert!(matches!(
        verify(&f.bundle, &two),
        Err(BundleError::BelowThreshold {
            valid: 1,
            threshold: 2,
            ..
        })
    ));
    let twice = bundle::build(
        small_manifest(),
        &payload(),
        &[f.signer.clone(), f.signer.clone()],
    );
    assert!(matches!(
        verify(&twice, &two),
        Err(BundleError::BelowThreshold {
            valid: 1,
            threshold: 2,
            ..
        })
    ));
    let both = bundle::build(
        small_manifest(),
        &payload(),
        &[f.signer.clone(), second.clone()],
    );
    assert_eq!(verify(&both, &two).unwrap().signers().len(), 2);

    // an expired trust document
    let (_, expired) = trust_with(&root, &[&f.signer], 1, 1000);
    assert!(matches!(
        verify(&f.bundle, &expired),
        Err(BundleError::Trust(TrustError::Expired { .. }))
    ));

    // a trust document not signed by the pinned root, and one altered after signing
    let (doc, _) = trust_with(&key(), &[&f.signer], 1, u64::MAX);
    assert!(matches!(
        TrustRoot::from_bytes(&doc, RootAnchor::Pinned(root.verifying_key())),
        Err(TrustError::NotSignedByRoot(_))
    ));
    let (mut doc, _) = trust_with(&root, &[&f.signer], 1, u64::MAX);
    let n = doc.len();
    doc[n / 2] ^= 1;
    assert!(TrustRoot::from_bytes(&doc, RootAnchor::Pinned(root.verifying_key())).is_err());
    assert!(TrustRoot::from_bytes(&doc, RootAnchor::SelfSigned).is_err());
}

#[test]
fn oversized_lengths_expiry_and_floor() {
    let f = fixture();
    // manifest length field at its maximum
    let mut b = f.bundle.clone();
    b[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        verify(&b, &f.trust),
        Err(BundleError::ManifestTooLarge {
            declared: 0xffff_ffff,
            ..
        })
    ));
    // payload length field at its maximum (the signed manifest disagrees)
    let at = 16 + f.manifest_len + 2 + 96;
    let mut b = f.bundle.clone();
    b[at..at + 8].copy_from_slice(&u64::MAX.to_be_bytes());
    assert!(matches!(
        verify(&b, &f.trust),
        Err(BundleError::PayloadSizeMismatch { .. })
    ));
    // a signed payload over the device's limit
    let policy = VerifyPolicy {
        limits: Limits {
            max_payload_bytes: 100,
            ..Limits::default()
        },
        ..Default::default()
    };
    assert!(matches!(
        verify_bytes(&f.bundle, &f.trust, &policy),
        Err(BundleError::PayloadTooLarge {
            declared: 600,
            limit: 100
        })
    ));
    // too many signature records
    let policy = VerifyPolicy {
        limits: Limits {
            max_signatures: 0,
            ..Limits::default()
        },
        ..Default::default()
    };
    assert!(matches!(
        verify_bytes(&f.bundle, &f.trust, &policy),
        Err(BundleError::TooManySignatures { .. })
    ));

    // an expired bundle
    let mut m = small_manifest();
    m.expires = Some(1000);
    let old = bundle::build(m, &payload(), std::slice::from_ref(&f.signer));
    assert!(matches!(
        verify(&old, &f.trust),
        Err(BundleError::Expired {
            expired_at: 1000,
            ..
        })
    ));
    // below the anti-rollback floor
    let policy = VerifyPolicy {
        floor: Some("2.0.0".parse().unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        verify_bytes(&f.bundle, &f.trust, &policy),
        Err(BundleError::BelowFloor { .. })
    ));
    let policy = VerifyPolicy {
        floor: Some("1.2.3".parse().unwrap()),
        ..Default::default()
    };
    assert!(verify_bytes(&f.bundle, &f.trust, &policy).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Arbitrary bytes never panic the parser.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let f = fixture_cached();
        prop_assert!(verify(&bytes, &f.trust).is_err());
        let _ = bundle::inspect(&bytes, &Limits::default());
    }

    /// Any set of byte changes to a valid bundle is rejected (or is no change at all).
    #[test]
    fn mutations_are_rejected(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let f = fixture_cached();
        let mut b = f.bundle.clone();
        for (ix, v) in &edits {
            let i = ix.index(b.len());
            b[i] = *v;
        }
        if b != f.bundle {
            prop_assert!(verify(&b, &f.trust).is_err());
        }
    }
}

fn fixture_cached() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(fixture)
}
