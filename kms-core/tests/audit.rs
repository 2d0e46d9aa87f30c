//! Integration tests of kms-core's hash-chained audit log: what is recorded, in what order,
//! and that editing, removing or reordering entries in the database file is detected.

mod common;

use std::path::Path;
use std::sync::Arc;

use kms_core::audit::GENESIS_HASH;
use kms_core::internals::schema::AUDIT;
use kms_core::internals::DB_FILE;
use kms_core::{
    AssociatedData, AuditEntry, AuditVerification, CreateKey, CreateVault, Key, KeyProvider, Kms, KmsConfig, KmsError,
    ManualClock, Ocid, Principal, ResourceType, Timestamp, Vault,
};
use redb::ReadableTable;
use tempfile::TempDir;

fn config(dir: &Path, clock: &ManualClock) -> KmsConfig {
    KmsConfig {
        clock: Arc::new(clock.clone()),
        ..common::kms_config(dir)
    }
}

fn create_vault(kms: &Kms, name: &str) -> Result<Vault, KmsError> {
    kms.create_vault(
        &Principal::local_admin(),
        CreateVault {
            display_name: name.into(),
            ..Default::default()
        },
    )
}

fn create_key(kms: &Kms, vault: &Vault, name: &str) -> Key {
    kms.create_key(&Principal::local_admin(), CreateKey::new(vault.id.clone(), name))
        .unwrap()
}

/// The parts of an entry the tests compare.
fn summary(e: &AuditEntry) -> (u64, &str, &str, &str) {
    (e.seq, e.principal.as_str(), e.operation.as_str(), e.result.as_str())
}

fn assert_chain_links(entries: &[AuditEntry]) {
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "{e:?}");
        assert_eq!(e.hash.len(), 64, "{e:?}");
        let prev = if i == 0 {
            GENESIS_HASH
        } else {
            entries[i - 1].hash.as_str()
        };
        assert_eq!(e.prev_hash, prev, "entry {} does not link", e.seq);
    }
}

// ----- what is recorded -----

