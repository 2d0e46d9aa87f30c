//! Integration tests of kms-core's resource lifecycle: vault and key deletion windows and
//! purge, automatic rotation, the compliance report, persistence across reopen, defaults and
//! list filters. Time is moved with a [`ManualClock`].

mod common;

use std::path::Path;
use std::sync::Arc;

use kms_core::{
    AssociatedData, CreateKey, CreateVault, Key, KeyState, KeyVersionState, Kms, KmsConfig, KmsError, ManualClock,
    Ocid, Principal, Refusal, ResourceType, UpdateResource, Vault, VaultState, VaultType, DEFAULT_MAX_KEY_AGE_DAYS,
};
use tempfile::TempDir;

fn config(dir: &Path, clock: &ManualClock) -> KmsConfig {
    KmsConfig {
        clock: Arc::new(clock.clone()),
        ..common::kms_config(dir)
    }
}

/// A Kms on a fresh data directory, with a clock the test can move.
struct Env {
    // Declared first so it is dropped before the directory.
    kms: Kms,
    clock: ManualClock,
    me: Principal,
    dir: TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let kms = Kms::open(config(dir.path(), &clock)).unwrap();
    Env {
        kms,
        clock,
        me: Principal::local_admin(),
        dir,
    }
}

impl Env {
    fn vault(&self, name: &str) -> Vault {
        self.kms
            .create_vault(
                &self.me,
                CreateVault {
                    display_name: name.into(),
                    ..Default::default()
                },
            )
            .unwrap()
    }

    fn key(&self, vault: &Vault, name: &str) -> Key {
        self.kms
            .create_key(&self.me, CreateKey::new(vault.id.clone(), name))
            .unwrap()
    }

    fn rotating_key(&self, vault: &Vault, name: &str, days: u32) -> Key {
        self.kms
            .create_key(
                &self.me,
                CreateKey {
                    auto_rotation_interval_days: Some(days),
                    ..CreateKey::new(vault.id.clone(), name)
                },
            )
            .unwrap()
    }

    /// Closes the Kms and opens the same directory again with the same clock.
    fn reopen(self) -> Env {
        let Env { kms, clock, me, dir } = self;
        drop(kms);
        let kms = Kms::open(config(dir.path(), &clock)).unwrap();
        Env { kms, clock, me, dir }
    }

    fn encrypt(&self, key: &Key, plaintext: &[u8]) -> Vec<u8> {
        self.kms
            .encrypt(&self.me, &key.id, plaintext, &AssociatedData::none())
            .unwrap()
            .ciphertext
    }

    fn decrypt(&self, ct: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.kms
            .decrypt(&self.me, ct, &AssociatedData::none(), None)
            .map(|d| d.plaintext.to_vec())
    }
}

fn days_after(t: kms_core::Timestamp, days: i64) -> kms_core::Timestamp {
    t.plus_days(days)
}

// ----- vault deletion -----

#[test]
fn vault_deletion_window_must_be_7_to_30_days_and_defaults_to_30() {
    let e = env();
    let vault = e.vault("doomed");
    let now = e.kms.now();

    for days in [0, 6, 31, 365, -1] {
        let r = e
            .kms
            .schedule_vault_deletion(&e.me, &vault.id, Some(days_after(now, days)));
        assert!(matches!(r, Err(KmsError::InvalidParameter(_))), "{days} days: {r:?}");
    }
    // Nothing changed.
    assert_eq!(e.kms.get_vault(&vault.id).unwrap().lifecycle_state, VaultState::Active);

    let v = e.kms.schedule_vault_deletion(&e.me, &vault.id, None).unwrap();
    assert_eq!(v.lifecycle_state, VaultState::PendingDeletion);
    assert_eq!(v.time_of_deletion, Some(days_after(now, 30)));
    assert_eq!(e.kms.get_vault(&vault.id).unwrap(), v);

    // Scheduling twice is a state error.
    let r = e.kms.schedule_vault_deletion(&e.me, &vault.id, None);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");

    // The bounds themselves are accepted.
    let v = e.kms.cancel_vault_deletion(&e.me, &vault.id).unwrap();
    assert_eq!(v.lifecycle_state, VaultState::Active);
    assert_eq!(v.time_of_deletion, None);
    for days in [7, 30] {
        let v = e
            .kms
            .schedule_vault_deletion(&e.me, &vault.id, Some(days_after(now, days)))
            .unwrap();
        assert_eq!(v.time_of_deletion, Some(days_after(now, days)));
        e.kms.cancel_vault_deletion(&e.me, &vault.id).unwrap();
    }
}

#[test]
fn vault_pending_deletion_blocks_its_keys_until_cancelled() {
    let e = env();
    let vault = e.vault("doomed");
    let key = e.key(&vault, "k");
    let ct = e.encrypt(&key, b"keep me");

    e.kms.schedule_vault_deletion(&e.me, &vault.id, None).unwrap();
    let r = e.kms.encrypt(&e.me, &key.id, b"x", &AssociatedData::none());
    assert_eq!(
        r.as_ref().err().and_then(KmsError::refusal),
        Some(Refusal::VaultPendingDeletion),
        "{r:?}"
    );
    let r = e.decrypt(&ct);
    assert_eq!(
        r.as_ref().err().and_then(KmsError::refusal),
        Some(Refusal::VaultPendingDeletion),
        "{r:?}"
    );
    let r = e.kms.generate_data_key(&e.me, &key.id, &AssociatedData::none(), true);
    assert!(matches!(r, Err(KmsError::AccessDenied(_))), "{r:?}");
    // No new keys and no rotation in a vault pending deletion.
    let r = e.kms.create_key(&e.me, CreateKey::new(vault.id.clone(), "late"));
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");
    let r = e.kms.create_key_version(&e.me, &key.id);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");

    e.kms.cancel_vault_deletion(&e.me, &vault.id).unwrap();
    assert_eq!(e.decrypt(&ct).unwrap(), b"keep me");
    let ct2 = e.encrypt(&key, b"again");
    assert_eq!(e.decrypt(&ct2).unwrap(), b"again");
    // Cancelling when nothing is scheduled is a state error.
    let r = e.kms.cancel_vault_deletion(&e.me, &vault.id);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");
}

