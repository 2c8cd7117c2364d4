//! A/B slots across restarts: install → trial → commit survives a restart; a trial that keeps
//! crashing is rolled back by boot counting; a corrupted active bundle falls back to the previous
//! one; the anti-rollback floor rises on commit; cut-short and unreferenced files are cleaned up.

use std::path::Path;
use std::sync::Arc;

mod common;

use common::Signing;
use device_agent::outbox::Outbox;
use device_agent::slots::{SlotRef, Slots};
use edge_runtime::LoadOptions;

struct Fixture {
    signing: Signing,
    bundles: Vec<(String, Vec<u8>)>,
}

/// Digits bundles 1.0.0, 2.0.0 (raising the floor to 2.0.0) and 3.0.0.
fn fixture() -> Fixture {
    let signing = Signing::new();
    let bundles = ["1.0.0", "2.0.0", "3.0.0"]
        .iter()
        .map(|v| {
            let bytes = signing.digits(|spec| {
                spec.version = v.to_string();
                if *v == "2.0.0" {
                    spec.min_version = Some("2.0.0".into());
                }
            });
            (v.to_string(), bytes)
        })
        .collect();
    Fixture { signing, bundles }
}

/// The agent's state file opened as a fresh process would.
fn open(dir: &Path) -> Slots {
    let db = Arc::new(redb::Database::create(dir.join("agent.redb")).unwrap());
    // the outbox shares the file: both must coexist in one database
    Outbox::with_db(db.clone(), 1 << 20).unwrap();
    Slots::open(db, &dir.join("bundles"), 3).unwrap()
}

fn install(slots: &Slots, f: &Fixture, i: usize) -> SlotRef {
    let (version, bytes) = &f.bundles[i];
    let sha = slots.store_bundle(bytes).unwrap();
    let slot = SlotRef {
        version: version.clone(),
        sha256: sha,
    };
    slots.begin_trial("digits", slot.clone()).unwrap();
    slot
}

fn commit(slots: &Slots, f: &Fixture, i: usize) -> SlotRef {
    let slot = install(slots, f, i);
    let min = (i == 1).then(|| semver::Version::parse("2.0.0").unwrap());
    slots.commit("digits", min.as_ref()).unwrap();
    slot
}

fn served_version(slots: &Slots, f: &Fixture) -> String {
    let plans = slots.boot().unwrap();
    assert_eq!(plans.len(), 1);
    let (_, model) = slots
        .load_first(&plans[0], &f.signing.trust, &LoadOptions::default())
        .unwrap();
    model.model_ref().version.clone()
}

#[test]
fn a_committed_bundle_is_served_after_a_restart() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    {
        let slots = open(dir.path());
        let v1 = commit(&slots, &f, 0);
        assert_eq!(slots.get("digits").unwrap().active, Some(v1));
    }
    let slots = open(dir.path());
    assert_eq!(served_version(&slots, &f), "1.0.0");
}

#[test]
fn a_trial_that_keeps_crashing_is_rolled_back_by_boot_counting() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    {
        let slots = open(dir.path());
        commit(&slots, &f, 0);
        install(&slots, &f, 2); // 3.0.0 on trial; the process "dies" before the trial ends
    }
    // three boots keep trying the trial (max_trial_boots = 3)...
    for boot in 1..=3 {
        let slots = open(dir.path());
        assert_eq!(served_version(&slots, &f), "3.0.0", "boot {boot}");
        assert_eq!(slots.get("digits").unwrap().trial_boots, boot);
    }
    // ...the fourth rolls it back and marks it bad
    let slots = open(dir.path());
    let plans = slots.boot().unwrap();
    let (rolled, boots) = plans[0].crash_loop_rollback.clone().unwrap();
    assert_eq!((rolled.version.as_str(), boots), ("3.0.0", 4));
    let (slot, model) = slots
        .load_first(&plans[0], &f.signing.trust, &LoadOptions::default())
        .unwrap();
    assert_eq!(
        (slot.version.as_str(), model.model_ref().version.as_str()),
        ("1.0.0", "1.0.0")
    );
    let state = slots.get("digits").unwrap();
    assert_eq!((state.trial, state.bad), (None, vec!["3.0.0".to_string()]));
    // a new desired generation may retry it
    assert!(slots.clear_bad("digits").unwrap().bad.is_empty());
}

#[test]
fn a_corrupted_active_bundle_falls_back_to_the_previous_slot() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let active = {
        let slots = open(dir.path());
        commit(&slots, &f, 0);
        commit(&slots, &f, 2)
    };
    let slots = open(dir.path());
    let path = slots.bundle_path(&active.sha256);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff; // bit rot in the payload
    std::fs::write(&path, bytes).unwrap();
    let plans = slots.boot().unwrap();
    let (slot, _) = slots
        .load_first(&plans[0], &f.signing.trust, &LoadOptions::default())
        .unwrap();
    assert_eq!(slot.version, "1.0.0");
    // with the previous slot gone too, the failures say why, per slot
    std::fs::remove_file(slots.bundle_path(&slot.sha256)).unwrap();
    let failures = slots
        .load_first(&plans[0], &f.signing.trust, &LoadOptions::default())
        .unwrap_err();
    assert_eq!(failures.len(), 2);
    assert!(failures[0].1.contains("sha256"), "{}", failures[0].1);
}

#[test]
fn the_floor_rises_on_commit_and_refuses_older_bundles() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let slots = open(dir.path());
    commit(&slots, &f, 0);
    commit(&slots, &f, 1); // 2.0.0 carries min_version 2.0.0
    assert_eq!(slots.get("digits").unwrap().floor.as_deref(), Some("2.0.0"));
    // 1.0.0 is still the previous slot, but it is below the floor: never served again
    install(&slots, &f, 0);
    let plans = slots.boot().unwrap();
    let (slot, _) = slots
        .load_first(&plans[0], &f.signing.trust, &LoadOptions::default())
        .unwrap();
    assert_eq!(
        slot.version, "2.0.0",
        "1.0.0 on trial is refused, the active 2.0.0 serves"
    );
    // a later commit without min_version never lowers the floor
    slots.rollback("digits").unwrap();
    commit(&slots, &f, 2);
    assert_eq!(slots.get("digits").unwrap().floor.as_deref(), Some("2.0.0"));
}

#[test]
fn partial_and_unreferenced_files_are_cleaned_up() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let slots = open(dir.path());
    let part = dir.path().join("bundles/deadbeef.efb.part");
    std::fs::write(&part, b"half a download").unwrap();
    commit(&slots, &f, 0);
    commit(&slots, &f, 1);
    commit(&slots, &f, 2);
    slots.boot().unwrap();
    assert!(!part.exists());
    let files: Vec<String> = std::fs::read_dir(dir.path().join("bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "active and previous only: {files:?}");
    // storing a bundle that is already there is a no-op returning the same digest
    let sha = slots.store_bundle(&f.bundles[2].1).unwrap();
    assert_eq!(
        Some(sha),
        slots.get("digits").unwrap().active.map(|a| a.sha256)
    );
}
