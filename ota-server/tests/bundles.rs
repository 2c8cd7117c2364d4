//! The bundle registry: only bundles that verify against the trust root are kept; a tampered or
//! foreign-signed upload is refused with the reason and leaves nothing behind; records and
//! files survive a restart; a bundle in use cannot be deleted.

mod common;

use common::digits;

use edge_bundle::trust::{self, RootAnchor, TrustRoot, TrustSpec};
use ota_server::bundles::{BundleError, Bundles};
use ota_server::store::Records;

#[test]
fn only_trusted_bundles_are_kept_and_they_survive_a_restart() {
    let root = edge_bundle::keys::generate().unwrap();
    let signer = edge_bundle::keys::generate().unwrap();
    let doc = trust::create(&TrustSpec::ephemeral(&signer.verifying_key()), &root, None).unwrap();
    let trust = TrustRoot::from_bytes(&doc, RootAnchor::Pinned(root.verifying_key())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.redb");
    let files = dir.path().join("artifacts");
    let good = digits(&signer, "1.0.0");
    let sha;
    {
        let records = Records::new(common::open_store(&db));
        let bundles = Bundles::new(records, &files, 64 << 20).unwrap();
        let r = bundles.upload(&good, &trust, "ci", 100).unwrap();
        assert_eq!(
            (r.name.as_str(), r.version.as_str(), r.task.as_str()),
            ("digits", "1.0.0", "classification")
        );
        assert_eq!(r.size, good.len() as u64);
        sha = r.sha256.clone();
        assert_eq!(std::fs::read(bundles.path(&sha)).unwrap(), good);
        assert_eq!(
            bundles
                .upload(&good, &trust, "ci", 200)
                .unwrap()
                .uploaded_at,
            100,
            "idempotent"
        );

        // tampered payload: refused, nothing stored
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 10] ^= 1;
        let e = bundles.upload(&bad, &trust, "ci", 100).unwrap_err();
        assert!(matches!(e, BundleError::Refused(_)), "{e}");
        // signed by a key the trust root does not list
        let stranger = edge_bundle::keys::generate().unwrap();
        let e = bundles
            .upload(&digits(&stranger, "1.1.0"), &trust, "ci", 100)
            .unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
        // garbage and oversized
        assert!(matches!(
            bundles.upload(b"hello", &trust, "ci", 100),
            Err(BundleError::Refused(_))
        ));
        let small = Bundles::new(
            Records::new(common::open_store(&dir.path().join("other.redb"))),
            &files,
            1000,
        )
        .unwrap();
        assert!(matches!(
            small.upload(&good, &trust, "ci", 100),
            Err(BundleError::TooLarge { .. })
        ));
        assert_eq!(bundles.list().unwrap().len(), 1);
        assert_eq!(
            std::fs::read_dir(&files).unwrap().count(),
            1,
            "only the good bundle's file"
        );
        let e = bundles.delete(&sha, Some("r-7")).unwrap_err();
        assert!(e.to_string().contains("r-7"), "{e}");
    }
    let records = Records::new(common::open_store(&db));
    let bundles = Bundles::new(records, &files, 64 << 20).unwrap();
    assert_eq!(bundles.get(&sha).unwrap().unwrap().version, "1.0.0");
    bundles.delete(&sha, None).unwrap();
    assert!(bundles.get(&sha).unwrap().is_none());
    assert!(!bundles.path(&sha).exists());
    assert!(matches!(
        bundles.delete(&sha, None),
        Err(BundleError::NotFound(_))
    ));
}
