//! HSM protection of RSA, ECDSA and short AES keys against a real PKCS#11 token: SoftHSM2
//! (`apt-get install softhsm2`, which `./scripts/test` does), with a token initialized here.
//! (AES-256 HSM keys are `tests/hsm.rs`; the wire API is `tests/kms/test_hsm.py`.)
//!
//! One test function: SoftHSM reads its configuration once per process.

mod common;
mod softhsm;

use std::sync::Arc;

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use kms_core::protection::hsm::{HsmConfig, HsmProtection};
use kms_core::protection::public_key_der;
use kms_core::{
    AssociatedData, CreateKey, CreateVault, Curve, KeySpec, KeyVersionState, Kms, KmsConfig, KmsError, ManualClock,
    MessageType, Ocid, Principal, ProtectionMode, RsaEncryption, SignatureInput, SigningAlgorithm,
};
use zeroize::Zeroizing;

const LABEL: &str = "sealstore-asym";
const PIN: &str = "1234";

fn input<'a>(key: &'a Ocid, version: Option<&'a Ocid>, message: &'a [u8], alg: &str) -> SignatureInput<'a> {
    SignatureInput {
        key_id: key,
        key_version_id: version,
        message,
        message_type: MessageType::Raw,
        algorithm: SigningAlgorithm::parse(alg).unwrap(),
    }
}

/// aws-lc's verifier for `alg` on `spec` keys; `None` for SHA-224 RSA, which it lacks.
fn aws_verifier(spec: KeySpec, alg: &str) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match (spec, alg) {
        (KeySpec::Rsa { .. }, "SHA_256_RSA_PKCS_PSS") => &signature::RSA_PSS_2048_8192_SHA256,
        (KeySpec::Rsa { .. }, "SHA_384_RSA_PKCS_PSS") => &signature::RSA_PSS_2048_8192_SHA384,
        (KeySpec::Rsa { .. }, "SHA_512_RSA_PKCS_PSS") => &signature::RSA_PSS_2048_8192_SHA512,
        (KeySpec::Rsa { .. }, "SHA_256_RSA_PKCS1_V1_5") => &signature::RSA_PKCS1_2048_8192_SHA256,
        (KeySpec::Rsa { .. }, "SHA_384_RSA_PKCS1_V1_5") => &signature::RSA_PKCS1_2048_8192_SHA384,
        (KeySpec::Rsa { .. }, "SHA_512_RSA_PKCS1_V1_5") => &signature::RSA_PKCS1_2048_8192_SHA512,
        (KeySpec::Ecdsa(Curve::P256), "ECDSA_SHA_256") => &signature::ECDSA_P256_SHA256_ASN1,
        (KeySpec::Ecdsa(Curve::P256), "ECDSA_SHA_384") => &signature::ECDSA_P256_SHA384_ASN1,
        (KeySpec::Ecdsa(Curve::P256), "ECDSA_SHA_512") => &signature::ECDSA_P256_SHA512_ASN1,
        (KeySpec::Ecdsa(Curve::P384), "ECDSA_SHA_256") => &signature::ECDSA_P384_SHA256_ASN1,
        (KeySpec::Ecdsa(Curve::P384), "ECDSA_SHA_384") => &signature::ECDSA_P384_SHA384_ASN1,
        (KeySpec::Ecdsa(Curve::P384), "ECDSA_SHA_512") => &signature::ECDSA_P384_SHA512_ASN1,
        (KeySpec::Ecdsa(Curve::P521), "ECDSA_SHA_256") => &signature::ECDSA_P521_SHA256_ASN1,
        (KeySpec::Ecdsa(Curve::P521), "ECDSA_SHA_384") => &signature::ECDSA_P521_SHA384_ASN1,
        (KeySpec::Ecdsa(Curve::P521), "ECDSA_SHA_512") => &signature::ECDSA_P521_SHA512_ASN1,
        _ => return None,
    })
}

/// A session on the token, as any PKCS#11 client would open one.
fn inspector() -> Session {
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
    session
}

