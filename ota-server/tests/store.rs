//! The store contract both backends keep (redb by default; PostgreSQL with
//! `EDGEFLEET_TEST_POSTGRES` set): prefix scans in key order, batches all or nothing,
//! compare-and-set guards, counters, and leases whose fencing token stops a leader that lost
//! its lease from writing.

mod common;

use std::time::Duration;

use ota_server::store::{event_key, put, Records, StoreError, Table, Write};

#[test]
fn scans_batches_guards_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let r = Records::new(common::open_store(&dir.path().join("s.redb")));
    r.store()
        .write(vec![
            put(Table::Events, &event_key("dev-1", 10), &"c"),
            put(Table::Events, &event_key("dev-1", 2), &"b"),
            put(Table::Events, &event_key("dev-10", 1), &"other device"),
            put(Table::Events, &event_key("dev-1", 1), &"a"),
            put(Table::Events, "dev_1/x", &"a LIKE wildcard is not a prefix"),
        ])
        .unwrap();
    let events: Vec<String> = r.list(Table::Events, "dev-1/", 100).unwrap();
    assert_eq!(events, ["a", "b", "c"], "in key order, this prefix only");
    assert_eq!(
        r.list::<String>(Table::Events, "dev-1/", 2).unwrap().len(),
        2
    );
    assert_eq!(r.list::<String>(Table::Events, "", 100).unwrap().len(), 5);

    // a guard on what was read: the batch applies while the record is unchanged
    r.put(Table::Devices, "d", &serde_json::json!({"n": 1}))
        .unwrap();
    let read = r.store().get(Table::Devices, "d").unwrap();
    r.store()
        .write(vec![
            Write::Expect(Table::Devices, "d".into(), read.clone()),
            put(Table::Devices, "d", &serde_json::json!({"n": 2})),
        ])
        .unwrap();
    // ... and fails whole, naming the record, once another writer changed it
    let e = r
        .store()
        .write(vec![
            put(Table::Bundles, "side-effect", &1),
            Write::Expect(Table::Devices, "d".into(), read),
            put(Table::Devices, "d", &serde_json::json!({"n": 3})),
        ])
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    assert!(e.to_string().contains("devices/d"), "{e}");
    let d: serde_json::Value = r.get(Table::Devices, "d").unwrap().unwrap();
    assert_eq!(d["n"], 2);
    assert!(r
        .get::<i32>(Table::Bundles, "side-effect")
        .unwrap()
        .is_none());
    // a guard on absence
    r.store()
        .write(vec![
            Write::Expect(Table::Devices, "new".into(), None),
            put(Table::Devices, "new", &1),
        ])
        .unwrap();
    assert!(r
        .store()
        .write(vec![Write::Expect(Table::Devices, "new".into(), None)])
        .is_err());

    assert_eq!(r.store().reserve("seq", 5).unwrap(), 5);
    assert_eq!(r.store().increment("seq").unwrap(), 6);
    assert!(r.store().get(Table::Counters, "seq").unwrap().is_some());
}

#[test]
fn a_leader_that_lost_its_lease_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = common::open_store(&path);
    let a = Records::new(store.clone());
    let b = Records::new(common::open_replica(&path, &store));
    let ttl = Duration::from_millis(400);
    let t1 = a
        .store()
        .lease("engine", "replica-a", ttl)
        .unwrap()
        .unwrap();
    assert_eq!(b.store().lease("engine", "replica-b", ttl).unwrap(), None);
    assert_eq!(
        a.store().lease("engine", "replica-a", ttl).unwrap(),
        Some(t1),
        "renewing keeps the token"
    );
    let fenced = |token| {
        vec![
            Write::Fence {
                name: "engine".into(),
                token,
            },
            put(Table::Rollouts, "r-1", &token),
        ]
    };
    a.store().write(fenced(t1)).unwrap();
    // replica-a pauses past its lease; replica-b takes over with a higher token
    std::thread::sleep(ttl + Duration::from_millis(200));
    let t2 = b
        .store()
        .lease("engine", "replica-b", ttl)
        .unwrap()
        .unwrap();
    assert!(t2 > t1);
    let e = a.store().write(fenced(t1)).unwrap_err();
    assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    assert_eq!(
        a.get::<u64>(Table::Rollouts, "r-1").unwrap(),
        Some(t1),
        "the old leader's batch was refused whole"
    );
    b.store().write(fenced(t2)).unwrap();
    assert_eq!(a.store().lease("engine", "replica-a", ttl).unwrap(), None);
    // an expired lease fences even its own holder until renewed
    std::thread::sleep(ttl + Duration::from_millis(200));
    assert!(b.store().write(fenced(t2)).is_err());
    assert_eq!(
        b.store().lease("engine", "replica-b", ttl).unwrap(),
        Some(t2),
        "nobody took it meanwhile: the same holder keeps its token"
    );
    b.store().write(fenced(t2)).unwrap();
}
