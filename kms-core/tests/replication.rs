//! Replication between two regions in one process: the primary's shipments applied straight to
//! the replica (the HTTP transport and its signatures are tested with the real servers in
//! `tests/kms/test_replication.py`). Shipping is incremental: a state carries the material of
//! the versions changed since the replica's last acknowledgement, and a replica that lacks
//! material asks for the whole state.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kms_core::replication::{Region, Shipment};
use kms_core::{
    AssociatedData, CreateKey, CreateVault, Curve, Key, KeySpec, Kms, KmsConfig, KmsError, MessageType, Principal,
    RsaEncryption, SignatureInput, SigningAlgorithm,
};
use tempfile::TempDir;

struct Site {
    kms: Kms,
    _dir: TempDir,
}

fn site(region: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let kms = Kms::open(KmsConfig {
        region: Some(region.into()),
        ..common::kms_config(dir.path())
    })
    .unwrap();
    Site { kms, _dir: dir }
}

/// Registers `other` with `at`.
fn register(at: &Kms, other: &Kms) {
    let (signing, wrapping) = other.replication_identity().unwrap().public_keys().unwrap();
    at.add_region(
        &Principal::local_admin(),
        Region {
            name: other.region().to_owned(),
            endpoint: "http://127.0.0.1:9".into(),
            signing_key: B64.encode(signing),
            wrapping_key: B64.encode(wrapping),
            time_created: at.now(),
        },
    )
    .unwrap();
}

/// Reads the one outbox entry's shipment; applies it at `to` unless `deliver` is false, and
/// acknowledges it at the primary when `to` took it. Returns the shipment and what `to` said.
fn ship(from: &Kms, to: &Kms, deliver: bool) -> (Shipment, kms_core::Result<()>) {
    let outbox = from.replication_outbox().unwrap();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    let (_, shipment) = from.replication_shipment(&outbox[0]).unwrap().unwrap();
    if !deliver {
        return (shipment, Ok(()));
    }
    let applied = to.apply_replication(from.region(), shipment.clone());
    if applied.is_ok() {
        from.replication_shipped(&outbox[0], &shipment).unwrap();
    }
    (shipment, applied)
}

fn materials(shipment: &Shipment) -> Vec<String> {
    match shipment {
        Shipment::State(state) => state.materials.iter().map(|(v, _)| v.to_string()).collect(),
        Shipment::Removal(_) => panic!("a removal"),
    }
}