#[test]
fn vault_purge_destroys_its_keys_for_good() {
    let mut e = env();
    let vault = e.vault("doomed");
    let k1 = e.key(&vault, "k1");
    let k2 = e.key(&vault, "k2");
    e.kms.create_key_version(&e.me, &k2.id).unwrap();
    let other_vault = e.vault("survivor");
    let survivor = e.key(&other_vault, "s");
    let ct1 = e.encrypt(&k1, b"lost forever");
    let ct_s = e.encrypt(&survivor, b"still here");

    let now = e.kms.now();
    e.kms
        .schedule_vault_deletion(&e.me, &vault.id, Some(days_after(now, 7)))
        .unwrap();

    // Not yet due.
    e.clock.advance_days(6);
    let report = e.kms.run_scheduled().unwrap();
    assert!(report.purged_vaults.is_empty(), "{report:?}");
    assert_eq!(
        e.kms.get_vault(&vault.id).unwrap().lifecycle_state,
        VaultState::PendingDeletion
    );

    e.clock.advance_days(2);
    let report = e.kms.run_scheduled().unwrap();
    assert_eq!(report.purged_vaults, vec![vault.id.clone()]);
    assert!(report.purged_keys.is_empty(), "{report:?}");
    assert!(report.rotated.is_empty(), "{report:?}");

    let v = e.kms.get_vault(&vault.id).unwrap();
    assert_eq!(v.lifecycle_state, VaultState::Deleted);
    for key in [&k1, &k2] {
        let k = e.kms.get_key(&key.id).unwrap();
        assert_eq!(k.lifecycle_state, KeyState::Deleted);
        assert!(!k.is_auto_rotation_enabled);
        let versions = e.kms.list_key_versions(&key.id).unwrap();
        assert!(!versions.is_empty());
        assert!(
            versions.iter().all(|v| v.lifecycle_state == KeyVersionState::Deleted),
            "{versions:?}"
        );
    }
    assert_eq!(e.kms.list_key_versions(&k2.id).unwrap().len(), 2);

    let r = e.decrypt(&ct1);
    assert!(
        matches!(&r, Err(KmsError::VaultDeleted(id)) if *id == vault.id.to_string()),
        "{r:?}"
    );
    let r = e.kms.encrypt(&e.me, &k1.id, b"x", &AssociatedData::none());
    assert!(matches!(r, Err(KmsError::VaultDeleted(_))), "{r:?}");
    let r = e.kms.cancel_vault_deletion(&e.me, &vault.id);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");
    let r = e.kms.schedule_vault_deletion(&e.me, &vault.id, None);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");
    let r = e.kms.update_key(
        &e.me,
        &k1.id,
        UpdateResource {
            display_name: Some("resurrected".into()),
            ..Default::default()
        },
    );
    assert!(matches!(r, Err(KmsError::VaultDeleted(_))), "{r:?}");

    // The other vault is untouched.
    assert_eq!(e.decrypt(&ct_s).unwrap(), b"still here");

    // A second pass has nothing left to do.
    let report = e.kms.run_scheduled().unwrap();
    assert!(report.purged_vaults.is_empty(), "{report:?}");

    // Reopening does not bring anything back.
    e = e.reopen();
    assert_eq!(e.kms.get_vault(&vault.id).unwrap().lifecycle_state, VaultState::Deleted);
    assert_eq!(e.kms.get_key(&k1.id).unwrap().lifecycle_state, KeyState::Deleted);
    let r = e.decrypt(&ct1);
    assert!(matches!(r, Err(KmsError::VaultDeleted(_))), "{r:?}");
    let r = e.kms.cancel_vault_deletion(&e.me, &vault.id);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");
    assert_eq!(e.decrypt(&ct_s).unwrap(), b"still here");
}

#[test]
fn vault_cancelled_before_its_deadline_is_not_purged() {
    let e = env();
    let vault = e.vault("reprieved");
    let key = e.key(&vault, "k");
    let ct = e.encrypt(&key, b"safe");
    e.kms
        .schedule_vault_deletion(&e.me, &vault.id, Some(days_after(e.kms.now(), 7)))
        .unwrap();
    e.clock.advance_days(5);
    e.kms.cancel_vault_deletion(&e.me, &vault.id).unwrap();
    e.clock.advance_days(30);
    let report = e.kms.run_scheduled().unwrap();
    assert!(report.purged_vaults.is_empty(), "{report:?}");
    assert_eq!(e.kms.get_vault(&vault.id).unwrap().lifecycle_state, VaultState::Active);
    assert_eq!(e.decrypt(&ct).unwrap(), b"safe");
}

// ----- key deletion -----