#[test]
fn audit_log_records_every_call_in_order_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let kms = Kms::open(config(dir.path(), &clock)).unwrap();
    let me = Principal::local_admin();
    let t0 = kms.now();
    let none = AssociatedData::none();
    let ad = AssociatedData::from_json(r#"{"a":"1"}"#).unwrap();

    // Opening the service is not an audited call.
    assert!(kms.audit_entries(1, 1000).unwrap().is_empty());
    assert_eq!(
        kms.verify_audit().unwrap(),
        AuditVerification {
            entries_checked: 0,
            head_hash: GENESIS_HASH.into(),
            failure: None
        }
    );

    let vault = create_vault(&kms, "audited").unwrap(); // 1
    let key = create_key(&kms, &vault, "k"); // 2
    let ct = kms.encrypt(&me, &key.id, b"x", &ad).unwrap(); // 3
    kms.decrypt(&me, &ct.ciphertext, &ad, None).unwrap(); // 4
    clock.advance_millis(1_000);
    let bad = kms.decrypt(&me, &ct.ciphertext, &none, None); // 5: wrong AAD
    assert!(matches!(bad, Err(KmsError::InvalidCiphertext(_))), "{bad:?}");
    let v2 = kms.create_key_version(&me, &key.id).unwrap(); // 6
    kms.disable_key(&me, &key.id).unwrap(); // 7
    let denied = kms.encrypt(&me, &key.id, b"x", &none); // 8
    assert!(matches!(denied, Err(KmsError::AccessDenied(_))), "{denied:?}");
    kms.enable_key(&me, &key.id).unwrap(); // 9
    let early = kms.schedule_key_deletion(&me, &key.id, Some(kms.now().plus_days(6))); // 10
    assert!(matches!(early, Err(KmsError::InvalidParameter(_))), "{early:?}");
    let dk = KeyProvider::generate_data_key(&kms, &key.id, b"obj").unwrap(); // 11
    kms.unwrap_data_key(&dk.wrapped, b"obj").unwrap(); // 12
    let rewrapped = kms.rewrap(&me, &ct.ciphertext, &ad, None).unwrap(); // 13
    assert!(create_vault(&kms, " ").is_err()); // 14
    let garbage = kms.decrypt(&me, b"not a ciphertext", &none, None); // 15
    assert!(matches!(garbage, Err(KmsError::InvalidCiphertext(_))), "{garbage:?}");

    let verification = kms.verify_audit().unwrap();
    assert!(verification.is_intact(), "{verification:?}");
    assert_eq!(verification.entries_checked, 15);

    let entries = kms.audit_entries(1, 1000).unwrap();
    let admin = "local-admin";
    let data = "sealstore-data-path";
    assert_eq!(
        entries.iter().map(summary).collect::<Vec<_>>(),
        vec![
            (1, admin, "CreateVault", "SUCCEEDED"),
            (2, admin, "CreateKey", "SUCCEEDED"),
            (3, admin, "Encrypt", "SUCCEEDED"),
            (4, admin, "Decrypt", "SUCCEEDED"),
            (5, admin, "Decrypt", "FAILED"),
            (6, admin, "CreateKeyVersion", "SUCCEEDED"),
            (7, admin, "DisableKey", "SUCCEEDED"),
            (8, admin, "Encrypt", "FAILED"),
            (9, admin, "EnableKey", "SUCCEEDED"),
            (10, admin, "ScheduleKeyDeletion", "FAILED"),
            (11, data, "GenerateDataEncryptionKey", "SUCCEEDED"),
            (12, data, "UnwrapDataEncryptionKey", "SUCCEEDED"),
            (13, admin, "Rewrap", "SUCCEEDED"),
            (14, admin, "CreateVault", "FAILED"),
            (15, admin, "Decrypt", "FAILED"),
        ]
    );
    assert_chain_links(&entries);

    // Resources named by each entry.
    let ids = |e: &AuditEntry| {
        (
            e.subject.vault_id.clone(),
            e.subject.key_id.clone(),
            e.subject.key_version_id.clone(),
        )
    };
    let v1 = key.current_key_version.clone();
    let (vid, kid) = (Some(vault.id.clone()), Some(key.id.clone()));
    assert_eq!(ids(&entries[0]), (vid.clone(), None, None));
    assert_eq!(ids(&entries[1]), (vid.clone(), kid.clone(), Some(v1.clone())));
    assert_eq!(ids(&entries[2]), (vid.clone(), kid.clone(), Some(v1.clone())));
    assert_eq!(ids(&entries[3]), (vid.clone(), kid.clone(), Some(v1.clone())));
    assert_eq!(ids(&entries[4]), (vid.clone(), kid.clone(), Some(v1.clone())));
    assert_eq!(ids(&entries[5]), (vid.clone(), kid.clone(), Some(v2.id.clone())));
    assert_eq!(ids(&entries[6]), (vid.clone(), kid.clone(), None));
    assert_eq!(entries[7].subject.key_id, kid);
    assert_eq!(ids(&entries[8]), (vid.clone(), kid.clone(), None));
    assert_eq!(entries[9].subject.key_id, kid);
    assert_eq!(ids(&entries[10]), (vid.clone(), kid.clone(), Some(v2.id.clone())));
    assert_eq!(ids(&entries[11]), (vid.clone(), kid.clone(), Some(v2.id.clone())));
    assert_eq!(
        ids(&entries[12]),
        (vid.clone(), kid.clone(), Some(rewrapped.key_version_id.clone()))
    );
    assert_eq!(ids(&entries[13]), (None, None, None));
    assert_eq!(ids(&entries[14]), (None, None, None));

    // Failures carry the error message; successes none.
    for e in &entries {
        assert_eq!(e.message.is_some(), e.result == "FAILED", "{e:?}");
    }
    assert!(
        entries[4]
            .message
            .as_deref()
            .unwrap()
            .starts_with("ciphertext rejected"),
        "{:?}",
        entries[4]
    );
    assert!(
        entries[7].message.as_deref().unwrap().starts_with("access denied"),
        "{:?}",
        entries[7]
    );
    assert!(
        entries[9].message.as_deref().unwrap().starts_with("invalid parameter"),
        "{:?}",
        entries[9]
    );
    assert!(
        entries[13].message.as_deref().unwrap().contains("displayName"),
        "{:?}",
        entries[13]
    );

    // Times come from the service's clock.
    assert_eq!(entries[0].time, t0);
    assert_eq!(entries[3].time, t0);
    assert_eq!(entries[4].time, Timestamp::from_unix_millis(t0.unix_millis() + 1_000));

    // Paging.
    let page: Vec<u64> = kms.audit_entries(5, 3).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(page, vec![5, 6, 7]);
    let from_zero: Vec<u64> = kms.audit_entries(0, 2).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(from_zero, vec![1, 2]);
    assert!(kms.audit_entries(16, 10).unwrap().is_empty());
    assert_eq!(kms.audit_entries(14, 10).unwrap().len(), 2);
}

