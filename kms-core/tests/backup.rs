//! Key and vault backups through [`Kms`]: a deleted and purged key comes back with every
//! version, so old ciphertexts decrypt again; existing keys and vaults are conflicts; an
//! altered backup, or one made by another deployment, restores nothing. Time is moved with a
//! [`ManualClock`].

mod common;

use std::path::Path;
use std::sync::Arc;

use kms_core::{
    AssociatedData, BackupKind, CreateKey, CreateVault, KeySpec, KeyState, Kms, KmsConfig, KmsError, ManualClock,
    Principal, VaultState,
};

fn open(dir: &Path, clock: &ManualClock) -> Kms {
    Kms::open(KmsConfig {
        clock: Arc::new(clock.clone()),
        ..common::kms_config(dir)
    })
    .unwrap()
}

/// Backs `what` up with `backup` (which hands the bytes to a delivery function) and returns
/// the delivered bytes.
fn delivered(backup: impl FnOnce(&mut dyn FnMut(&[u8]) -> kms_core::Result<()>)) -> Vec<u8> {
    let mut out = Vec::new();
    backup(&mut |bytes: &[u8]| {
        out = bytes.to_vec();
        Ok(())
    });
    out
}

#[test]
fn purged_key_comes_back_with_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let kms = open(dir.path(), &clock);
    let me = Principal::local_admin();
    let vault = kms
        .create_vault(
            &me,
            CreateVault {
                display_name: "backed up".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let key = kms.create_key(&me, CreateKey::new(vault.id.clone(), "k")).unwrap();
    let aad = AssociatedData::none();
    let old = kms.encrypt(&me, &key.id, b"before rotation", &aad).unwrap();
    kms.create_key_version(&me, &key.id).unwrap();
    let new = kms.encrypt(&me, &key.id, b"after rotation", &aad).unwrap();
    let rsa = kms
        .create_key(
            &me,
            CreateKey {
                key_shape: Some(KeySpec::Rsa { len: 256 }.shape()),
                ..CreateKey::new(vault.id.clone(), "rsa")
            },
        )
        .unwrap();

    let backup = delivered(|put| {
        kms.backup_key(&me, &key.id, put).unwrap();
    });
    assert!(std::str::from_utf8(&backup)
        .unwrap()
        .starts_with("sealstore-kms-backup v1\nkind: key\n"));

    // Still there: a conflict.
    let err = kms.restore_key(&me, &vault.id, &backup).unwrap_err();
    assert!(matches!(err, KmsError::AlreadyExists(_)), "{err}");

    kms.schedule_key_deletion(&me, &key.id, None).unwrap();
    clock.advance_days(31);
    let report = kms.run_scheduled().unwrap();
    assert_eq!(report.purged_keys, vec![key.id.clone()]);
    assert!(kms.decrypt(&me, &old.ciphertext, &aad, None).is_err());

    let restored = kms.restore_key(&me, &vault.id, &backup).unwrap();
    assert_eq!(restored.id, key.id);
    assert_eq!(restored.lifecycle_state, KeyState::Enabled);
    assert_eq!(restored.restored_from_key_id.as_ref(), Some(&key.id));
    let versions = kms.list_key_versions(&key.id).unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions
        .iter()
        .all(|v| v.restored_from_key_version_id.as_ref() == Some(&v.id)));
    for (ct, pt) in [(&old, &b"before rotation"[..]), (&new, b"after rotation")] {
        assert_eq!(&kms.decrypt(&me, &ct.ciphertext, &aad, None).unwrap().plaintext[..], pt);
    }
    kms.encrypt(&me, &key.id, b"again", &aad).unwrap();

    // A vault backup with its keys (RSA included) restores into a fresh data directory with
    // the same root key, and nowhere else.
    let vault_backup = delivered(|put| {
        kms.backup_vault(&me, &vault.id, true, put).unwrap();
    });
    assert!(kms
        .backup_summary(&vault_backup, BackupKind::Key, &kms.tenancy_id())
        .is_err());
    let summary = kms
        .backup_summary(&vault_backup, BackupKind::Vault, &kms.tenancy_id())
        .unwrap();
    assert_eq!(summary.key_compartments, vec![kms.tenancy_id(), kms.tenancy_id()]);
    let err = kms.restore_vault(&me, &kms.tenancy_id(), &vault_backup).unwrap_err();
    assert!(matches!(err, KmsError::AlreadyExists(_)), "{err}");

    let other = tempfile::tempdir().unwrap();
    let stranger = open(other.path(), &clock);
    let err = stranger
        .restore_vault(&me, &stranger.tenancy_id(), &vault_backup)
        .unwrap_err();
    assert!(err.to_string().contains("another sealstore deployment"), "{err}");

    let twin = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("root.key"), twin.path().join("root.key")).unwrap();
    let twin = open(twin.path(), &clock);
    let mut altered = vault_backup.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 1;
    assert!(twin.restore_vault(&me, &twin.tenancy_id(), &altered).is_err());
    assert!(twin.get_vault(&vault.id).is_err(), "an altered backup restores nothing");
    let copy = twin.restore_vault(&me, &twin.tenancy_id(), &vault_backup).unwrap();
    assert_eq!(copy.id, vault.id);
    assert_eq!(copy.lifecycle_state, VaultState::Active);
    assert_eq!(copy.restored_from_vault_id.as_ref(), Some(&vault.id));
    assert_eq!(
        &twin.decrypt(&me, &old.ciphertext, &aad, None).unwrap().plaintext[..],
        b"before rotation"
    );
    assert_eq!(twin.get_key(&rsa.id).unwrap().key_shape, rsa.key_shape);
    let audit = twin.audit_entries(1, 1000).unwrap();
    let ops: Vec<&str> = audit.iter().map(|e| e.operation.as_str()).collect();
    assert!(ops.contains(&"RestoreVault"), "{ops:?}");
    let ops: Vec<String> = kms
        .audit_entries(1, 1000)
        .unwrap()
        .into_iter()
        .map(|e| e.operation)
        .collect();
    for op in ["BackupKey", "BackupVault", "RestoreKey"] {
        assert!(ops.iter().any(|o| o == op), "{op} not audited: {ops:?}");
    }
}