#[test]
fn key_deletion_window_pending_state_cancel_and_purge() {
    let mut e = env();
    let vault = e.vault("v");
    let key = e.key(&vault, "doomed");
    let neighbour = e.key(&vault, "neighbour");
    let ct = e.encrypt(&key, b"bye");
    let ct_n = e.encrypt(&neighbour, b"hi");
    let now = e.kms.now();

    for days in [6, 31] {
        let r = e.kms.schedule_key_deletion(&e.me, &key.id, Some(days_after(now, days)));
        assert!(matches!(r, Err(KmsError::InvalidParameter(_))), "{days} days: {r:?}");
    }
    assert_eq!(e.kms.get_key(&key.id).unwrap().lifecycle_state, KeyState::Enabled);

    let k = e.kms.schedule_key_deletion(&e.me, &key.id, None).unwrap();
    assert_eq!(k.lifecycle_state, KeyState::PendingDeletion);
    assert_eq!(k.time_of_deletion, Some(days_after(now, 30)));
    let r = e.decrypt(&ct);
    assert!(matches!(r, Err(KmsError::AccessDenied(_))), "{r:?}");
    let r = e.kms.encrypt(&e.me, &key.id, b"x", &AssociatedData::none());
    assert!(matches!(r, Err(KmsError::AccessDenied(_))), "{r:?}");
    let r = e.kms.enable_key(&e.me, &key.id);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");

    let k = e.kms.cancel_key_deletion(&e.me, &key.id).unwrap();
    assert_eq!(k.lifecycle_state, KeyState::Enabled);
    assert_eq!(k.time_of_deletion, None);
    assert_eq!(e.decrypt(&ct).unwrap(), b"bye");
    let r = e.kms.cancel_key_deletion(&e.me, &key.id);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");

    // A disabled key can be scheduled too.
    e.kms.disable_key(&e.me, &key.id).unwrap();
    e.kms
        .schedule_key_deletion(&e.me, &key.id, Some(days_after(e.kms.now(), 7)))
        .unwrap();
    e.clock.advance_days(6);
    assert!(e.kms.run_scheduled().unwrap().purged_keys.is_empty());
    e.clock.advance_days(2);
    let report = e.kms.run_scheduled().unwrap();
    assert_eq!(report.purged_keys, vec![key.id.clone()]);
    assert!(report.purged_vaults.is_empty());

    let k = e.kms.get_key(&key.id).unwrap();
    assert_eq!(k.lifecycle_state, KeyState::Deleted);
    let versions = e.kms.list_key_versions(&key.id).unwrap();
    assert!(versions.iter().all(|v| v.lifecycle_state == KeyVersionState::Deleted));
    let r = e.decrypt(&ct);
    assert!(matches!(r, Err(KmsError::AccessDenied(_))), "{r:?}");
    let r = e.kms.cancel_key_deletion(&e.me, &key.id);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");
    let r = e.kms.schedule_key_deletion(&e.me, &key.id, None);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");
    let r = e.kms.enable_key(&e.me, &key.id);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");

    // The vault and its other keys live on.
    assert_eq!(e.kms.get_vault(&vault.id).unwrap().lifecycle_state, VaultState::Active);
    assert_eq!(e.decrypt(&ct_n).unwrap(), b"hi");

    e = e.reopen();
    assert_eq!(e.kms.get_key(&key.id).unwrap().lifecycle_state, KeyState::Deleted);
    let r = e.decrypt(&ct);
    assert!(matches!(r, Err(KmsError::AccessDenied(_))), "{r:?}");
    assert_eq!(e.decrypt(&ct_n).unwrap(), b"hi");
}

// ----- automatic rotation -----

#[test]
fn auto_rotation_interval_must_be_60_to_365_days() {
    let e = env();
    let vault = e.vault("v");
    for days in [0, 59, 366] {
        let r = e.kms.create_key(
            &e.me,
            CreateKey {
                auto_rotation_interval_days: Some(days),
                ..CreateKey::new(vault.id.clone(), "k")
            },
        );
        assert!(matches!(r, Err(KmsError::InvalidParameter(_))), "{days}: {r:?}");
    }
    assert!(e.kms.list_keys(Some(&vault.id), None).unwrap().is_empty());
    for days in [60, 365] {
        let k = e.rotating_key(&vault, "k", days);
        assert!(k.is_auto_rotation_enabled);
        let d = k.auto_key_rotation_details.unwrap();
        assert_eq!(d.rotation_interval_in_days, days);
        assert_eq!(d.time_of_next_rotation, Some(days_after(k.time_created, days.into())));
        assert_eq!(d.time_of_last_rotation, None);
    }

    let plain = e.key(&vault, "plain");
    for days in [59, 366] {
        let r = e.kms.update_key(
            &e.me,
            &plain.id,
            UpdateResource {
                auto_rotation_interval_days: Some(Some(days)),
                ..Default::default()
            },
        );
        assert!(matches!(r, Err(KmsError::InvalidParameter(_))), "{days}: {r:?}");
    }
    assert!(!e.kms.get_key(&plain.id).unwrap().is_auto_rotation_enabled);
}