#[test]
fn shipments_carry_only_new_material_and_a_replica_missing_some_gets_everything_again() {
    let (r1, r2, r3) = (site("r1"), site("r2"), site("r3"));
    let me = Principal::local_admin();
    register(&r1.kms, &r2.kms);
    register(&r2.kms, &r1.kms);
    let vault = r1
        .kms
        .create_vault(
            &me,
            CreateVault {
                display_name: "replicated".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let key = r1.kms.create_key(&me, CreateKey::new(vault.id.clone(), "k")).unwrap();
    let v1 = key.current_key_version.clone();
    let aad = AssociatedData::none();
    let old = r1.kms.encrypt(&me, &key.id, b"before", &aad).unwrap();

    r1.kms.create_replica(&me, &vault.id, "r2").unwrap();
    let (first, applied) = ship(&r1.kms, &r2.kms, true);
    applied.unwrap();
    assert_eq!(materials(&first), vec![v1.to_string()]);

    // A rotation ships the new version's material only; both still decrypt at the replica.
    let v2 = r1.kms.create_key_version(&me, &key.id).unwrap().id;
    let new = r1.kms.encrypt(&me, &key.id, b"after", &aad).unwrap();
    let (second, applied) = ship(&r1.kms, &r2.kms, true);
    applied.unwrap();
    assert_eq!(materials(&second), vec![v2.to_string()]);
    for (ciphertext, plaintext) in [(&old.ciphertext, &b"before"[..]), (&new.ciphertext, &b"after"[..])] {
        let out = r2.kms.decrypt(&me, ciphertext, &aad, None).unwrap();
        assert_eq!(&out.plaintext[..], plaintext);
    }

    // A rename ships no material at all.
    r1.kms
        .update_key(
            &me,
            &key.id,
            kms_core::UpdateResource {
                display_name: Some("renamed".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let (third, applied) = ship(&r1.kms, &r2.kms, true);
    applied.unwrap();
    assert!(materials(&third).is_empty());
    assert_eq!(r2.kms.get_key(&key.id).unwrap().display_name, "renamed");

    // A replica that lacks material a state left out refuses it rather than serving a key
    // it cannot use (r3 stands for r2 after losing its data)...
    r1.kms
        .update_key(
            &me,
            &key.id,
            kms_core::UpdateResource {
                display_name: Some("renamed again".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let (fourth, _) = ship(&r1.kms, &r2.kms, false);
    assert!(materials(&fourth).is_empty());
    register(&r3.kms, &r1.kms);
    let refused = r3.kms.apply_replication("r1", fourth).unwrap_err();
    assert!(matches!(refused, KmsError::ReplicaIncomplete(_)), "{refused}");
    // ... and the primary, told so, ships every material again.
    r1.kms.replication_resend(&vault.id, "r2").unwrap();
    let (whole, _) = ship(&r1.kms, &r2.kms, false);
    let mut all = materials(&whole);
    all.sort();
    let mut expected = vec![v1.to_string(), v2.to_string()];
    expected.sort();
    assert_eq!(all, expected);
}

#[test]
fn asymmetric_keys_replicate_and_sign_at_the_replica() {
    let (r1, r2) = (site("r1"), site("r2"));
    let me = Principal::local_admin();
    register(&r1.kms, &r2.kms);
    register(&r2.kms, &r1.kms);
    let vault = r1
        .kms
        .create_vault(
            &me,
            CreateVault {
                display_name: "replicated".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let create = |spec: KeySpec| {
        r1.kms
            .create_key(
                &me,
                CreateKey {
                    key_shape: Some(spec.shape()),
                    ..CreateKey::new(vault.id.clone(), format!("{spec}"))
                },
            )
            .unwrap()
    };
    let rsa = create(KeySpec::Rsa { len: 256 });
    let ec = create(KeySpec::Ecdsa(Curve::P256));
    r1.kms.create_replica(&me, &vault.id, "r2").unwrap();
    ship(&r1.kms, &r2.kms, true).1.unwrap();

    for (key, alg) in [(&ec, "ECDSA_SHA_256"), (&rsa, "SHA_384_RSA_PKCS_PSS")] {
        let v = &key.current_key_version;
        assert_eq!(
            r2.kms.get_key_version(&key.id, v).unwrap().public_key,
            r1.kms.get_key_version(&key.id, v).unwrap().public_key
        );
        let signed = r2.kms.sign(&me, input(key, None, alg)).unwrap();
        assert!(r1.kms.verify(&me, input(key, Some(v), alg), &signed.signature).unwrap());
    }
    let ct = r1
        .kms
        .rsa_encrypt(&me, &rsa.id, None, RsaEncryption::OaepSha256, b"x")
        .unwrap();
    let back = r2
        .kms
        .rsa_decrypt(&me, &rsa.id, None, RsaEncryption::OaepSha256, &ct.ciphertext)
        .unwrap();
    assert_eq!(&back.plaintext[..], b"x");
}

fn input<'a>(key: &'a Key, version: Option<&'a kms_core::Ocid>, alg: &str) -> SignatureInput<'a> {
    SignatureInput {
        key_id: &key.id,
        key_version_id: version,
        message: b"m",
        message_type: MessageType::Raw,
        algorithm: SigningAlgorithm::parse(alg).unwrap(),
    }
}

#[test]
fn imported_keys_replicate_with_their_origin_and_material() {
    use kms_core::byok::{wrap_key_material, ExportRequest, WrappedKey};
    use kms_core::protection::public_key_der;
    use kms_core::{KeyVersionOrigin, KeyWrapping};

    let (r1, r2) = (site("r1"), site("r2"));
    let me = Principal::local_admin();
    register(&r1.kms, &r2.kms);
    register(&r2.kms, &r1.kms);
    let vault = r1
        .kms
        .create_vault(
            &me,
            CreateVault {
                display_name: "byok".into(),
                ..Default::default()
            },
        )
        .unwrap();
    r1.kms.create_replica(&me, &vault.id, "r2").unwrap();
    let wrapping = r1.kms.wrapping_key(&me, &vault.id).unwrap();
    let material = [42u8; 32];
    let wrapped = WrappedKey {
        algorithm: KeyWrapping::RsaOaepAesSha256,
        material: wrap_key_material(
            &public_key_der(&wrapping.public_key).unwrap(),
            KeyWrapping::RsaOaepAesSha256,
            &material,
        )
        .unwrap(),
    };
    let key = r1
        .kms
        .import_key(&me, CreateKey::new(vault.id.clone(), "brought"), &wrapped)
        .unwrap();
    let ct = r1
        .kms
        .encrypt(&me, &key.id, b"imported", &AssociatedData::default())
        .unwrap();
    ship(&r1.kms, &r2.kms, true).1.unwrap();

    let at_replica = r2.kms.get_key_version(&key.id, &key.current_key_version).unwrap();
    assert_eq!(at_replica.origin, KeyVersionOrigin::External);
    let back = r2
        .kms
        .decrypt(&me, &ct.ciphertext, &AssociatedData::default(), Some(&key.id))
        .unwrap();
    assert_eq!(&back.plaintext[..], b"imported");
    // The replica holds the very material that was imported.
    let caller = aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let caller_public = {
        use aws_lc_rs::encoding::AsDer;
        caller.public_key().as_der().unwrap().as_ref().to_vec()
    };
    let pem = kms_core::protection::public_key_pem(&caller_public);
    let exported = r2
        .kms
        .export_key(
            &me,
            ExportRequest {
                key_id: &key.id,
                key_version_id: None,
                algorithm: KeyWrapping::RsaOaepSha256,
                public_key_pem: &pem,
            },
        )
        .unwrap();
    let decrypter = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(caller).unwrap();
    let mut out = vec![0u8; decrypter.min_output_size()];
    let got = decrypter
        .decrypt(
            &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
            &exported.encrypted_key,
            &mut out,
            None,
        )
        .unwrap();
    assert_eq!(got, material);
    // Importing into the replica is refused: it is managed in its primary region.
    let err = r2.kms.import_key_version(&me, &key.id, &wrapped).unwrap_err();
    assert!(err.to_string().contains("replica"), "{err}");
}
