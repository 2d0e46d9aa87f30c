//! Bring your own key into an HSM: material imported with `protectionMode` HSM is unwrapped
//! inside a real PKCS#11 token (SoftHSM2, initialized here) as sensitive, never-extractable
//! objects, and works there: AES encrypts, RSA and ECDSA sign with the imported key (checked
//! with the key's own public key). One test function: SoftHSM reads its configuration once per
//! process.

mod common;
mod softhsm;

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use kms_core::byok::{wrap_key_material, WrappedKey};
use kms_core::protection::hsm::{HsmConfig, HsmProtection};
use kms_core::protection::{public_key_der, public_key_pem};
use kms_core::{
    AssociatedData, CreateKey, CreateVault, KeySpec, KeyVersionOrigin, KeyWrapping, Kms, MessageType, Principal,
    ProtectionMode, SignatureInput, SigningAlgorithm,
};
use zeroize::Zeroizing;

const LABEL: &str = "sealstore-import";
const PIN: &str = "1234";

#[test]
fn imported_material_is_unwrapped_into_the_token_and_works_there() {
    let dir = tempfile::tempdir().unwrap();
    softhsm::init_tokens(dir.path(), &[LABEL], PIN);
    let mut kms = Kms::open(common::kms_config(dir.path().join("data"))).unwrap();
    kms.register_protection(Arc::new(
        HsmProtection::open(&HsmConfig {
            module: softhsm::module(),
            token_label: LABEL.into(),
            pin: Zeroizing::new(PIN.into()),
            sessions: 2,
        })
        .unwrap(),
    ));
    let me = Principal::local_admin();
    let vault = kms
        .create_vault(
            &me,
            CreateVault {
                display_name: "byok-hsm".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let wrapping = public_key_der(&kms.wrapping_key(&me, &vault.id).unwrap().public_key).unwrap();
    let import = |spec: KeySpec, material: &[u8]| {
        let wrapped = WrappedKey {
            algorithm: KeyWrapping::RsaOaepAesSha256,
            material: wrap_key_material(&wrapping, KeyWrapping::RsaOaepAesSha256, material).unwrap(),
        };
        kms.import_key(
            &me,
            CreateKey {
                protection_mode: Some(ProtectionMode::Hsm),
                key_shape: Some(spec.shape()),
                ..CreateKey::new(vault.id.clone(), format!("{spec}"))
            },
            &wrapped,
        )
        .unwrap()
    };

    let aes = import(KeySpec::AES_256, &[9u8; 32]);
    assert_eq!(aes.protection_mode, ProtectionMode::Hsm);
    let ct = kms
        .encrypt(&me, &aes.id, b"in the token", &AssociatedData::none())
        .unwrap();
    let back = kms.decrypt(&me, &ct.ciphertext, &AssociatedData::none(), None).unwrap();
    assert_eq!(&back.plaintext[..], b"in the token");

    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let ec = EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
    let cases = [
        (
            KeySpec::Rsa { len: 256 },
            rsa.as_der().unwrap().as_ref().to_vec(),
            rsa.public_key().as_der().unwrap().as_ref().to_vec(),
            "SHA_256_RSA_PKCS_PSS",
            &signature::RSA_PSS_2048_8192_SHA256 as &dyn signature::VerificationAlgorithm,
        ),
        (
            KeySpec::Ecdsa(kms_core::Curve::P384),
            ec.to_pkcs8v1().unwrap().as_ref().to_vec(),
            ec.public_key().as_der().unwrap().as_ref().to_vec(),
            "ECDSA_SHA_384",
            &signature::ECDSA_P384_SHA384_ASN1,
        ),
    ];
    let mut imported = vec![aes.current_key_version.clone()];
    for (spec, pkcs8, public, alg, verifier) in cases {
        let key = import(spec, &pkcs8);
        let version = kms.get_key_version(&key.id, &key.current_key_version).unwrap();
        assert_eq!(version.origin, KeyVersionOrigin::External);
        assert_eq!(version.public_key.as_deref(), Some(public_key_pem(&public).as_str()));
        let input = SignatureInput {
            key_id: &key.id,
            key_version_id: None,
            message: b"signed in the token",
            message_type: MessageType::Raw,
            algorithm: SigningAlgorithm::parse(alg).unwrap(),
        };
        let signed = kms.sign(&me, input).unwrap();
        UnparsedPublicKey::new(verifier, &public)
            .verify(b"signed in the token", &signed.signature)
            .unwrap_or_else(|_| panic!("{spec} signature does not verify with the imported key's public key"));
        // SHA-224 runs in the token against the public key object made at import.
        if matches!(spec, KeySpec::Rsa { .. }) {
            let sha224 = SignatureInput {
                algorithm: SigningAlgorithm::parse("SHA_224_RSA_PKCS_PSS").unwrap(),
                ..input
            };
            let signed = kms.sign(&me, sha224).unwrap();
            let check = SignatureInput {
                key_version_id: Some(&version.id),
                ..sha224
            };
            assert!(kms.verify(&me, check, &signed.signature).unwrap());
        }
        imported.push(version.id);
    }

    // What a PKCS#11 client sees in the token: each imported secret is sensitive and not
    // extractable; nothing else (the one-time wrapping keys are gone).
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
    for version in &imported {
        let secret = session
            .find_objects(&[Attribute::Label(version.as_str().as_bytes().to_vec())])
            .unwrap()
            .into_iter()
            .filter(|h| {
                let class = session.get_attributes(*h, &[AttributeType::Class]).unwrap();
                !matches!(class.first(), Some(Attribute::Class(ObjectClass::PUBLIC_KEY)))
            })
            .collect::<Vec<_>>();
        assert_eq!(secret.len(), 1, "{version}");
        let attrs = session
            .get_attributes(
                secret[0],
                &[
                    AttributeType::Sensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Extractable,
                ],
            )
            .unwrap();
        assert!(attrs.contains(&Attribute::Sensitive(true)), "{version}: {attrs:?}");
        assert!(attrs.contains(&Attribute::Extractable(false)), "{version}: {attrs:?}");
    }
    let secrets = session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .unwrap();
    assert_eq!(
        secrets.len(),
        1,
        "only the imported AES key: no one-time key left behind"
    );
}