#[test]
fn scheduler_work_is_audited_under_its_own_principal() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let kms = Kms::open(config(dir.path(), &clock)).unwrap();
    let me = Principal::local_admin();
    let vault = create_vault(&kms, "v").unwrap();
    let key = kms
        .create_key(
            &me,
            CreateKey {
                auto_rotation_interval_days: Some(60),
                ..CreateKey::new(vault.id.clone(), "rotating")
            },
        )
        .unwrap();
    let doomed = create_vault(&kms, "doomed").unwrap();
    kms.schedule_vault_deletion(&me, &doomed.id, Some(kms.now().plus_days(7)))
        .unwrap();
    let before = kms.audit_entries(1, 1000).unwrap().len() as u64;
    assert_eq!(before, 4);

    clock.advance_days(61);
    let report = kms.run_scheduled().unwrap();
    assert_eq!(report.purged_vaults, vec![doomed.id.clone()]);
    assert_eq!(report.rotated.len(), 1);

    let new = kms.audit_entries(before + 1, 1000).unwrap();
    let ops: Vec<(&str, &str, &str)> = new
        .iter()
        .map(|e| (e.principal.as_str(), e.operation.as_str(), e.result.as_str()))
        .collect();
    assert_eq!(
        ops,
        vec![
            ("sealstore-scheduler", "PurgeVault", "SUCCEEDED"),
            ("sealstore-scheduler", "AutoRotateKey", "SUCCEEDED"),
        ]
    );
    assert_eq!(new[0].subject.vault_id, Some(doomed.id.clone()));
    assert_eq!(new[1].subject.key_id, Some(key.id.clone()));
    assert_eq!(new[1].subject.key_version_id, Some(report.rotated[0].1.clone()));
    assert!(kms.verify_audit().unwrap().is_intact());
}

/// A scheduler pass that finds nothing to do for a key must not write an audit entry saying
/// it did something. Here the vault purge destroys a key whose own deletion and whose
/// auto-rotation fall due in the same pass: neither is carried out (the report says so), yet
/// the log records a successful `PurgeKey` and a successful `AutoRotateKey` for that key.
#[test]

fn scheduler_audits_only_the_work_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let kms = Kms::open(config(dir.path(), &clock)).unwrap();
    let me = Principal::local_admin();
    let vault = create_vault(&kms, "v").unwrap();
    let rotating = kms
        .create_key(
            &me,
            CreateKey {
                auto_rotation_interval_days: Some(60),
                ..CreateKey::new(vault.id.clone(), "rotating")
            },
        )
        .unwrap();
    let doomed = create_key(&kms, &vault, "doomed");
    clock.advance_days(31);
    // Both deadlines on day 61; the rotation is due on day 60.
    kms.schedule_key_deletion(&me, &doomed.id, None).unwrap();
    kms.schedule_vault_deletion(&me, &vault.id, None).unwrap();
    let before = kms.audit_entries(1, 1000).unwrap().len() as u64;

    clock.advance_days(31); // day 62
    let report = kms.run_scheduled().unwrap();
    assert_eq!(report.purged_vaults, vec![vault.id.clone()]);
    assert!(report.purged_keys.is_empty(), "{report:?}");
    assert!(report.rotated.is_empty(), "{report:?}");
    assert_eq!(
        kms.get_key(&rotating.id).unwrap().current_key_version,
        rotating.current_key_version,
        "the destroyed key was not rotated"
    );

    let new = kms.audit_entries(before + 1, 1000).unwrap();
    let ops: Vec<(&str, &str)> = new.iter().map(|e| (e.operation.as_str(), e.result.as_str())).collect();
    assert_eq!(ops, vec![("PurgeVault", "SUCCEEDED")], "{new:#?}");
}

#[test]
fn concurrent_calls_keep_one_unbroken_chain() {
    concurrent_calls(false);
}

#[test]
fn with_a_background_writer_every_entry_is_written_and_durable_at_stop() {
    concurrent_calls(true);
}