#[test]
fn scheduler_rotates_a_key_when_its_interval_has_passed() {
    let e = env();
    let vault = e.vault("v");
    let key = e.rotating_key(&vault, "rotating", 60);
    let plain = e.key(&vault, "plain");
    let v1 = key.current_key_version.clone();
    let ct = e.encrypt(&key, b"from v1");

    e.clock.advance_days(59);
    let report = e.kms.run_scheduled().unwrap();
    assert!(report.rotated.is_empty(), "{report:?}");
    assert_eq!(e.kms.get_key(&key.id).unwrap().current_key_version, v1);

    e.clock.advance_days(2); // day 61
    let rotation_time = e.kms.now();
    let report = e.kms.run_scheduled().unwrap();
    assert_eq!(report.rotated.len(), 1, "{report:?}");
    let (rotated_key, new_version) = report.rotated[0].clone();
    assert_eq!(rotated_key, key.id);
    assert_ne!(new_version, v1);

    let k = e.kms.get_key(&key.id).unwrap();
    assert_eq!(k.current_key_version, new_version);
    let d = k.auto_key_rotation_details.clone().unwrap();
    assert_eq!(d.time_of_last_rotation, Some(rotation_time));
    assert_eq!(d.last_rotation_status.as_deref(), Some("SUCCEEDED"));
    assert_eq!(d.time_of_next_rotation, Some(days_after(rotation_time, 60)));
    let v = e.kms.get_key_version(&key.id, &new_version).unwrap();
    assert!(v.is_auto_rotated);
    assert_eq!(v.time_created, rotation_time);
    assert!(!e.kms.get_key_version(&key.id, &v1).unwrap().is_auto_rotated);

    // The key without auto-rotation was left alone.
    assert_eq!(
        e.kms.get_key(&plain.id).unwrap().current_key_version,
        plain.current_key_version
    );
    // New ciphertexts use the new version; old ones still decrypt.
    let ct2 = e
        .kms
        .encrypt(&e.me, &key.id, b"from v2", &AssociatedData::none())
        .unwrap();
    assert_eq!(ct2.key_version_id, new_version);
    assert_eq!(e.decrypt(&ct).unwrap(), b"from v1");

    // Running again right away does nothing; 60 days later it rotates again.
    assert!(e.kms.run_scheduled().unwrap().rotated.is_empty());
    e.clock.advance_days(59);
    assert!(e.kms.run_scheduled().unwrap().rotated.is_empty());
    e.clock.advance_days(1);
    let report = e.kms.run_scheduled().unwrap();
    assert_eq!(report.rotated.len(), 1, "{report:?}");
    assert_eq!(e.kms.list_key_versions(&key.id).unwrap().len(), 3);
}

/// `list_key_versions` promises "oldest first", but versions are sorted by a millisecond
/// timestamp with the random version id as tie-breaker, so versions made within the same
/// millisecond come back in random order. Eight rotations at one instant: the chance that
/// the random order happens to be right is 1 in 9! .
#[test]

fn list_key_versions_is_oldest_first_within_one_millisecond() {
    let e = env();
    let vault = e.vault("v");
    let key = e.key(&vault, "k");
    let mut made = vec![key.current_key_version.clone()];
    for _ in 0..8 {
        made.push(e.kms.create_key_version(&e.me, &key.id).unwrap().id);
    }
    let listed: Vec<Ocid> = e
        .kms
        .list_key_versions(&key.id)
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(listed, made);
    assert_eq!(
        listed.last(),
        Some(&e.kms.get_key(&key.id).unwrap().current_key_version)
    );
}

#[test]
fn list_key_versions_is_oldest_first() {
    let e = env();
    let vault = e.vault("v");
    let key = e.key(&vault, "k");
    let mut made = vec![key.current_key_version.clone()];
    for _ in 0..8 {
        e.clock.advance_millis(1);
        made.push(e.kms.create_key_version(&e.me, &key.id).unwrap().id);
    }
    let listed: Vec<Ocid> = e
        .kms
        .list_key_versions(&key.id)
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(listed, made);
    assert_eq!(
        listed.last(),
        Some(&e.kms.get_key(&key.id).unwrap().current_key_version)
    );
    let r = e.kms.list_key_versions(&Ocid::generate(ResourceType::Key, "local-1"));
    assert!(matches!(r, Err(KmsError::NotFound { kind: "key", .. })), "{r:?}");
}

