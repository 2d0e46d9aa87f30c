//! The engine contract, checked on an engine: `check_engine` runs against redb here and
//! against PostgreSQL in `postgres`'s tests.

use std::ops::{Bound, ControlFlow};

use super::*;

const NAMES: Table = Table::str_to_bytes("names");
const LABELS: Table = Table::str_to_str("labels");
const LOG: Table = Table::u64_to_bytes("log");

pub(crate) const TEST_NAMESPACE: Namespace = Namespace {
    name: "contract",
    file: "contract.redb",
    tables: &[NAMES, LABELS, LOG],
    private: true,
};

fn keys(txn: &dyn ReadTxn, table: Table, range: KeyRange<'_>) -> Vec<Vec<u8>> {
    collect(txn, table, range)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// Every promise of the interface, on `engine` (freshly opened on `TEST_NAMESPACE`).
pub(crate) fn check_engine(engine: &dyn Engine) {
    // Writes are invisible until committed, and gone when dropped.
    {
        let w = engine.write(Durability::Immediate).unwrap();
        w.insert(NAMES, b"b", b"2").unwrap();
        assert_eq!(
            w.get(NAMES, b"b").unwrap().as_deref(),
            Some(&b"2"[..]),
            "a writer sees its own change"
        );
        assert_eq!(engine.read().unwrap().get(NAMES, b"b").unwrap(), None);
    }
    assert_eq!(
        engine.read().unwrap().get(NAMES, b"b").unwrap(),
        None,
        "dropped = rolled back"
    );

    let w = engine.write(Durability::Immediate).unwrap();
    for k in ["b", "a", "a/1", "a/2", "c", "é"] {
        w.insert(NAMES, k.as_bytes(), format!("v-{k}").as_bytes()).unwrap();
    }
    w.insert(LABELS, b"x", "ü".as_bytes()).unwrap();
    for seq in [3u64, 1, 256, 2] {
        w.insert(LOG, &seq.to_be_bytes(), &seq.to_le_bytes()).unwrap();
    }
    w.commit().unwrap();

    let snapshot = engine.read().unwrap();
    // A snapshot does not see later commits.
    let w = engine.write(Durability::Deferred).unwrap();
    w.insert(NAMES, b"d", b"4").unwrap();
    assert!(w.remove(NAMES, b"c").unwrap());
    assert!(!w.remove(NAMES, b"nope").unwrap());
    w.commit().unwrap();
    assert_eq!(snapshot.get(NAMES, b"d").unwrap(), None);
    assert_eq!(snapshot.get(NAMES, b"c").unwrap().as_deref(), Some(&b"v-c"[..]));
    drop(snapshot);

    let r = engine.read().unwrap();
    assert_eq!(r.get(NAMES, b"d").unwrap().as_deref(), Some(&b"4"[..]));
    assert_eq!(r.get(NAMES, b"c").unwrap(), None);
    assert_eq!(r.get(LABELS, b"x").unwrap().as_deref(), Some("ü".as_bytes()));
    assert_eq!(engine.get_one(NAMES, b"d").unwrap().as_deref(), Some(&b"4"[..]));
    assert_eq!(engine.get_one(NAMES, b"c").unwrap(), None);
    // Byte order, on every kind of key; ranges with each kind of bound.
    let all: Vec<Vec<u8>> = ["a", "a/1", "a/2", "b", "d", "é"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    assert_eq!(keys(&*r, NAMES, ALL), all);
    assert_eq!(
        keys(&*r, NAMES, between(b"a/", b"a0")),
        [b"a/1".to_vec(), b"a/2".to_vec()]
    );
    assert_eq!(
        keys(&*r, NAMES, from(b"b")),
        [b"b".to_vec(), b"d".to_vec(), "é".as_bytes().to_vec()]
    );
    assert_eq!(
        keys(&*r, NAMES, (Bound::Excluded(b"a/1"), Bound::Included(b"b"))),
        [b"a/2".to_vec(), b"b".to_vec()]
    );
    let log: Vec<u64> = keys(&*r, LOG, from(&2u64.to_be_bytes()))
        .into_iter()
        .map(|k| u64::from_be_bytes(k.try_into().unwrap()))
        .collect();
    assert_eq!(log, [2, 3, 256]);
    // A scan stops when told.
    let mut seen = 0;
    r.scan(NAMES, ALL, &mut |_, _| {
        seen += 1;
        Ok(if seen == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })
    .unwrap();
    assert_eq!(seen, 2);
    // A scan's error is the scan's result.
    let failed = r.scan(NAMES, ALL, &mut |_, _| Err(Error::Corrupt("stop".into())));
    assert!(matches!(failed, Err(Error::Corrupt(m)) if m == "stop"));
    drop(r);

    // Many rows: a scan sees them all, in order (an engine may fetch them in pages).
    let w = engine.write(Durability::Immediate).unwrap();
    for i in 0..1500u64 {
        w.insert(LOG, &(1000 + i).to_be_bytes(), &[0u8; 16]).unwrap();
    }
    let keys: Vec<[u8; 8]> = (2500..3500u64).map(u64::to_be_bytes).collect();
    let rows: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (&k[..], &[0u8; 16][..])).collect();
    w.insert_many(LOG, &rows).unwrap();
    // Replacing too.
    w.insert_many(LOG, &[(&1000u64.to_be_bytes()[..], &[0u8; 16][..])])
        .unwrap();
    w.commit().unwrap();
    let r = engine.read().unwrap();
    let mut expected = 1000u64;
    r.scan(LOG, from(&1000u64.to_be_bytes()), &mut |k, _| {
        assert_eq!(k, expected.to_be_bytes());
        expected += 1;
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    assert_eq!(expected, 3500);
}

#[test]
fn redb_keeps_the_engine_contract() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Location::Dir(dir.path().to_owned()).open(&TEST_NAMESPACE).unwrap();
    check_engine(&*engine);
    assert!(!engine.is_shared());
    let mode = std::fs::metadata(dir.path().join("contract.redb"))
        .unwrap()
        .permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
}

#[test]
fn a_second_process_on_the_same_file_is_told_who_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Dir(dir.path().to_owned());
    let _first = location.open(&TEST_NAMESPACE).unwrap();
    let second = location.open(&TEST_NAMESPACE).unwrap_err();
    assert!(matches!(second, Error::InUse(_)), "{second}");
}

#[test]
fn a_namespace_is_copied_whole_and_only_into_an_empty_place() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let from = Location::Dir(a.path().to_owned()).open(&TEST_NAMESPACE).unwrap();
    let to = Location::Dir(b.path().to_owned()).open(&TEST_NAMESPACE).unwrap();
    check_engine(&*from);
    let mut seen = 0u64;
    let copied = copy_namespace(&TEST_NAMESPACE, &*from, &*to, &mut |bytes| seen += bytes).unwrap();
    let rows: u64 = copied.iter().map(|c| c.rows).sum();
    assert_eq!(seen, copied.iter().map(|c| c.bytes).sum::<u64>());
    for table in TEST_NAMESPACE.tables {
        assert_eq!(
            collect(&*from.read().unwrap(), *table, ALL).unwrap(),
            collect(&*to.read().unwrap(), *table, ALL).unwrap(),
            "{}",
            table.name()
        );
    }
    assert!(rows > 2500);
    // Not twice: the destination is no longer empty.
    let again = copy_namespace(&TEST_NAMESPACE, &*from, &*to, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            again,
            Error::Occupied {
                namespace: "contract",
                ..
            }
        ),
        "{again}"
    );
}