/// Four threads encrypt and decrypt at once, with or without `run_audit_writer` running;
/// then every call has its entry, in one chain, also after reopening.
fn concurrent_calls(background_writer: bool) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let kms = Kms::open(config(dir.path(), &clock)).unwrap();
    let vault = create_vault(&kms, "v").unwrap();
    let key = create_key(&kms, &vault, "k");
    const THREADS: usize = 4;
    const CALLS: usize = 250;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = background_writer.then(|| {
            let (kms, stop) = (&kms, &stop);
            let writer = s.spawn(move || kms.run_audit_writer(stop));
            while !kms.audit_writer_running() {
                std::thread::yield_now();
            }
            writer
        });
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (kms, key) = (&kms, &key);
                s.spawn(move || {
                    let me = Principal::new(format!("worker-{t}"));
                    for i in 0..CALLS {
                        let pt = format!("{t}/{i}");
                        let ct = kms
                            .encrypt(&me, &key.id, pt.as_bytes(), &AssociatedData::none())
                            .unwrap();
                        let back = kms.decrypt(&me, &ct.ciphertext, &AssociatedData::none(), None).unwrap();
                        assert_eq!(&back.plaintext[..], pt.as_bytes());
                    }
                });
            }
        });
        if let Some(writer) = writer {
            stop.store(true, std::sync::atomic::Ordering::Release);
            kms.wake_audit_writer();
            writer.join().unwrap().unwrap();
            assert!(!kms.audit_writer_running());
        }
    });
    let kms = if background_writer {
        // Stopping flushed everything: a reopened store has it all.
        drop(kms);
        Kms::open(config(dir.path(), &clock)).unwrap()
    } else {
        kms
    };
    let expected = 2 + (THREADS * CALLS * 2) as u64;
    let verification = kms.verify_audit().unwrap();
    assert!(verification.is_intact(), "{verification:?}");
    assert_eq!(verification.entries_checked, expected);
    let entries = kms.audit_entries(1, 10_000).unwrap();
    assert_eq!(entries.len() as u64, expected);
    assert_chain_links(&entries);
    for t in 0..THREADS {
        let name = format!("worker-{t}");
        let mine = entries.iter().filter(|e| e.principal.as_str() == name).count();
        assert_eq!(mine, CALLS * 2, "{name}");
    }
}

#[test]
fn chain_continues_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let kms = Kms::open(config(dir.path(), &clock)).unwrap();
    let vault = create_vault(&kms, "v").unwrap();
    let key = create_key(&kms, &vault, "k");
    kms.encrypt(&Principal::local_admin(), &key.id, b"x", &AssociatedData::none())
        .unwrap();
    let before = kms.audit_entries(1, 100).unwrap();
    drop(kms);

    let kms = Kms::open(config(dir.path(), &clock)).unwrap();
    assert_eq!(kms.audit_entries(1, 100).unwrap(), before);
    kms.create_key_version(&Principal::local_admin(), &key.id).unwrap();
    let after = kms.audit_entries(1, 100).unwrap();
    assert_eq!(after.len(), 4);
    assert_eq!(after[3].prev_hash, before[2].hash);
    assert_chain_links(&after);
    let v = kms.verify_audit().unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.entries_checked, 4);
}

// ----- crashes -----
//
// The child processes below are this test binary run again with `--exact <test>` and an
// environment variable naming what to do; they make some calls on an existing data directory
// and then abort without closing the Kms, as a crash or `kill -9` would.

const CHILD_DIR_ENV: &str = "KMS_CORE_AUDIT_TEST_CHILD_DIR";
const CHILD_KEY_ENV: &str = "KMS_CORE_AUDIT_TEST_CHILD_KEY";
const CHILD_DONE: &str = "child: calls returned, aborting";

/// In the child process: runs `calls` on the directory and key the parent named, then aborts.
fn child_if_requested(calls: impl FnOnce(&Kms, &Ocid)) {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let key_id = Ocid::parse(ResourceType::Key, &std::env::var(CHILD_KEY_ENV).unwrap()).unwrap();
    let kms = Kms::open(common::kms_config(dir)).unwrap();
    calls(&kms, &key_id);
    println!("{CHILD_DONE}");
    std::process::abort();
}

/// In the parent: a data directory with a vault and a key (closed), then `test` run in a child
/// that aborts. Returns the reopened Kms and the key.
fn crash_child(test: &str) -> (TempDir, Kms, Key) {
    let dir = tempfile::tempdir().unwrap();
    let kms = Kms::open(common::kms_config(dir.path())).unwrap();
    let vault = create_vault(&kms, "v").unwrap();
    let key = create_key(&kms, &vault, "k");
    drop(kms);

    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .env(CHILD_KEY_ENV, key.id.as_str())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(CHILD_DONE),
        "child failed: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the child was meant to abort");
    let kms = Kms::open(common::kms_config(dir.path())).unwrap();
    (dir, kms, key)
}

fn who_did_what(entries: &[AuditEntry]) -> Vec<(&str, &str, &str)> {
    entries
        .iter()
        .map(|e| (e.principal.as_str(), e.operation.as_str(), e.result.as_str()))
        .collect()
}