#[test]
fn update_key_turns_auto_rotation_on_and_off() {
    let e = env();
    let vault = e.vault("v");
    let key = e.key(&vault, "k");
    assert!(!key.is_auto_rotation_enabled);
    assert_eq!(key.auto_key_rotation_details, None);

    let on = e
        .kms
        .update_key(
            &e.me,
            &key.id,
            UpdateResource {
                auto_rotation_interval_days: Some(Some(90)),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(on.is_auto_rotation_enabled);
    let d = on.auto_key_rotation_details.clone().unwrap();
    assert_eq!(d.rotation_interval_in_days, 90);
    assert_eq!(d.time_of_next_rotation, Some(days_after(key.time_created, 90)));

    let off = e
        .kms
        .update_key(
            &e.me,
            &key.id,
            UpdateResource {
                auto_rotation_interval_days: Some(None),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!off.is_auto_rotation_enabled);
    e.clock.advance_days(91);
    assert!(e.kms.run_scheduled().unwrap().rotated.is_empty());
    assert_eq!(
        e.kms.get_key(&key.id).unwrap().current_key_version,
        key.current_key_version
    );

    // Turning it on for a key whose version is already older than the interval rotates it at
    // the next pass.
    e.kms
        .update_key(
            &e.me,
            &key.id,
            UpdateResource {
                auto_rotation_interval_days: Some(Some(60)),
                ..Default::default()
            },
        )
        .unwrap();
    let report = e.kms.run_scheduled().unwrap();
    assert_eq!(report.rotated.len(), 1, "{report:?}");
    assert_eq!(report.rotated[0].0, key.id);

    // A name change alone leaves auto-rotation as it is.
    let renamed = e
        .kms
        .update_key(
            &e.me,
            &key.id,
            UpdateResource {
                display_name: Some("renamed".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(renamed.display_name, "renamed");
    assert!(renamed.is_auto_rotation_enabled);
    assert_eq!(renamed.auto_key_rotation_details.unwrap().rotation_interval_in_days, 60);

    // Vaults have no auto-rotation.
    let r = e.kms.update_vault(
        &e.me,
        &vault.id,
        UpdateResource {
            auto_rotation_interval_days: Some(Some(60)),
            ..Default::default()
        },
    );
    assert!(matches!(r, Err(KmsError::InvalidParameter(_))), "{r:?}");
}

#[test]
fn disabled_keys_are_not_auto_rotated() {
    let e = env();
    let vault = e.vault("v");
    let key = e.rotating_key(&vault, "k", 60);
    e.kms.disable_key(&e.me, &key.id).unwrap();
    e.clock.advance_days(61);
    assert!(e.kms.run_scheduled().unwrap().rotated.is_empty());
    let k = e.kms.get_key(&key.id).unwrap();
    assert_eq!(k.current_key_version, key.current_key_version);
    assert_eq!(k.auto_key_rotation_details.unwrap().last_rotation_status, None);
}

// ----- compliance -----

#[test]
fn compliance_report_flags_keys_older_than_the_maximum_age() {
    let e = env();
    let vault = e.vault("v");
    let old = e.key(&vault, "old");
    let disabled = e.key(&vault, "disabled");
    e.kms.disable_key(&e.me, &disabled.id).unwrap();

    let report = e.kms.compliance_report(DEFAULT_MAX_KEY_AGE_DAYS).unwrap();
    assert_eq!(report.max_age_days, 365);
    assert_eq!(report.keys_checked, 1);
    assert!(report.findings.is_empty(), "{report:?}");

    e.clock.advance_days(300);
    let fresh = e.key(&vault, "fresh");
    e.clock.advance_days(66); // old: 366 days, fresh: 66 days

    let report = e.kms.compliance_report(365).unwrap();
    assert_eq!(report.keys_checked, 2, "enabled keys only: {report:?}");
    assert_eq!(report.findings.len(), 1, "{report:?}");
    let f = &report.findings[0];
    assert_eq!(f.key_id, old.id);
    assert_eq!(f.display_name, "old");
    assert_eq!(f.vault_id, vault.id);
    assert_eq!(f.current_key_version, old.current_key_version);
    assert_eq!(f.last_rotated, old.time_created);
    assert_eq!(f.age_days, 366);
    assert!(
        f.remediation.contains(&format!("sealstore kms key rotate {}", old.id)),
        "{}",
        f.remediation
    );

    // A custom maximum age catches the younger key too, oldest first.
    let report = e.kms.compliance_report(30).unwrap();
    assert_eq!(report.max_age_days, 30);
    let ids: Vec<&Ocid> = report.findings.iter().map(|f| &f.key_id).collect();
    assert_eq!(ids, vec![&old.id, &fresh.id]);
    assert_eq!(report.findings[1].age_days, 66);
    assert!(report.findings[1]
        .remediation
        .contains(&format!("sealstore kms key rotate {}", fresh.id)));
    assert!(!ids.contains(&&disabled.id), "disabled keys are not listed");

    // Rotating clears the finding.
    e.kms.create_key_version(&e.me, &old.id).unwrap();
    let report = e.kms.compliance_report(365).unwrap();
    assert!(report.findings.is_empty(), "{report:?}");
    let report = e.kms.compliance_report(30).unwrap();
    let ids: Vec<&Ocid> = report.findings.iter().map(|f| &f.key_id).collect();
    assert_eq!(ids, vec![&fresh.id]);
}

#[test]
fn compliance_report_boundary_is_strictly_older_than_max_age() {
    let e = env();
    let vault = e.vault("v");
    let key = e.key(&vault, "k");
    e.clock.advance_days(30);
    assert!(
        e.kms.compliance_report(30).unwrap().findings.is_empty(),
        "exactly 30 days old is fine"
    );
    e.clock.advance_millis(1);
    let report = e.kms.compliance_report(30).unwrap();
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.findings[0].key_id, key.id);
    assert_eq!(report.findings[0].age_days, 30);
}

#[test]
fn compliance_report_skips_keys_of_vaults_pending_deletion() {
    let e = env();
    let vault = e.vault("v");
    e.key(&vault, "k");
    e.clock.advance_days(400);
    assert_eq!(e.kms.compliance_report(365).unwrap().findings.len(), 1);
    e.kms.schedule_vault_deletion(&e.me, &vault.id, None).unwrap();
    let report = e.kms.compliance_report(365).unwrap();
    assert_eq!(report.keys_checked, 0);
    assert!(report.findings.is_empty(), "{report:?}");
}

// ----- persistence -----

#[test]
fn everything_survives_reopen() {
    let mut e = env();
    let vault = e.vault("persistent");
    let key = e.rotating_key(&vault, "k", 90);
    e.kms.create_key_version(&e.me, &key.id).unwrap();
    let other = e.key(&vault, "other");
    e.kms.disable_key(&e.me, &other.id).unwrap();
    let ct = e.encrypt(&key, b"durable");
    let tenancy = e.kms.tenancy_id();

    let vault_before = e.kms.get_vault(&vault.id).unwrap();
    let key_before = e.kms.get_key(&key.id).unwrap();
    let other_before = e.kms.get_key(&other.id).unwrap();
    let versions_before = e.kms.list_key_versions(&key.id).unwrap();
    let vaults_before = e.kms.list_vaults(None).unwrap();
    let keys_before = e.kms.list_keys(None, None).unwrap();
    let compartments_before = e.kms.list_compartments().unwrap();
    assert_eq!(versions_before.len(), 2);

    e = e.reopen();
    assert_eq!(e.kms.tenancy_id(), tenancy);
    assert_eq!(e.kms.region(), "local-1");
    assert_eq!(e.kms.get_vault(&vault.id).unwrap(), vault_before);
    assert_eq!(e.kms.get_key(&key.id).unwrap(), key_before);
    assert_eq!(e.kms.get_key(&other.id).unwrap(), other_before);
    assert_eq!(e.kms.list_key_versions(&key.id).unwrap(), versions_before);
    assert_eq!(e.kms.list_vaults(None).unwrap(), vaults_before);
    assert_eq!(e.kms.list_keys(None, None).unwrap(), keys_before);
    assert_eq!(e.kms.list_compartments().unwrap(), compartments_before);
    assert_eq!(e.decrypt(&ct).unwrap(), b"durable");
    let ct2 = e.encrypt(&key, b"after reopen");
    assert_eq!(
        kms_core::ciphertext::parse(&ct2).unwrap().key_version_id,
        key_before.current_key_version
    );
}

#[test]
fn region_and_tenancy_are_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let first = Kms::open(KmsConfig {
        region: Some("eu-test-1".into()),
        ..config(dir.path(), &clock)
    })
    .unwrap();
    let tenancy = first.tenancy_id();
    assert!(
        tenancy.as_str().starts_with("ocid1.tenancy.oc1.eu-test-1."),
        "{tenancy}"
    );
    drop(first);
    // Another region is refused, naming both.
    let other = Kms::open(KmsConfig {
        region: Some("us-other-9".into()),
        ..config(dir.path(), &clock)
    });
    match other {
        Err(e @ KmsError::RegionMismatch { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("eu-test-1") && message.contains("us-other-9"),
                "{message}"
            );
        }
        other => panic!(
            "expected RegionMismatch, got {:?}",
            other.map(|k| k.region().to_owned())
        ),
    }
    // Naming none, or the same one, opens it as it is.
    for region in [None, Some("eu-test-1".to_owned())] {
        let again = Kms::open(KmsConfig {
            region,
            ..config(dir.path(), &clock)
        })
        .unwrap();
        assert_eq!(again.region(), "eu-test-1");
        assert_eq!(again.tenancy_id(), tenancy);
    }
    let again = Kms::open(config(dir.path(), &clock)).unwrap();
    let v = again
        .create_vault(
            &Principal::local_admin(),
            CreateVault {
                display_name: "v".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(v.id.as_str().starts_with("ocid1.vault.oc1.eu-test-1."), "{}", v.id);
}

#[test]
fn a_data_directory_created_without_a_region_is_local_1() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    drop(Kms::open(config(dir.path(), &clock)).unwrap());
    let later = Kms::open(KmsConfig {
        region: Some("r1".into()),
        ..config(dir.path(), &clock)
    });
    assert!(
        matches!(&later, Err(KmsError::RegionMismatch { stored, requested }) if stored == kms_core::DEFAULT_REGION && requested == "r1"),
        "{:?}",
        later.map(|k| k.region().to_owned())
    );
}

#[test]
fn a_different_root_key_does_not_open_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let first = Kms::open(config(dir.path(), &clock)).unwrap();
    let vault = first
        .create_vault(
            &Principal::local_admin(),
            CreateVault {
                display_name: "v".into(),
                ..Default::default()
            },
        )
        .unwrap();
    drop(first);

    let r = Kms::open(KmsConfig {
        root_key_file: Some(keys.path().join("other.key")),
        ..config(dir.path(), &clock)
    });
    assert!(matches!(r, Err(KmsError::RootKey(_))), "{r:?}");

    // The original root key, given explicitly, still works.
    let again = Kms::open(KmsConfig {
        root_key_file: Some(dir.path().join("root.key")),
        ..config(dir.path(), &clock)
    })
    .unwrap();
    assert_eq!(again.get_vault(&vault.id).unwrap().display_name, "v");
}

#[test]
fn opening_the_same_directory_twice_is_refused() {
    if sealstore_meta::testing::server_url().is_some() {
        // The embedded engine's file lock. PostgreSQL is shared by design: two opens of one
        // database are a fleet (sealstore-meta's tests, and the fleet tests of the binary).
        eprintln!("skipped on PostgreSQL: a database is meant to be opened by several processes");
        return;
    }
    let e = env();
    let r = Kms::open(config(e.dir.path(), &e.clock));
    match r {
        Err(err @ KmsError::Metadata(sealstore_meta::Error::InUse(_))) => {
            assert!(err.to_string().contains("another sealstore process"), "{err}")
        }
        other => panic!("expected an in-use error, got {other:?}"),
    }
    // The first instance is unaffected.
    e.vault("still works");
}

// ----- defaults and listing -----

#[test]
fn ensure_defaults_creates_once() {
    let mut e = env();
    let first = e.kms.ensure_defaults(&e.me).unwrap();
    assert!(first.created);
    assert_eq!(first.vault.display_name, "default");
    assert_eq!(first.key.display_name, "default");
    assert_eq!(first.key.vault_id, first.vault.id);
    assert_eq!(first.vault.compartment_id, e.kms.tenancy_id());
    assert_eq!(first.vault.vault_type, VaultType::Default);

    let second = e.kms.ensure_defaults(&e.me).unwrap();
    assert!(!second.created);
    assert_eq!(second.vault.id, first.vault.id);
    assert_eq!(second.key.id, first.key.id);
    assert_eq!(e.kms.list_vaults(None).unwrap().len(), 1);
    assert_eq!(e.kms.list_keys(None, None).unwrap().len(), 1);

    e = e.reopen();
    let third = e.kms.ensure_defaults(&e.me).unwrap();
    assert!(!third.created);
    assert_eq!(third.vault.id, first.vault.id);
    assert_eq!(third.key.id, first.key.id);
    assert_eq!(e.kms.list_vaults(None).unwrap().len(), 1);
}

#[test]
fn list_filters_by_compartment_and_vault() {
    let e = env();
    let tenancy = e.kms.tenancy_id();
    let a = e.vault("a");
    e.clock.advance_millis(1);
    let b = e.vault("b");
    let a1 = e.key(&a, "a1");
    e.clock.advance_millis(1);
    let a2 = e.key(&a, "a2");
    let b1 = e.key(&b, "b1");

    let ids = |v: Vec<Vault>| v.into_iter().map(|v| v.id).collect::<Vec<_>>();
    let kids = |v: Vec<Key>| v.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(ids(e.kms.list_vaults(None).unwrap()), vec![a.id.clone(), b.id.clone()]);
    assert_eq!(
        ids(e.kms.list_vaults(Some(&tenancy)).unwrap()),
        vec![a.id.clone(), b.id.clone()]
    );
    let elsewhere = Ocid::generate(ResourceType::Compartment, "local-1");
    assert!(e.kms.list_vaults(Some(&elsewhere)).unwrap().is_empty());

    assert_eq!(
        kids(e.kms.list_keys(Some(&a.id), None).unwrap()),
        vec![a1.id.clone(), a2.id.clone()]
    );
    assert_eq!(kids(e.kms.list_keys(Some(&b.id), None).unwrap()), vec![b1.id.clone()]);
    assert_eq!(kids(e.kms.list_keys(None, Some(&tenancy)).unwrap()).len(), 3);
    assert!(e.kms.list_keys(None, Some(&elsewhere)).unwrap().is_empty());
    assert!(e.kms.list_keys(Some(&a.id), Some(&elsewhere)).unwrap().is_empty());
    assert_eq!(
        kids(e.kms.list_keys(Some(&b.id), Some(&tenancy)).unwrap()),
        vec![b1.id.clone()]
    );

    let compartments = e.kms.list_compartments().unwrap();
    assert_eq!(compartments.len(), 1);
    assert_eq!(compartments[0].id, tenancy);

    // Vaults cannot be created in a compartment that does not exist.
    let r = e.kms.create_vault(
        &e.me,
        CreateVault {
            compartment_id: Some(elsewhere),
            display_name: "nowhere".into(),
            ..Default::default()
        },
    );
    assert!(
        matches!(
            r,
            Err(KmsError::NotFound {
                kind: "compartment",
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn names_and_vault_types_are_validated() {
    let e = env();
    for name in ["", "   ", &"x".repeat(256)] {
        let r = e.kms.create_vault(
            &e.me,
            CreateVault {
                display_name: name.to_string(),
                ..Default::default()
            },
        );
        assert!(matches!(r, Err(KmsError::InvalidParameter(_))), "{name:?}: {r:?}");
    }
    let r = e.kms.create_vault(
        &e.me,
        CreateVault {
            display_name: "ext".into(),
            vault_type: Some(VaultType::External),
            ..Default::default()
        },
    );
    assert!(matches!(r, Err(KmsError::InvalidParameter(_))), "{r:?}");
    let vault = e.vault("v");
    let r = e.kms.create_key(&e.me, CreateKey::new(vault.id.clone(), ""));
    assert!(matches!(r, Err(KmsError::InvalidParameter(_))), "{r:?}");
    let r = e.kms.create_key(
        &e.me,
        CreateKey {
            protection_mode: Some(kms_core::ProtectionMode::Hsm),
            ..CreateKey::new(vault.id.clone(), "hsm")
        },
    );
    assert!(
        matches!(r, Err(KmsError::InvalidParameter(_))),
        "HSM is not configured: {r:?}"
    );
    let ghost = Ocid::generate(ResourceType::Vault, "local-1");
    let r = e.kms.create_key(&e.me, CreateKey::new(ghost, "k"));
    assert!(matches!(r, Err(KmsError::NotFound { kind: "vault", .. })), "{r:?}");
    assert!(e.kms.list_keys(None, None).unwrap().is_empty());
}

#[test]
fn purge_removes_sealed_material_from_the_database_file() {
    use redb::ReadableTable;
    use std::collections::BTreeSet;

    let e = env();
    let doomed_vault = e.vault("doomed");
    let k1 = e.key(&doomed_vault, "k1");
    e.kms.create_key_version(&e.me, &k1.id).unwrap();
    let live_vault = e.vault("live");
    let doomed_key = e.key(&live_vault, "doomed key");
    let survivor = e.key(&live_vault, "survivor");
    e.kms.create_key_version(&e.me, &survivor.id).unwrap();

    let version_ids = |key: &Key| -> BTreeSet<String> {
        e.kms
            .list_key_versions(&key.id)
            .unwrap()
            .into_iter()
            .map(|v| v.id.to_string())
            .collect()
    };
    let (k1_versions, doomed_versions, survivor_versions) =
        (version_ids(&k1), version_ids(&doomed_key), version_ids(&survivor));
    assert_eq!(
        (k1_versions.len(), doomed_versions.len(), survivor_versions.len()),
        (2, 1, 2)
    );

    let deadline = days_after(e.kms.now(), 7);
    e.kms
        .schedule_vault_deletion(&e.me, &doomed_vault.id, Some(deadline))
        .unwrap();
    e.kms
        .schedule_key_deletion(&e.me, &doomed_key.id, Some(deadline))
        .unwrap();
    e.clock.advance_days(8);
    let report = e.kms.run_scheduled().unwrap();
    assert_eq!(report.purged_vaults, vec![doomed_vault.id.clone()]);
    assert_eq!(report.purged_keys, vec![doomed_key.id.clone()]);

    let Env { kms, dir, .. } = e;
    drop(kms);
    let material = kms_core::internals::schema::KEY_MATERIAL.name();
    let rows: Vec<(String, Vec<u8>)> = match common::postgres_rows(dir.path()) {
        Some(kv) => kv
            .rows(kms_core::internals::schema::NAMESPACE.name, material)
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), v))
            .collect(),
        None => {
            let db = redb::Database::open(dir.path().join(kms_core::internals::DB_FILE)).unwrap();
            let txn = db.begin_read().unwrap();
            let definition: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new(material);
            let table = txn.open_table(definition).unwrap();
            let rows = table.iter().unwrap().map(|row| {
                let (k, v) = row.unwrap();
                (k.value().to_owned(), v.value().to_vec())
            });
            rows.collect()
        }
    };
    let mut stored = BTreeSet::new();
    for (k, v) in rows {
        // nonce ‖ sealed 32-byte key ‖ tag
        assert_eq!(v.len(), 12 + 32 + 16, "material of {k}");
        stored.insert(k);
    }
    assert_eq!(stored, survivor_versions, "only the surviving key's material is left");
}

#[test]
fn root_key_file_must_be_private_and_32_bytes() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    drop(Kms::open(config(dir.path(), &clock)).unwrap());
    let root = dir.path().join("root.key");
    assert_eq!(std::fs::metadata(&root).unwrap().len(), 32);
    assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o600);

    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = Kms::open(config(dir.path(), &clock));
    assert!(matches!(r, Err(KmsError::RootKey(_))), "{r:?}");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o600)).unwrap();
    drop(Kms::open(config(dir.path(), &clock)).unwrap());

    let keys = tempfile::tempdir().unwrap();
    let short = keys.path().join("short.key");
    std::fs::write(&short, [7u8; 31]).unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = Kms::open(KmsConfig {
        root_key_file: Some(short),
        ..config(&keys.path().join("data"), &clock)
    });
    assert!(matches!(r, Err(KmsError::RootKey(_))), "{r:?}");
}

#[test]
fn new_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;

    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("nested").join("data");
    let kms = Kms::open(config(&data, &ManualClock::starting_now())).unwrap();
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    if common::postgres_rows(&data).is_none() {
        assert!(data.join(kms_core::internals::DB_FILE).is_file());
    }
    drop(kms);
}

#[test]
fn key_version_deletion_refuses_the_primary_then_purges_only_that_version() {
    let e = env();
    let vault = e.vault("v");
    let key = e.key(&vault, "k");
    let old_version = key.current_key_version.clone();
    let old_ct = e.encrypt(&key, b"old");
    let r = e.kms.schedule_key_version_deletion(&e.me, &key.id, &old_version, None);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "primary: {r:?}");

    let new_version = e.kms.create_key_version(&e.me, &key.id).unwrap().id;
    let new_ct = e.encrypt(&key, b"new");
    let now = e.kms.now();
    let r = e
        .kms
        .schedule_key_version_deletion(&e.me, &key.id, &old_version, Some(days_after(now, 3)));
    assert!(matches!(r, Err(KmsError::InvalidParameter(_))), "3 days: {r:?}");
    let v = e
        .kms
        .schedule_key_version_deletion(&e.me, &key.id, &old_version, Some(days_after(now, 7)))
        .unwrap();
    assert_eq!(v.lifecycle_state, KeyVersionState::PendingDeletion);
    assert!(matches!(e.decrypt(&old_ct), Err(KmsError::AccessDenied(_))));
    let v = e.kms.cancel_key_version_deletion(&e.me, &key.id, &old_version).unwrap();
    assert_eq!(
        (v.lifecycle_state, v.time_of_deletion),
        (KeyVersionState::Enabled, None)
    );
    assert_eq!(e.decrypt(&old_ct).unwrap(), b"old");

    e.kms
        .schedule_key_version_deletion(&e.me, &key.id, &old_version, Some(days_after(e.kms.now(), 7)))
        .unwrap();
    e.clock.advance_days(6);
    assert!(e.kms.run_scheduled().unwrap().purged_key_versions.is_empty());
    e.clock.advance_days(2);
    let report = e.kms.run_scheduled().unwrap();
    assert_eq!(report.purged_key_versions, vec![(key.id.clone(), old_version.clone())]);
    assert_eq!(
        e.kms.get_key_version(&key.id, &old_version).unwrap().lifecycle_state,
        KeyVersionState::Deleted
    );
    assert!(matches!(e.decrypt(&old_ct), Err(KmsError::AccessDenied(_))));
    // The key and its current version are untouched.
    assert_eq!(e.kms.get_key(&key.id).unwrap().current_key_version, new_version);
    assert_eq!(e.decrypt(&new_ct).unwrap(), b"new");
    let r = e.kms.cancel_key_version_deletion(&e.me, &key.id, &old_version);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");
}