fn objects(session: &Session, version: &Ocid, class: ObjectClass) -> Vec<cryptoki::object::ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(version.as_str().as_bytes().to_vec()),
        ])
        .unwrap()
}

#[test]
fn rsa_ecdsa_and_short_aes_keys_live_and_work_inside_the_token() {
    let dir = tempfile::tempdir().unwrap();
    softhsm::init_tokens(dir.path(), &[LABEL], PIN);
    let clock = ManualClock::starting_now();
    let mut kms = Kms::open(KmsConfig {
        clock: Arc::new(clock.clone()),
        ..common::kms_config(dir.path().join("data"))
    })
    .unwrap();
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
                display_name: "hsm".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let create = |spec: KeySpec| {
        kms.create_key(
            &me,
            CreateKey {
                protection_mode: Some(ProtectionMode::Hsm),
                key_shape: Some(spec.shape()),
                ..CreateKey::new(vault.id.clone(), format!("{spec}"))
            },
        )
        .unwrap()
    };

    // AES-128 and AES-192: GCM in the token, as AES-256.
    for len in [16, 24] {
        let key = create(KeySpec::Aes { len });
        let aad = AssociatedData::none();
        let ct = kms.encrypt(&me, &key.id, b"short key", &aad).unwrap();
        assert_eq!(
            &kms.decrypt(&me, &ct.ciphertext, &aad, None).unwrap().plaintext[..],
            b"short key"
        );
    }

    let rsa_algorithms = SigningAlgorithm::ALL.iter().filter(|a| a.contains("RSA"));
    let ecdsa_algorithms = SigningAlgorithm::ALL.iter().filter(|a| a.starts_with("ECDSA"));
    let cases: Vec<(KeySpec, Vec<&str>)> = vec![
        (KeySpec::Rsa { len: 256 }, rsa_algorithms.copied().collect()),
        (KeySpec::Ecdsa(Curve::P256), ecdsa_algorithms.clone().copied().collect()),
        (KeySpec::Ecdsa(Curve::P384), ecdsa_algorithms.clone().copied().collect()),
        (KeySpec::Ecdsa(Curve::P521), ecdsa_algorithms.copied().collect()),
    ];
    let mut keys = Vec::new();
    for (spec, algorithms) in cases {
        let key = create(spec);
        let version = key.current_key_version.clone();
        let public = public_key_der(&kms.get_key_version(&key.id, &version).unwrap().public_key.unwrap()).unwrap();
        for alg in algorithms {
            let signed = kms.sign(&me, input(&key.id, None, b"pay 100", alg)).unwrap();
            assert_eq!(signed.key_version_id, version);
            // Verified by sealstore (in the token for SHA-224) and, where it can, by aws-lc
            // with nothing but the public key.
            assert!(
                kms.verify(&me, input(&key.id, Some(&version), b"pay 100", alg), &signed.signature)
                    .unwrap(),
                "{spec} {alg}"
            );
            assert!(
                !kms.verify(&me, input(&key.id, Some(&version), b"pay 101", alg), &signed.signature)
                    .unwrap(),
                "{spec} {alg}"
            );
            if let Some(verifier) = aws_verifier(spec, alg) {
                UnparsedPublicKey::new(verifier, &public)
                    .verify(b"pay 100", &signed.signature)
                    .unwrap_or_else(|_| panic!("{spec} {alg}: aws-lc rejects the token's signature"));
            }
        }
        keys.push((spec, key));
    }

    // RSA-OAEP: encrypted to the public key outside the token, decrypted inside. SoftHSM2 2.6
    // decrypts OAEP with SHA-1 only; SHA-256 is refused as a parameter, not as a bad ciphertext.
    let (_, rsa) = &keys[0];
    let ct = kms
        .rsa_encrypt(&me, &rsa.id, None, RsaEncryption::OaepSha1, b"secret")
        .unwrap();
    assert_eq!(
        &kms.rsa_decrypt(&me, &rsa.id, None, RsaEncryption::OaepSha1, &ct.ciphertext)
            .unwrap()
            .plaintext[..],
        b"secret"
    );
    let mut altered = ct.ciphertext.clone();
    altered[10] ^= 1;
    let bad = kms.rsa_decrypt(&me, &rsa.id, None, RsaEncryption::OaepSha1, &altered);
    assert!(matches!(bad, Err(KmsError::InvalidCiphertext(_))), "{bad:?}");
    let ct256 = kms
        .rsa_encrypt(&me, &rsa.id, None, RsaEncryption::OaepSha256, b"secret")
        .unwrap();
    match kms.rsa_decrypt(&me, &rsa.id, None, RsaEncryption::OaepSha256, &ct256.ciphertext) {
        Ok(plain) => assert_eq!(&plain.plaintext[..], b"secret"),
        Err(KmsError::InvalidParameter(m)) => assert!(m.contains("cannot decrypt RSA_OAEP_SHA_256"), "{m}"),
        Err(e) => panic!("{e}"),
    }

    // Rotation: the old version still verifies and signs when named.
    let (_, p256) = &keys[1];
    let v1 = p256.current_key_version.clone();
    let old = kms.sign(&me, input(&p256.id, None, b"m", "ECDSA_SHA_256")).unwrap();
    let v2 = kms.create_key_version(&me, &p256.id).unwrap();
    assert!(kms
        .verify(&me, input(&p256.id, Some(&v1), b"m", "ECDSA_SHA_256"), &old.signature)
        .unwrap());
    assert_eq!(
        kms.sign(&me, input(&p256.id, Some(&v1), b"m", "ECDSA_SHA_256"))
            .unwrap()
            .key_version_id,
        v1
    );

    // In the token: one private and one public object per version; the private one
    // sensitive and never extractable, its secret unreadable.
    let session = inspector();
    for version in [
        &keys[0].1.current_key_version,
        &v1,
        &v2.id,
        &keys[3].1.current_key_version,
    ] {
        let private = objects(&session, version, ObjectClass::PRIVATE_KEY);
        assert_eq!(private.len(), 1, "one private key per version");
        assert_eq!(objects(&session, version, ObjectClass::PUBLIC_KEY).len(), 1);
        let flags = session
            .get_attributes(
                private[0],
                &[
                    AttributeType::Token,
                    AttributeType::Sensitive,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                ],
            )
            .unwrap();
        for expected in [
            Attribute::Token(true),
            Attribute::Sensitive(true),
            Attribute::AlwaysSensitive(true),
            Attribute::Extractable(false),
            Attribute::NeverExtractable(true),
        ] {
            assert!(flags.contains(&expected), "{expected:?} in {flags:?}");
        }
        let secret = if version == &keys[0].1.current_key_version {
            AttributeType::PrivateExponent
        } else {
            AttributeType::Value
        };
        let info = session.get_attribute_info(private[0], &[secret]).unwrap();
        assert!(matches!(info.as_slice(), [AttributeInfo::Sensitive]), "{info:?}");
    }

    // Deleting the key destroys both objects of each of its versions.
    kms.schedule_key_deletion(&me, &p256.id, None).unwrap();
    clock.advance_days(31);
    let report = kms.run_scheduled().unwrap();
    assert_eq!(report.purged_keys, vec![p256.id.clone()]);
    assert!(kms
        .list_key_versions(&p256.id)
        .unwrap()
        .iter()
        .all(|v| v.lifecycle_state == KeyVersionState::Deleted));
    for version in [&v1, &v2.id] {
        assert!(objects(&session, version, ObjectClass::PRIVATE_KEY).is_empty());
        assert!(objects(&session, version, ObjectClass::PUBLIC_KEY).is_empty());
    }
    // The other keys' objects stay.
    assert_eq!(
        objects(&session, &keys[2].1.current_key_version, ObjectClass::PRIVATE_KEY).len(),
        1
    );
}