/// Crypto audit entries may be committed lazily (the store batches their fsyncs), so a crash
/// may lose the newest of them — but the chain must still verify, and what is left must be
/// a prefix of what happened.
#[test]
fn crash_after_crypto_calls_leaves_an_intact_chain() {
    child_if_requested(|kms, key| {
        let me = Principal::new("child");
        let ct = kms.encrypt(&me, key, b"x", &AssociatedData::none()).unwrap();
        kms.decrypt(&me, &ct.ciphertext, &AssociatedData::none(), None).unwrap();
    });
    let (_dir, kms, key) = crash_child("crash_after_crypto_calls_leaves_an_intact_chain");

    let entries = kms.audit_entries(1, 100).unwrap();
    let ops = who_did_what(&entries);
    let happened = [
        ("local-admin", "CreateVault", "SUCCEEDED"),
        ("local-admin", "CreateKey", "SUCCEEDED"),
        ("child", "Encrypt", "SUCCEEDED"),
        ("child", "Decrypt", "SUCCEEDED"),
    ];
    assert!(ops.len() >= 2 && ops[..] == happened[..ops.len()], "{ops:?}");
    let v = kms.verify_audit().unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.entries_checked, entries.len() as u64);

    // The service carries on: new entries link to what survived.
    kms.encrypt(&Principal::local_admin(), &key.id, b"y", &AssociatedData::none())
        .unwrap();
    let after = kms.audit_entries(1, 100).unwrap();
    assert_eq!(after.len(), entries.len() + 1);
    assert_chain_links(&after);
    assert!(kms.verify_audit().unwrap().is_intact());
}

/// A management change is durable when its call returns, and so is every audit entry before
/// it; only crypto entries after the last durable commit may be lost in a crash.
#[test]
fn crash_never_loses_a_management_change_or_the_entries_before_it() {
    child_if_requested(|kms, key| {
        let me = Principal::new("child");
        kms.encrypt(&me, key, b"x", &AssociatedData::none()).unwrap();
        kms.create_key_version(&me, key).unwrap();
        kms.encrypt(&me, key, b"y", &AssociatedData::none()).unwrap();
    });
    let (_dir, kms, key) = crash_child("crash_never_loses_a_management_change_or_the_entries_before_it");

    assert_eq!(kms.list_key_versions(&key.id).unwrap().len(), 2);
    let entries = kms.audit_entries(1, 100).unwrap();
    let ops = who_did_what(&entries);
    let durable = [
        ("local-admin", "CreateVault", "SUCCEEDED"),
        ("local-admin", "CreateKey", "SUCCEEDED"),
        ("child", "Encrypt", "SUCCEEDED"),
        ("child", "CreateKeyVersion", "SUCCEEDED"),
    ];
    assert!(ops.len() >= 4 && ops[..4] == durable[..], "{ops:?}");
    assert!(
        ops.len() == 4 || ops[4..] == [("child", "Encrypt", "SUCCEEDED")],
        "{ops:?}"
    );
    assert_eq!(
        entries[3].subject.key_version_id,
        Some(kms.get_key(&key.id).unwrap().current_key_version)
    );
    let v = kms.verify_audit().unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.entries_checked, entries.len() as u64);
}

// ----- tampering with the database file -----

/// A data directory with a closed Kms and `n` audit entries (management and crypto, one
/// failed), intact.
fn audited_dir() -> (TempDir, ManualClock, u64) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let kms = Kms::open(config(dir.path(), &clock)).unwrap();
    let me = Principal::local_admin();
    let vault = create_vault(&kms, "v").unwrap(); // 1
    let key = create_key(&kms, &vault, "k"); // 2
    let ct = kms.encrypt(&me, &key.id, b"x", &AssociatedData::none()).unwrap(); // 3
    kms.decrypt(&me, &ct.ciphertext, &AssociatedData::none(), None).unwrap(); // 4
    assert!(kms
        .disable_key(&me, &Ocid::generate(ResourceType::Key, "local-1"))
        .is_err()); // 5
    kms.create_key_version(&me, &key.id).unwrap(); // 6
    kms.encrypt(&me, &key.id, b"y", &AssociatedData::none()).unwrap(); // 7
    kms.disable_key(&me, &key.id).unwrap(); // 8
    let v = kms.verify_audit().unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.entries_checked, 8);
    let ops: Vec<String> = kms
        .audit_entries(1, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.operation)
        .collect();
    assert_eq!(
        ops,
        [
            "CreateVault",
            "CreateKey",
            "Encrypt",
            "Decrypt",
            "DisableKey",
            "CreateKeyVersion",
            "Encrypt",
            "DisableKey"
        ]
    );
    drop(kms);
    (dir, clock, 8)
}

