//! HSM protection against a real PKCS#11 token: SoftHSM2 (`apt-get install softhsm2`, which
//! `./scripts/test` does), with a token initialized here in a temporary directory.
//!
//! One test function: SoftHSM reads its configuration once per process, so the token and
//! every check share it.

mod common;
mod softhsm;

use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use kms_core::protection::hsm::{HsmConfig, HsmProtection};
use kms_core::{AssociatedData, CreateKey, CreateVault, KeyProvider, Kms, KmsError, Principal, ProtectionMode};
use zeroize::Zeroizing;

const LABEL: &str = "sealstore-test";
/// A second, empty token.
const OTHER_LABEL: &str = "another-token";
const PIN: &str = "1234";

fn config(pin: &str, sessions: usize) -> HsmConfig {
    HsmConfig {
        module: softhsm::module(),
        token_label: LABEL.into(),
        pin: Zeroizing::new(pin.into()),
        sessions,
    }
}

#[test]
fn hsm_keys_live_and_work_only_inside_the_token() {
    let dir = tempfile::tempdir().unwrap();
    softhsm::init_tokens(dir.path(), &[LABEL, OTHER_LABEL], PIN);

    // Errors at start, with the reason. (Before any good login: PKCS#11 logins are per process.)
    let wrong = HsmProtection::open(&config("0000", 1)).unwrap_err().to_string();
    assert!(wrong.contains("PIN") && wrong.contains("wrong"), "{wrong}");
    let missing = HsmProtection::open(&HsmConfig {
        token_label: "no-such-token".into(),
        ..config(PIN, 1)
    })
    .unwrap_err()
    .to_string();
    assert!(
        missing.contains("no initialized token labelled 'no-such-token'") && missing.contains(LABEL),
        "{missing}"
    );

    let data = dir.path().join("data");
    let mut kms = Kms::open(common::kms_config(&data)).unwrap();
    // Fewer sessions than threads below, so that callers wait for one another.
    kms.register_protection(Arc::new(HsmProtection::open(&config(PIN, 3)).unwrap()));
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
                ..CreateKey::new(vault.id.clone(), "in-the-token")
            },
        )
        .unwrap();
    assert_eq!(key.protection_mode, ProtectionMode::Hsm);

    // Crypto round trips, and tampering is caught by the token's GCM.
    let aad = AssociatedData::from_json(r#"{"app":"orders"}"#).unwrap();
    let ct = kms.encrypt(&me, &key.id, b"card numbers", &aad).unwrap();
    assert_eq!(
        &kms.decrypt(&me, &ct.ciphertext, &aad, None).unwrap().plaintext[..],
        b"card numbers"
    );
    let mut flipped = ct.ciphertext.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let tampered = kms.decrypt(&me, &flipped, &aad, None);
    assert!(matches!(tampered, Err(KmsError::InvalidCiphertext(_))), "{tampered:?}");
    let other = AssociatedData::from_json(r#"{"app":"billing"}"#).unwrap();
    assert!(matches!(
        kms.decrypt(&me, &ct.ciphertext, &other, None),
        Err(KmsError::InvalidCiphertext(_))
    ));

    // Data keys: wrapped and unwrapped in the token.
    let provider: &dyn KeyProvider = &kms;
    let dek = provider.generate_data_key(&key.id, b"object 1").unwrap();
    let unwrapped = provider.unwrap_data_key(&dek.wrapped, b"object 1").unwrap();
    assert_eq!(unwrapped.expose(), dek.plaintext.as_ref().unwrap().expose());
    assert!(provider.unwrap_data_key(&dek.wrapped, b"object 2").is_err());

    // Rotation: a second key in the token; the first still decrypts what it made.
    let v1 = key.current_key_version.clone();
    let v2 = kms.create_key_version(&me, &key.id).unwrap();
    let ct2 = kms.encrypt(&me, &key.id, b"after", &aad).unwrap();
    assert_eq!(ct2.key_version_id, v2.id);
    let old = kms.decrypt(&me, &ct.ciphertext, &aad, None).unwrap();
    assert_eq!(
        (old.key_version_id, &old.plaintext[..]),
        (v1.clone(), &b"card numbers"[..])
    );

    // Eight callers at once on three sessions.
    std::thread::scope(|s| {
        for t in 0..8 {
            let (kms, key, me) = (&kms, &key, &me);
            s.spawn(move || {
                for i in 0..40 {
                    let text = format!("{t}/{i}");
                    let ct = kms
                        .encrypt(me, &key.id, text.as_bytes(), &AssociatedData::none())
                        .unwrap();
                    let back = kms.decrypt(me, &ct.ciphertext, &AssociatedData::none(), None).unwrap();
                    assert_eq!(&back.plaintext[..], text.as_bytes());
                }
            });
        }
    });

    // Ask the token for the key's value, as any PKCS#11 client could: it refuses.
    let pkcs11 = Pkcs11::new(softhsm::module()).unwrap();
    let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = pkcs11
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == LABEL)
        .unwrap();
    let session = pkcs11.open_ro_session(slot).unwrap();
    let _ = session.login(UserType::User, Some(&AuthPin::new(PIN.into())));
    for version in [&v1, &v2.id] {
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(version.as_str().as_bytes().to_vec()),
            ])
            .unwrap();
        assert_eq!(found.len(), 1, "one token key per version");
        let info = session.get_attribute_info(found[0], &[AttributeType::Value]).unwrap();
        assert!(
            matches!(info.as_slice(), [AttributeInfo::Sensitive]),
            "CKA_VALUE must not be readable: {info:?}"
        );
        let flags = session
            .get_attributes(
                found[0],
                &[
                    AttributeType::Value,
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                    AttributeType::NeverExtractable,
                ],
            )
            .unwrap();
        assert!(!flags.iter().any(|a| matches!(a, Attribute::Value(_))), "{flags:?}");
        assert!(flags.contains(&Attribute::Extractable(false)), "{flags:?}");
        assert!(flags.contains(&Attribute::Sensitive(true)), "{flags:?}");
        assert!(flags.contains(&Attribute::NeverExtractable(true)), "{flags:?}");
    }

    // The data directory (with its root key) holds references only: pointed at another
    // token, it has nothing to decrypt with, though the same data opens with the right one.
    drop(session);
    drop(kms);
    let mut elsewhere = Kms::open(common::kms_config(&data)).unwrap();
    elsewhere.register_protection(Arc::new(
        HsmProtection::open(&HsmConfig {
            token_label: OTHER_LABEL.into(),
            ..config(PIN, 1)
        })
        .unwrap(),
    ));
    let err = elsewhere
        .decrypt(&me, &ct.ciphertext, &aad, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds no key for key version"), "{err}");
    drop(elsewhere);
    let mut back = Kms::open(common::kms_config(&data)).unwrap();
    back.register_protection(Arc::new(HsmProtection::open(&config(PIN, 1)).unwrap()));
    assert_eq!(
        &back.decrypt(&me, &ct.ciphertext, &aad, None).unwrap().plaintext[..],
        b"card numbers"
    );
}