#[test]
fn imported_keys_come_back_with_their_origin() {
    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
    use kms_core::byok::WrappedKey;
    use kms_core::{KeyVersionOrigin, KeyWrapping};

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let kms = open(dir.path(), &clock);
    let me = Principal::local_admin();
    let vault = kms
        .create_vault(
            &me,
            CreateVault {
                display_name: "byok".into(),
                ..Default::default()
            },
        )
        .unwrap();
    // The owner's AES-256 key, wrapped with RSA-OAEP-SHA256 under the vault's wrapping key.
    let material = [7u8; 32];
    let wrapping = kms.wrapping_key(&me, &vault.id).unwrap();
    let der = kms_core::protection::public_key_der(&wrapping.public_key).unwrap();
    let public = OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&der).unwrap()).unwrap();
    let mut wrapped = vec![0u8; public.ciphertext_size()];
    let len = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, &material, &mut wrapped, None)
        .unwrap()
        .len();
    wrapped.truncate(len);
    let key = kms
        .import_key(
            &me,
            CreateKey::new(vault.id.clone(), "imported"),
            &WrappedKey {
                algorithm: KeyWrapping::RsaOaepSha256,
                material: wrapped,
            },
        )
        .unwrap();
    let aad = AssociatedData::none();
    let ct = kms.encrypt(&me, &key.id, b"owner's key", &aad).unwrap();
    let backup = delivered(|put| {
        kms.backup_key(&me, &key.id, put).unwrap();
    });
    kms.schedule_key_deletion(&me, &key.id, None).unwrap();
    clock.advance_days(31);
    kms.run_scheduled().unwrap();

    kms.restore_key(&me, &vault.id, &backup).unwrap();
    let [version] = kms.list_key_versions(&key.id).unwrap().try_into().unwrap();
    assert_eq!(version.origin, KeyVersionOrigin::External);
    assert_eq!(
        &kms.decrypt(&me, &ct.ciphertext, &aad, None).unwrap().plaintext[..],
        b"owner's key"
    );
}
