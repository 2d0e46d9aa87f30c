//! RSA and ECDSA master keys through the `Kms` façade: sign and verify, rotation, RSA-OAEP,
//! refusals on the data path. (Their replication is in `tests/replication.rs`; the wire API
//! with the real `oci` CLI is `tests/kms/test_asymmetric.py`.)

mod common;

use kms_core::{
    AssociatedData, CreateKey, Curve, Key, KeySpec, Kms, KmsConfig, KmsError, MessageType, Ocid, Principal,
    RsaEncryption, SignatureInput, SigningAlgorithm,
};
use tempfile::TempDir;

fn open(region: &str) -> (TempDir, Kms) {
    let dir = tempfile::tempdir().unwrap();
    let kms = Kms::open(KmsConfig {
        region: Some(region.into()),
        ..common::kms_config(dir.path())
    })
    .unwrap();
    (dir, kms)
}

fn create(kms: &Kms, vault: &Ocid, spec: KeySpec) -> Key {
    kms.create_key(
        &Principal::local_admin(),
        CreateKey {
            key_shape: Some(spec.shape()),
            ..CreateKey::new(vault.clone(), format!("{spec}"))
        },
    )
    .unwrap()
}

fn input<'a>(key: &'a Ocid, version: Option<&'a Ocid>, message: &'a [u8], alg: &str) -> SignatureInput<'a> {
    SignatureInput {
        key_id: key,
        key_version_id: version,
        message,
        message_type: MessageType::Raw,
        algorithm: SigningAlgorithm::parse(alg).unwrap(),
    }
}

#[test]
fn sign_verify_rotate_and_refuse_the_data_path() {
    let (_dir, kms) = open("r1");
    let me = Principal::local_admin();
    let vault = kms.ensure_defaults(&me).unwrap().vault.id;
    let key = create(&kms, &vault, KeySpec::Ecdsa(Curve::P521));
    assert_eq!(key.key_shape.curve_id.as_deref(), Some("NIST_P521"));
    let v1 = key.current_key_version.clone();
    assert!(kms
        .get_key_version(&key.id, &v1)
        .unwrap()
        .public_key
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));

    let signed = kms.sign(&me, input(&key.id, None, b"m", "ECDSA_SHA_256")).unwrap();
    assert_eq!(signed.key_version_id, v1);
    assert!(kms
        .verify(&me, input(&key.id, Some(&v1), b"m", "ECDSA_SHA_256"), &signed.signature)
        .unwrap());
    assert!(!kms
        .verify(&me, input(&key.id, Some(&v1), b"n", "ECDSA_SHA_256"), &signed.signature)
        .unwrap());
    let wrong = kms
        .sign(&me, input(&key.id, None, b"m", "SHA_256_RSA_PKCS_PSS"))
        .unwrap_err();
    assert!(matches!(wrong, KmsError::InvalidParameter(_)), "{wrong}");

    // A rotation makes a version of the same shape; the old one still verifies and signs.
    let v2 = kms.create_key_version(&me, &key.id).unwrap();
    assert_ne!(v2.public_key, kms.get_key_version(&key.id, &v1).unwrap().public_key);
    assert!(kms
        .verify(&me, input(&key.id, Some(&v1), b"m", "ECDSA_SHA_256"), &signed.signature)
        .unwrap());
    assert!(!kms
        .verify(
            &me,
            input(&key.id, Some(&v2.id), b"m", "ECDSA_SHA_256"),
            &signed.signature
        )
        .unwrap());
    assert_eq!(
        kms.sign(&me, input(&key.id, None, b"m", "ECDSA_SHA_512"))
            .unwrap()
            .key_version_id,
        v2.id
    );

    // Asymmetric keys wrap no data; AES-128 keys encrypt but make no data keys.
    let aad = AssociatedData::none();
    assert!(matches!(
        kms.encrypt(&me, &key.id, b"x", &aad),
        Err(KmsError::InvalidParameter(_))
    ));
    assert!(matches!(
        kms.generate_data_key(&me, &key.id, &aad, true),
        Err(KmsError::InvalidParameter(_))
    ));
    let aes128 = create(&kms, &vault, KeySpec::Aes { len: 16 });
    let ct = kms.encrypt(&me, &aes128.id, b"x", &aad).unwrap();
    assert_eq!(
        &kms.decrypt(&me, &ct.ciphertext, &aad, None).unwrap().plaintext[..],
        b"x"
    );
    assert!(matches!(
        kms.generate_data_key(&me, &aes128.id, &aad, true),
        Err(KmsError::InvalidParameter(_))
    ));
}

#[test]
fn rsa_oaep_round_trips_under_both_hashes() {
    let (_dir, kms) = open("r1");
    let me = Principal::local_admin();
    let vault = kms.ensure_defaults(&me).unwrap().vault.id;
    let key = create(&kms, &vault, KeySpec::Rsa { len: 256 });
    for alg in [RsaEncryption::OaepSha1, RsaEncryption::OaepSha256] {
        let ct = kms.rsa_encrypt(&me, &key.id, None, alg, b"secret").unwrap();
        assert_eq!(ct.ciphertext.len(), 256);
        assert_eq!(
            &kms.rsa_decrypt(&me, &key.id, None, alg, &ct.ciphertext)
                .unwrap()
                .plaintext[..],
            b"secret"
        );
    }
    let ct = kms
        .rsa_encrypt(&me, &key.id, None, RsaEncryption::OaepSha1, b"secret")
        .unwrap();
    let wrong = kms
        .rsa_decrypt(&me, &key.id, None, RsaEncryption::OaepSha256, &ct.ciphertext)
        .unwrap_err();
    assert!(matches!(wrong, KmsError::InvalidCiphertext(_)), "{wrong}");
    let too_long = kms
        .rsa_encrypt(&me, &key.id, None, RsaEncryption::OaepSha256, &[0; 300])
        .unwrap_err();
    assert!(matches!(too_long, KmsError::InvalidParameter(_)), "{too_long}");
}
