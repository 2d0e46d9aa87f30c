//! Backups of HSM keys against a real PKCS#11 token (SoftHSM2, as `tests/hsm.rs`): the
//! backup holds the token reference only, so a restore works while the token still holds the
//! key and is refused once a purge destroyed it (docs/KMS_BACKUP.md).

mod common;
mod softhsm;

use std::path::Path;
use std::sync::Arc;

use kms_core::protection::hsm::{HsmConfig, HsmProtection};
use kms_core::{
    AssociatedData, CreateKey, CreateVault, Kms, KmsConfig, KmsError, ManualClock, Principal, ProtectionMode,
};
use zeroize::Zeroizing;

const LABEL: &str = "sealstore-backup-test";
const PIN: &str = "1234";

fn hsm() -> Arc<HsmProtection> {
    let module = softhsm::module();
    Arc::new(
        HsmProtection::open(&HsmConfig {
            module,
            token_label: LABEL.into(),
            pin: Zeroizing::new(PIN.into()),
            sessions: 1,
        })
        .unwrap(),
    )
}

fn open(data: &Path, clock: &ManualClock) -> Kms {
    let mut kms = Kms::open(KmsConfig {
        clock: Arc::new(clock.clone()),
        ..common::kms_config(data)
    })
    .unwrap();
    kms.register_protection(hsm());
    kms
}

#[test]
fn hsm_backups_hold_the_token_reference() {
    let dir = tempfile::tempdir().unwrap();
    softhsm::init_tokens(dir.path(), &[LABEL], PIN);
    let clock = ManualClock::starting_now();
    let data = dir.path().join("data");
    let kms = open(&data, &clock);
    let me = Principal::local_admin();
    let vault = kms
        .create_vault(
            &me,
            CreateVault {
                display_name: "hsm".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let key = kms
        .create_key(
            &me,
            CreateKey {
                protection_mode: Some(ProtectionMode::Hsm),
                ..CreateKey::new(vault.id.clone(), "in the token")
            },
        )
        .unwrap();
    let aad = AssociatedData::none();
    let ct = kms.encrypt(&me, &key.id, b"held by the token", &aad).unwrap();
    let mut backup = Vec::new();
    kms.backup_key(&me, &key.id, |b| {
        backup = b.to_vec();
        Ok(())
    })
    .unwrap();

    // Another data directory with the same root key, on the same token: the reference
    // restores there while the token holds the key.
    let twin = dir.path().join("twin");
    std::fs::create_dir_all(&twin).unwrap();
    std::fs::copy(data.join("root.key"), twin.join("root.key")).unwrap();
    let twin = open(&twin, &clock);
    let twin_vault = twin
        .create_vault(
            &me,
            CreateVault {
                display_name: "restored".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let restored = twin.restore_key(&me, &twin_vault.id, &backup).unwrap();
    assert_eq!(restored.protection_mode, ProtectionMode::Hsm);
    assert_eq!(
        &twin.decrypt(&me, &ct.ciphertext, &aad, None).unwrap().plaintext[..],
        b"held by the token"
    );

    // Purged here, the token object is destroyed: the reference no longer restores.
    kms.schedule_key_deletion(&me, &key.id, None).unwrap();
    clock.advance_days(31);
    assert_eq!(kms.run_scheduled().unwrap().purged_keys, vec![key.id.clone()]);
    let err = kms.restore_key(&me, &vault.id, &backup).unwrap_err();
    assert!(
        matches!(&err, KmsError::InvalidParameter(m) if m.contains("no longer exists in the token")),
        "{err}"
    );
    assert_eq!(
        kms.get_key(&key.id).unwrap().lifecycle_state,
        kms_core::KeyState::Deleted
    );
}
