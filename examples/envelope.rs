//! Envelope encryption with kms-core alone, no server: a vault, a master key, a data key,
//! encryption bound to associated data, a rotation after which old ciphertext still
//! decrypts, and a rewrap that moves a ciphertext to the new key version.
//!
//! ```sh
//! cargo run --example envelope
//! ```
//!
//! The key store lives in a temporary directory here; a real program passes its own data
//! directory to `KmsConfig::new` (the root key that seals the key material is created there
//! on first use).

use std::collections::BTreeMap;

use kms_core::{AssociatedData, CreateKey, CreateVault, Kms, KmsConfig, Principal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let kms = Kms::open(KmsConfig::new(dir.path().join("kms")))?;
    // Every call names who makes it (IAM and the audit log); a program embedding kms-core for
    // itself acts as the local administrator.
    let me = Principal::local_admin();

    let vault = kms.create_vault(
        &me,
        CreateVault {
            display_name: "example".into(),
            ..Default::default()
        },
    )?;
    let key = kms.create_key(&me, CreateKey::new(vault.id.clone(), "orders"))?;
    println!("master key {} in vault {}", key.id, vault.id);

    // Associated data is authenticated, not encrypted: a ciphertext only opens with the same.
    let context = |table: &str| AssociatedData::from_map(BTreeMap::from([("table".to_owned(), table.to_owned())]));
    let orders = context("orders");

    // A data key for encrypting bulk data yourself: keep `wrapped` beside the data, use the
    // plaintext key and drop it (it is zeroized when dropped).
    let data_key = kms.generate_data_key(&me, &key.id, &orders, true)?;
    println!(
        "data key: {} bytes wrapped under version {}, plaintext copy given: {}",
        data_key.wrapped.len(),
        data_key.key_version_id,
        data_key.plaintext.is_some()
    );
    let unwrapped = kms.decrypt(&me, &data_key.wrapped, &orders, Some(&key.id))?;
    assert_eq!(unwrapped.plaintext.len(), 32, "a 256-bit data key");

    // Small secrets go straight through the master key.
    let secret = b"card ending 4242";
    let sealed = kms.encrypt(&me, &key.id, secret, &orders)?;
    let opened = kms.decrypt(&me, &sealed.ciphertext, &orders, Some(&key.id))?;
    assert_eq!(opened.plaintext.as_slice(), secret);
    println!(
        "encrypted {} bytes into {} (self-describing: names key version {})",
        secret.len(),
        sealed.ciphertext.len(),
        sealed.key_version_id
    );
    let refused = kms.decrypt(&me, &sealed.ciphertext, &context("invoices"), None);
    assert!(refused.is_err());
    println!("with other associated data: refused ({})", refused.unwrap_err());

    // Rotation: new encryptions use the new version; the old one still decrypts.
    let v2 = kms.create_key_version(&me, &key.id)?;
    let after = kms.encrypt(&me, &key.id, secret, &orders)?;
    assert_eq!(after.key_version_id, v2.id);
    let old = kms.decrypt(&me, &sealed.ciphertext, &orders, None)?;
    assert_eq!(old.plaintext.as_slice(), secret);
    println!(
        "rotated to {}; the old ciphertext (version {}) still decrypts",
        v2.id, old.key_version_id
    );

    // Rewrap moves the old ciphertext to the current version without the plaintext leaving
    // kms-core; after that the old version protects nothing of ours.
    let rewrapped = kms.rewrap(&me, &sealed.ciphertext, &orders, None)?;
    assert_eq!(rewrapped.key_version_id, v2.id);
    let again = kms.decrypt(&me, &rewrapped.ciphertext, &orders, None)?;
    assert_eq!(again.plaintext.as_slice(), secret);
    println!(
        "rewrapped onto {}: decrypts to the same bytes",
        rewrapped.key_version_id
    );
    Ok(())
}