/// The audit table of a closed data directory, as read from its database; what a test's edit
/// changes is written back there directly (the redb file, or `sealstore_kv` on PostgreSQL).
struct AuditRows(std::collections::BTreeMap<u64, Vec<u8>>);

impl AuditRows {
    fn get(&self, seq: u64) -> Option<Vec<u8>> {
        self.0.get(&seq).cloned()
    }

    fn insert(&mut self, seq: u64, v: &[u8]) -> Result<Option<Vec<u8>>, std::convert::Infallible> {
        Ok(self.0.insert(seq, v.to_vec()))
    }

    fn remove(&mut self, seq: u64) -> Result<Option<Vec<u8>>, std::convert::Infallible> {
        Ok(self.0.remove(&seq))
    }
}

/// Opens the closed data directory's database directly and edits the audit table.
fn tamper(dir: &Path, edit: impl FnOnce(&mut AuditRows)) {
    let ns = kms_core::internals::schema::NAMESPACE.name;
    if let Some(kv) = common::postgres_rows(dir) {
        let before: std::collections::BTreeMap<u64, Vec<u8>> = kv
            .rows(ns, AUDIT.name())
            .into_iter()
            .map(|(k, v)| (u64::from_be_bytes(k.try_into().unwrap()), v))
            .collect();
        assert!(!before.is_empty(), "no audit rows in the database");
        let mut rows = AuditRows(before.clone());
        edit(&mut rows);
        for seq in before.keys().filter(|seq| !rows.0.contains_key(seq)) {
            assert!(kv.delete(ns, AUDIT.name(), &seq.to_be_bytes()));
        }
        for (seq, v) in rows.0.iter().filter(|(seq, v)| before.get(seq) != Some(v)) {
            kv.put(ns, AUDIT.name(), &seq.to_be_bytes(), v);
        }
        return;
    }
    let db = redb::Database::open(dir.join(DB_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn
            .open_table(redb::TableDefinition::<u64, &[u8]>::new(AUDIT.name()))
            .unwrap();
        let before: std::collections::BTreeMap<u64, Vec<u8>> = table
            .iter()
            .unwrap()
            .map(|row| {
                let (k, v) = row.unwrap();
                (k.value(), v.value().to_vec())
            })
            .collect();
        let mut rows = AuditRows(before.clone());
        edit(&mut rows);
        for seq in before.keys().filter(|seq| !rows.0.contains_key(seq)) {
            table.remove(*seq).unwrap();
        }
        for (seq, v) in rows.0.iter().filter(|(seq, v)| before.get(seq) != Some(v)) {
            table.insert(*seq, v.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

fn row(table: &AuditRows, seq: u64) -> Vec<u8> {
    table.get(seq).unwrap_or_else(|| panic!("no entry {seq}"))
}

fn replace_in_row(table: &mut AuditRows, seq: u64, from: &str, to: &str) {
    let json = String::from_utf8(row(table, seq)).unwrap();
    assert!(json.contains(from), "entry {seq} has no {from}: {json}");
    let edited = json.replacen(from, to, 1);
    table.insert(seq, edited.as_bytes()).unwrap();
}

fn verify_after_reopen(dir: &Path, clock: &ManualClock) -> AuditVerification {
    let kms = Kms::open(config(dir, clock)).unwrap();
    kms.verify_audit().unwrap()
}

/// Whether `msg` mentions the number `seq` (as a whole number, not as part of another).
fn names_entry(msg: &str, seq: u64) -> bool {
    msg.split(|c: char| !c.is_ascii_digit())
        .any(|tok| tok == seq.to_string())
}

fn failure(v: &AuditVerification) -> &str {
    v.failure
        .as_deref()
        .unwrap_or_else(|| panic!("tampering not detected: {v:?}"))
}

#[test]
fn untouched_database_verifies_after_reopen() {
    let (dir, clock, n) = audited_dir();
    // Opening and committing an empty transaction on the file changes nothing.
    tamper(dir.path(), |_| {});
    let kms = Kms::open(config(dir.path(), &clock)).unwrap();
    let last_hash = kms.audit_entries(n, 1).unwrap()[0].hash.clone();
    assert_eq!(
        kms.verify_audit().unwrap(),
        AuditVerification {
            entries_checked: n,
            head_hash: last_hash,
            failure: None
        }
    );
}

#[test]
fn edited_operation_is_detected_at_that_entry() {
    let (dir, clock, _) = audited_dir();
    tamper(dir.path(), |t| {
        replace_in_row(t, 3, r#""operation":"Encrypt""#, r#""operation":"Decrypt""#)
    });
    let v = verify_after_reopen(dir.path(), &clock);
    assert!(!v.is_intact());
    assert!(names_entry(failure(&v), 3), "{v:?}");
    assert_eq!(v.entries_checked, 2);
}

#[test]
fn edited_result_is_detected_at_that_entry() {
    let (dir, clock, _) = audited_dir();
    tamper(dir.path(), |t| {
        replace_in_row(t, 5, r#""result":"FAILED""#, r#""result":"SUCCEEDED""#)
    });
    let v = verify_after_reopen(dir.path(), &clock);
    assert!(!v.is_intact());
    assert!(names_entry(failure(&v), 5), "{v:?}");
    assert_eq!(v.entries_checked, 4);
}

#[test]
fn edited_principal_of_the_last_entry_is_detected() {
    let (dir, clock, n) = audited_dir();
    tamper(dir.path(), |t| {
        replace_in_row(t, n, r#""principal":"local-admin""#, r#""principal":"someone-else""#)
    });
    let v = verify_after_reopen(dir.path(), &clock);
    assert!(names_entry(failure(&v), n), "{v:?}");
    assert_eq!(v.entries_checked, n - 1);
}

#[test]
fn edited_link_or_sequence_number_is_detected() {
    let (dir, clock, _) = audited_dir();
    tamper(dir.path(), |t| replace_in_row(t, 4, r#""seq":4"#, r#""seq":40"#));
    let v = verify_after_reopen(dir.path(), &clock);
    assert!(names_entry(failure(&v), 4), "{v:?}");
    assert_eq!(v.entries_checked, 3);

    let (dir, clock, _) = audited_dir();
    tamper(dir.path(), |t| {
        let json = String::from_utf8(row(t, 6)).unwrap();
        let prev = string_field(&json, "prevHash");
        assert_eq!(prev.len(), 64);
        replace_in_row(t, 6, &prev, GENESIS_HASH);
    });
    let v = verify_after_reopen(dir.path(), &clock);
    assert!(names_entry(failure(&v), 6), "{v:?}");
    assert_eq!(v.entries_checked, 5);
}

/// The value of a string field in an entry's JSON (kms-core's tests have no JSON parser).
fn string_field(json: &str, name: &str) -> String {
    let marker = format!("\"{name}\":\"");
    let start = json.find(&marker).unwrap_or_else(|| panic!("no {name} in {json}")) + marker.len();
    let len = json[start..].find('"').unwrap();
    json[start..start + len].to_owned()
}

#[test]
fn removed_middle_entry_is_detected() {
    let (dir, clock, _) = audited_dir();
    tamper(dir.path(), |t| {
        t.remove(4).unwrap().expect("entry 4 existed");
    });
    let v = verify_after_reopen(dir.path(), &clock);
    assert!(!v.is_intact());
    assert!(names_entry(failure(&v), 4), "{v:?}");
    assert_eq!(v.entries_checked, 3);
}

#[test]
fn removed_middle_entry_with_later_entries_renumbered_is_detected() {
    let (dir, clock, n) = audited_dir();
    tamper(dir.path(), |t| {
        // Close the gap: move every later entry down by one, fixing its "seq" field too.
        for seq in 4..n {
            let json = String::from_utf8(row(t, seq + 1)).unwrap();
            let moved = json.replacen(&format!("\"seq\":{}", seq + 1), &format!("\"seq\":{seq}"), 1);
            t.insert(seq, moved.as_bytes()).unwrap();
        }
        t.remove(n).unwrap();
    });
    let v = verify_after_reopen(dir.path(), &clock);
    assert!(!v.is_intact());
    assert!(names_entry(failure(&v), 4), "{v:?}");
    assert_eq!(v.entries_checked, 3);
}

#[test]
fn swapped_entries_are_detected() {
    let (dir, clock, _) = audited_dir();
    tamper(dir.path(), |t| {
        let (three, five) = (row(t, 3), row(t, 5));
        t.insert(3, five.as_slice()).unwrap();
        t.insert(5, three.as_slice()).unwrap();
    });
    let v = verify_after_reopen(dir.path(), &clock);
    assert!(!v.is_intact());
    assert!(names_entry(failure(&v), 3), "{v:?}");
    assert_eq!(v.entries_checked, 2);
}

#[test]
fn swapped_adjacent_entries_with_fixed_sequence_numbers_are_detected() {
    let (dir, clock, _) = audited_dir();
    tamper(dir.path(), |t| {
        let six = String::from_utf8(row(t, 6))
            .unwrap()
            .replacen("\"seq\":6", "\"seq\":7", 1);
        let seven = String::from_utf8(row(t, 7))
            .unwrap()
            .replacen("\"seq\":7", "\"seq\":6", 1);
        t.insert(6, seven.as_bytes()).unwrap();
        t.insert(7, six.as_bytes()).unwrap();
    });
    let v = verify_after_reopen(dir.path(), &clock);
    assert!(names_entry(failure(&v), 6), "{v:?}");
    assert_eq!(v.entries_checked, 5);
}

#[test]
fn removed_last_entry_is_detected() {
    let (dir, clock, n) = audited_dir();
    tamper(dir.path(), |t| {
        t.remove(n).unwrap().expect("last entry existed");
    });
    let v = verify_after_reopen(dir.path(), &clock);
    assert!(!v.is_intact());
    let msg = failure(&v);
    assert!(names_entry(msg, n - 1) && names_entry(msg, n), "{v:?}");
    assert_eq!(v.entries_checked, n - 1);
}

#[test]
fn removed_every_entry_is_detected() {
    let (dir, clock, n) = audited_dir();
    tamper(dir.path(), |t| {
        for seq in 1..=n {
            t.remove(seq).unwrap();
        }
    });
    let v = verify_after_reopen(dir.path(), &clock);
    assert!(names_entry(failure(&v), n), "{v:?}");
    assert_eq!(v.entries_checked, 0);
}

#[test]
fn unreadable_entry_is_detected() {
    let (dir, clock, _) = audited_dir();
    tamper(dir.path(), |t| {
        t.insert(2, b"{not json".as_slice()).unwrap();
    });
    let v = verify_after_reopen(dir.path(), &clock);
    assert!(names_entry(failure(&v), 2), "{v:?}");
    assert_eq!(v.entries_checked, 1);
}

#[test]
fn appended_entry_beyond_the_head_is_detected() {
    let (dir, clock, n) = audited_dir();
    tamper(dir.path(), |t| {
        // A copy of the last entry, renumbered: links to the wrong entry and is past the head.
        let last = String::from_utf8(row(t, n)).unwrap();
        let forged = last.replacen(&format!("\"seq\":{n}"), &format!("\"seq\":{}", n + 1), 1);
        t.insert(n + 1, forged.as_bytes()).unwrap();
    });
    let v = verify_after_reopen(dir.path(), &clock);
    assert!(names_entry(failure(&v), n + 1), "{v:?}");
    assert_eq!(v.entries_checked, n);
}

#[test]
fn refusals_join_the_chain_as_denied_with_who_and_from_where() {
    let dir = TempDir::new().unwrap();
    let clock = ManualClock::starting_now();
    let kms = Kms::open(config(dir.path(), &clock)).unwrap();
    create_vault(&kms, "before").unwrap();
    kms.audit_refusal(kms_core::AuditRefusal {
        principal: "ocid1.user.oc1..x".into(),
        principal_name: Some("mallory".into()),
        source: Some("192.0.2.7:50412".into()),
        operation: "POST /20180608/vaults".into(),
        subject: Default::default(),
        reason: "not authorized: needs manage vaults".into(),
    })
    .unwrap();
    create_vault(&kms, "after").unwrap();
    kms.flush_audit().unwrap();
    let entries = kms.audit_entries(1, 100).unwrap();
    assert_chain_links(&entries);
    let denied: Vec<_> = entries.iter().filter(|e| e.result == "DENIED").collect();
    assert_eq!(denied.len(), 1);
    let e = denied[0];
    assert_eq!(e.principal.as_str(), "ocid1.user.oc1..x");
    assert_eq!(e.principal_name.as_deref(), Some("mallory"));
    assert_eq!(e.source.as_deref(), Some("192.0.2.7:50412"));
    assert_eq!(e.message.as_deref(), Some("not authorized: needs manage vaults"));
    // Entries without a name or source keep their old form (and hash): the fields are absent.
    let plain = entries.iter().find(|e| e.result == "SUCCEEDED").unwrap();
    let json = serde_json::to_value(plain).unwrap();
    assert!(json.get("principalName").is_none() && json.get("source").is_none());
    assert!(kms.verify_audit().unwrap().failure.is_none());
}
