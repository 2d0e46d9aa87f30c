//! Integration tests of kms-core's crypto operations: encrypt/decrypt, associated data,
//! tamper resistance of the self-describing ciphertext, data-encryption keys, rotation and
//! rewrap, and the key / key-version states that gate crypto.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use kms_core::ciphertext;
use kms_core::internals::{DEK_LEN, MAX_PLAINTEXT};
use kms_core::{
    AssociatedData, CreateKey, CreateVault, Key, KeyProvider, Kms, KmsConfig, KmsError, ManualClock, Ocid, Principal,
    Refusal, ResourceType, Vault,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use tempfile::TempDir;

/// A Kms on a fresh data directory, with a clock the test can move.
struct Env {
    // Dropped after `kms` (fields drop in declaration order).
    kms: Kms,
    clock: ManualClock,
    me: Principal,
    _dir: TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let kms = Kms::open(KmsConfig {
        clock: Arc::new(clock.clone()),
        ..common::kms_config(dir.path())
    })
    .unwrap();
    Env {
        kms,
        clock,
        me: Principal::local_admin(),
        _dir: dir,
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

    fn vault_and_key(&self) -> (Vault, Key) {
        let vault = self.vault("apps");
        let key = self.key(&vault, "orders");
        (vault, key)
    }
}

fn aad(json: &str) -> AssociatedData {
    AssociatedData::from_json(json).unwrap()
}

fn is_invalid_ciphertext<T: std::fmt::Debug>(r: &Result<T, KmsError>) -> bool {
    matches!(r, Err(KmsError::InvalidCiphertext(_)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ----- round trips and associated data -----

#[test]
fn round_trip_without_associated_data() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let ct = e
        .kms
        .encrypt(&e.me, &key.id, b"secret", &AssociatedData::none())
        .unwrap();
    assert_eq!(ct.key_id, key.id);
    assert_eq!(ct.key_version_id, key.current_key_version);
    assert!(
        !ct.ciphertext.windows(6).any(|w| w == b"secret"),
        "plaintext visible in ciphertext"
    );

    let pt = e
        .kms
        .decrypt(&e.me, &ct.ciphertext, &AssociatedData::none(), None)
        .unwrap();
    assert_eq!(&pt.plaintext[..], b"secret");
    assert_eq!(pt.key_id, key.id);
    assert_eq!(pt.key_version_id, key.current_key_version);

    // An empty JSON object is the same as no associated data.
    let pt = e.kms.decrypt(&e.me, &ct.ciphertext, &aad("{}"), Some(&key.id)).unwrap();
    assert_eq!(&pt.plaintext[..], b"secret");
}

#[test]
fn round_trip_with_associated_data_and_key_order_does_not_matter() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let ad = aad(r#"{"a":"1","b":"2"}"#);
    let ct = e.kms.encrypt(&e.me, &key.id, b"bound", &ad).unwrap();

    let same = e.kms.decrypt(&e.me, &ct.ciphertext, &ad, None).unwrap();
    assert_eq!(&same.plaintext[..], b"bound");

    let reordered = aad(r#"{ "b": "2", "a": "1" }"#);
    assert_eq!(reordered.canonical_bytes(), ad.canonical_bytes());
    let pt = e.kms.decrypt(&e.me, &ct.ciphertext, &reordered, None).unwrap();
    assert_eq!(&pt.plaintext[..], b"bound");

    let from_map = AssociatedData::from_map(BTreeMap::from([
        ("b".to_string(), "2".to_string()),
        ("a".to_string(), "1".to_string()),
    ]));
    let pt = e.kms.decrypt(&e.me, &ct.ciphertext, &from_map, None).unwrap();
    assert_eq!(&pt.plaintext[..], b"bound");
}

#[test]
fn wrong_or_missing_associated_data_is_rejected() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let ct = e
        .kms
        .encrypt(&e.me, &key.id, b"bound", &aad(r#"{"a":"1","b":"2"}"#))
        .unwrap()
        .ciphertext;

    for wrong in [
        r#"{"a":"1","b":"3"}"#,
        r#"{"a":"1"}"#,
        r#"{"a":"1","b":"2","c":"3"}"#,
        r#"{"A":"1","b":"2"}"#,
        r#"{"a":"1","b":"2 "}"#,
    ] {
        let r = e.kms.decrypt(&e.me, &ct, &aad(wrong), None);
        assert!(is_invalid_ciphertext(&r), "AAD {wrong}: {r:?}");
    }
    let r = e.kms.decrypt(&e.me, &ct, &AssociatedData::none(), None);
    assert!(is_invalid_ciphertext(&r), "missing AAD: {r:?}");

    // And the other way round: made without AAD, decrypted with some.
    let plain = e.kms.encrypt(&e.me, &key.id, b"free", &AssociatedData::none()).unwrap();
    let r = e.kms.decrypt(&e.me, &plain.ciphertext, &aad(r#"{"a":"1"}"#), None);
    assert!(is_invalid_ciphertext(&r), "unexpected AAD: {r:?}");
}

#[test]
fn associated_data_must_be_a_json_object_of_strings() {
    for bad in [r#"{"a":1}"#, r#"["a"]"#, "not json", r#"{"a":null}"#] {
        let r = AssociatedData::from_json(bad);
        assert!(matches!(r, Err(KmsError::InvalidParameter(_))), "{bad}: {r:?}");
    }
}

#[test]
fn plaintext_size_limit_is_4096_bytes() {
    let e = env();
    let (_, key) = e.vault_and_key();
    assert_eq!(MAX_PLAINTEXT, 4096);

    let max: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let ct = e.kms.encrypt(&e.me, &key.id, &max, &AssociatedData::none()).unwrap();
    let pt = e
        .kms
        .decrypt(&e.me, &ct.ciphertext, &AssociatedData::none(), None)
        .unwrap();
    assert_eq!(&pt.plaintext[..], &max[..]);

    let too_big = vec![7u8; 4097];
    let r = e.kms.encrypt(&e.me, &key.id, &too_big, &AssociatedData::none());
    assert!(matches!(r, Err(KmsError::InvalidParameter(_))), "{r:?}");

    // The empty plaintext is fine too.
    let ct = e.kms.encrypt(&e.me, &key.id, b"", &AssociatedData::none()).unwrap();
    let pt = e
        .kms
        .decrypt(&e.me, &ct.ciphertext, &AssociatedData::none(), None)
        .unwrap();
    assert!(pt.plaintext.is_empty());
}

#[test]
fn same_plaintext_encrypts_differently_each_time() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let a = e.kms.encrypt(&e.me, &key.id, b"same", &AssociatedData::none()).unwrap();
    let b = e.kms.encrypt(&e.me, &key.id, b"same", &AssociatedData::none()).unwrap();
    assert_ne!(a.ciphertext, b.ciphertext, "nonce reuse");
}

#[test]
fn encrypt_under_unknown_key_is_not_found() {
    let e = env();
    let _ = e.vault_and_key();
    let ghost = Ocid::generate(ResourceType::Key, "local-1");
    let r = e.kms.encrypt(&e.me, &ghost, b"x", &AssociatedData::none());
    assert!(matches!(r, Err(KmsError::NotFound { kind: "key", .. })), "{r:?}");
}

#[test]
fn ciphertext_layout_matches_the_format_spec() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let ct = e
        .kms
        .encrypt(&e.me, &key.id, b"hello", &aad(r#"{"bucket":"photos"}"#))
        .unwrap()
        .ciphertext;
    let (k, v) = (key.id.as_str().as_bytes(), key.current_key_version.as_str().as_bytes());
    let (n, m) = (k.len(), v.len());
    assert_eq!(&ct[..4], b"SSKC");
    assert_eq!(ct[4], 1);
    assert_eq!(ct[5] as usize, n);
    assert_eq!(&ct[6..6 + n], k);
    assert_eq!(ct[6 + n] as usize, m);
    assert_eq!(&ct[7 + n..7 + n + m], v);
    // Overhead: header, nonce (12) and tag (16); the body is as long as the plaintext.
    assert_eq!(ct.len(), 7 + n + m + 12 + 5 + 16);
    let parsed = ciphertext::parse(&ct).unwrap();
    assert_eq!(parsed.header, &ct[..7 + n + m]);
    assert_eq!(parsed.payload.len(), 12 + 5 + 16);

    // An unknown format version is refused before anything else.
    let mut v2 = ct.clone();
    v2[4] = 2;
    let r = e.kms.decrypt(&e.me, &v2, &aad(r#"{"bucket":"photos"}"#), None);
    assert!(is_invalid_ciphertext(&r), "{r:?}");
}

// ----- tamper resistance -----

/// Every way of damaging `ct` that we check: one bit flipped, truncated, extended.
fn assert_every_bit_flip_fails(kms: &Kms, me: &Principal, ct: &[u8], ad: &AssociatedData) {
    for bit in 0..ct.len() * 8 {
        let mut bad = ct.to_vec();
        bad[bit / 8] ^= 1 << (bit % 8);
        let r = kms.decrypt(me, &bad, ad, None);
        assert!(is_invalid_ciphertext(&r), "bit {bit} flipped: {r:?}");
    }
}

#[test]
fn every_single_bit_flip_of_a_ciphertext_fails() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let ad = aad(r#"{"bucket":"b","object":"o"}"#);
    let ct = e
        .kms
        .encrypt(&e.me, &key.id, b"sixty-four bytes of plaintext, give or take", &ad)
        .unwrap();
    assert_every_bit_flip_fails(&e.kms, &e.me, &ct.ciphertext, &ad);
    // The intact ciphertext still decrypts (the loop did not damage anything shared).
    let pt = e.kms.decrypt(&e.me, &ct.ciphertext, &ad, None).unwrap();
    assert_eq!(&pt.plaintext[..], b"sixty-four bytes of plaintext, give or take");
}

#[test]
fn every_truncation_and_extension_of_a_ciphertext_fails() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let ad = aad(r#"{"a":"1"}"#);
    let ct = e.kms.encrypt(&e.me, &key.id, b"truncate me", &ad).unwrap().ciphertext;
    for len in 0..ct.len() {
        let r = e.kms.decrypt(&e.me, &ct[..len], &ad, None);
        assert!(is_invalid_ciphertext(&r), "truncated to {len}: {r:?}");
    }
    for extra in 1..=64usize {
        let mut longer = ct.clone();
        longer.extend((0..extra).map(|i| (i * 37 + 11) as u8));
        let r = e.kms.decrypt(&e.me, &longer, &ad, None);
        assert!(is_invalid_ciphertext(&r), "extended by {extra}: {r:?}");
        // Even zero bytes appended are caught.
        longer.truncate(ct.len());
        longer.extend(std::iter::repeat_n(0u8, extra));
        let r = e.kms.decrypt(&e.me, &longer, &ad, None);
        assert!(is_invalid_ciphertext(&r), "extended by {extra} zero bytes: {r:?}");
    }
}

fn aad_strategy() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[a-zA-Z0-9_]{0,8}", ".{0,16}", 0..4)
}

#[test]
fn proptest_damaged_ciphertexts_never_decrypt() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..=MAX_PLAINTEXT),
        aad_strategy(),
        prop::collection::vec(any::<prop::sample::Index>(), 32),
        prop::collection::vec(any::<prop::sample::Index>(), 32),
        prop::collection::vec(any::<u8>(), 1..=64),
    );
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |(plaintext, map, bits, cuts, extension)| {
            let ad = AssociatedData::from_map(map);
            let ct = e.kms.encrypt(&e.me, &key.id, &plaintext, &ad).unwrap().ciphertext;
            let fails = |bytes: &[u8], what: &str| -> Result<(), TestCaseError> {
                let r = e.kms.decrypt(&e.me, bytes, &ad, None);
                prop_assert!(
                    is_invalid_ciphertext(&r),
                    "{}: {:?}",
                    what,
                    r.map(|d| d.plaintext.len())
                );
                Ok(())
            };

            // The intact ciphertext decrypts to the plaintext.
            let pt = e.kms.decrypt(&e.me, &ct, &ad, None).unwrap();
            prop_assert_eq!(&pt.plaintext[..], &plaintext[..]);

            // Random single-bit flips.
            for idx in &bits {
                let bit = idx.index(ct.len() * 8);
                let mut bad = ct.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                fails(&bad, &format!("bit {bit} flipped"))?;
            }
            // Truncations: every length through the header and the nonce and tag that follow
            // it, every length among the last 64 bytes, and random lengths in between. (The
            // plain test above checks every length of one ciphertext; here a full sweep of
            // 64 ciphertexts of up to 4 KiB would cost minutes of audit writes.)
            let header_len = ciphertext::parse(&ct).unwrap().header.len();
            let mut lengths: Vec<usize> = (0..=(header_len + 28).min(ct.len() - 1)).collect();
            lengths.extend(ct.len().saturating_sub(64)..ct.len());
            lengths.extend(cuts.iter().map(|idx| idx.index(ct.len())));
            lengths.sort_unstable();
            lengths.dedup();
            for len in lengths {
                fails(&ct[..len], &format!("truncated to {len}"))?;
            }
            // Extension by 1..=64 random bytes.
            for n in 1..=extension.len() {
                fails(&[&ct[..], &extension[..n]].concat(), &format!("extended by {n}"))?;
            }
            // A different associated data also fails.
            let mut other = ad.canonical_bytes();
            other.push(b'!');
            let r = e.kms.unwrap_data_key(&ct, &other);
            prop_assert!(is_invalid_ciphertext(&r), "other AAD: {:?}", r.map(|_| ()));
            Ok(())
        })
        .unwrap();
}

// ----- data-encryption keys -----

#[test]
fn generate_data_key_with_plaintext_unwraps_to_the_same_key() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let ad = aad(r#"{"object":"o1"}"#);
    let dk = e.kms.generate_data_key(&e.me, &key.id, &ad, true).unwrap();
    assert_eq!(dk.key_id, key.id);
    assert_eq!(dk.key_version_id, key.current_key_version);
    let dek = dk.plaintext.as_ref().expect("plaintext was asked for");
    assert_eq!(dek.expose().len(), DEK_LEN);
    assert_ne!(dek.expose(), &[0u8; DEK_LEN]);

    let parsed = ciphertext::parse(&dk.wrapped).unwrap();
    assert_eq!(parsed.key_id, key.id);
    assert_eq!(parsed.key_version_id, key.current_key_version);

    let unwrapped = e.kms.unwrap_data_key(&dk.wrapped, &ad.canonical_bytes()).unwrap();
    assert_eq!(unwrapped.expose(), dek.expose());

    // Decrypt sees the same 32 bytes.
    let pt = e.kms.decrypt(&e.me, &dk.wrapped, &ad, Some(&key.id)).unwrap();
    assert_eq!(&pt.plaintext[..], &dek.expose()[..]);

    // Wrong AAD.
    let r = e.kms.unwrap_data_key(&dk.wrapped, b"");
    assert!(is_invalid_ciphertext(&r), "{r:?}");
}

#[test]
fn generate_data_key_without_plaintext_still_unwraps() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let dk = e
        .kms
        .generate_data_key(&e.me, &key.id, &AssociatedData::none(), false)
        .unwrap();
    assert!(dk.plaintext.is_none());
    let a = e.kms.unwrap_data_key(&dk.wrapped, b"").unwrap();
    let b = e.kms.unwrap_data_key(&dk.wrapped, b"").unwrap();
    assert_eq!(a.expose(), b.expose());
    let pt = e
        .kms
        .decrypt(&e.me, &dk.wrapped, &AssociatedData::none(), None)
        .unwrap();
    assert_eq!(&pt.plaintext[..], &a.expose()[..]);
}

#[test]
fn key_provider_trait_generates_and_unwraps() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let provider: &dyn KeyProvider = &e.kms;
    let dk = KeyProvider::generate_data_key(&e.kms, &key.id, b"bucket/object").unwrap();
    let dek = dk.plaintext.as_ref().expect("the trait always returns the plaintext");
    assert_eq!(dk.key_id, key.id);
    assert_eq!(dk.key_version_id, key.current_key_version);
    let unwrapped = provider.unwrap_data_key(&dk.wrapped, b"bucket/object").unwrap();
    assert_eq!(unwrapped.expose(), dek.expose());

    let r = provider.unwrap_data_key(&dk.wrapped, b"bucket/other");
    assert!(is_invalid_ciphertext(&r), "{r:?}");

    // Two DEKs are different keys.
    let dk2 = KeyProvider::generate_data_key(&e.kms, &key.id, b"bucket/object").unwrap();
    assert_ne!(dk2.plaintext.as_ref().unwrap().expose(), dek.expose());
    assert_ne!(dk2.wrapped, dk.wrapped);

    // A ciphertext of something that is not 32 bytes is not a data key.
    let ct = e
        .kms
        .encrypt(&e.me, &key.id, b"short", &AssociatedData::none())
        .unwrap();
    let r = provider.unwrap_data_key(&ct.ciphertext, b"");
    assert!(is_invalid_ciphertext(&r), "{r:?}");
}

#[test]
fn debug_output_of_a_data_key_does_not_reveal_it() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let dk = KeyProvider::generate_data_key(&e.kms, &key.id, b"").unwrap();
    let dek = dk.plaintext.clone().unwrap();
    let bytes = *dek.expose();
    for printed in [
        format!("{dek:?}"),
        format!("{dek:#?}"),
        format!("{dk:?}"),
        format!("{dk:#?}"),
    ] {
        assert!(!printed.contains(&hex(&bytes)), "hex key in {printed}");
        assert!(!printed.contains(&hex(&bytes).to_uppercase()), "HEX key in {printed}");
        assert!(!printed.contains(&format!("{bytes:?}")), "key bytes in {printed}");
    }
    assert!(format!("{dek:?}").contains("redacted"));
}

// ----- rotation -----

#[test]
fn rotation_new_version_encrypts_old_still_decrypts_and_rewrap_moves_forward() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let v1 = key.current_key_version.clone();
    let ad = aad(r#"{"a":"1","b":"2"}"#);
    let old = e.kms.encrypt(&e.me, &key.id, b"before rotation", &ad).unwrap();
    assert_eq!(old.key_version_id, v1);

    // A millisecond later, so that "oldest first" is well defined (see lifecycle.rs).
    e.clock.advance_millis(1);
    let v2 = e.kms.create_key_version(&e.me, &key.id).unwrap();
    assert_ne!(v2.id, v1);
    assert_eq!(v2.key_id, key.id);
    assert!(!v2.is_auto_rotated);
    assert_eq!(e.kms.get_key(&key.id).unwrap().current_key_version, v2.id);
    let versions: Vec<Ocid> = e
        .kms
        .list_key_versions(&key.id)
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(versions, vec![v1.clone(), v2.id.clone()]);

    let new = e.kms.encrypt(&e.me, &key.id, b"after rotation", &ad).unwrap();
    assert_eq!(new.key_version_id, v2.id);
    let parsed = ciphertext::parse(&new.ciphertext).unwrap();
    assert_eq!(parsed.key_id, key.id);
    assert_eq!(parsed.key_version_id, v2.id);
    assert_eq!(ciphertext::parse(&old.ciphertext).unwrap().key_version_id, v1);

    // Old ciphertexts still decrypt, and say which version made them.
    let pt = e.kms.decrypt(&e.me, &old.ciphertext, &ad, Some(&key.id)).unwrap();
    assert_eq!(&pt.plaintext[..], b"before rotation");
    assert_eq!(pt.key_version_id, v1);
    let pt = e.kms.decrypt(&e.me, &new.ciphertext, &ad, Some(&key.id)).unwrap();
    assert_eq!(&pt.plaintext[..], b"after rotation");
    assert_eq!(pt.key_version_id, v2.id);

    // Old versions never encrypt again; the primary may be named explicitly.
    let r = e.kms.encrypt_with_version(&e.me, &key.id, Some(&v1), b"x", &ad);
    assert_eq!(
        r.as_ref().err().and_then(KmsError::refusal),
        Some(Refusal::VersionNotPrimary),
        "{r:?}"
    );
    let explicit = e
        .kms
        .encrypt_with_version(&e.me, &key.id, Some(&v2.id), b"x", &ad)
        .unwrap();
    assert_eq!(explicit.key_version_id, v2.id);
    let ghost = Ocid::generate(ResourceType::KeyVersion, "local-1");
    let r = e.kms.encrypt_with_version(&e.me, &key.id, Some(&ghost), b"x", &ad);
    assert!(matches!(r, Err(KmsError::NotFound { .. })), "{r:?}");

    // Rewrap moves an old ciphertext to the primary version.
    let rewrapped = e.kms.rewrap(&e.me, &old.ciphertext, &ad, None).unwrap();
    assert_eq!(rewrapped.key_id, key.id);
    assert_eq!(rewrapped.key_version_id, v2.id);
    assert_eq!(ciphertext::parse(&rewrapped.ciphertext).unwrap().key_version_id, v2.id);
    let pt = e.kms.decrypt(&e.me, &rewrapped.ciphertext, &ad, Some(&key.id)).unwrap();
    assert_eq!(&pt.plaintext[..], b"before rotation");
    assert_eq!(pt.key_version_id, v2.id);
    // The AAD stays bound after rewrap.
    let r = e
        .kms
        .decrypt(&e.me, &rewrapped.ciphertext, &AssociatedData::none(), None);
    assert!(is_invalid_ciphertext(&r), "{r:?}");
    // Rewrap needs the right AAD too.
    let r = e.kms.rewrap(&e.me, &old.ciphertext, &AssociatedData::none(), None);
    assert!(is_invalid_ciphertext(&r), "{r:?}");
}

#[test]
fn rewrap_to_another_key() {
    let e = env();
    let vault = e.vault("apps");
    let a = e.key(&vault, "a");
    let b = e.key(&vault, "b");
    let ct = e.kms.encrypt(&e.me, &a.id, b"moving", &AssociatedData::none()).unwrap();
    let moved = e
        .kms
        .rewrap(&e.me, &ct.ciphertext, &AssociatedData::none(), Some(&b.id))
        .unwrap();
    assert_eq!(moved.key_id, b.id);
    assert_eq!(moved.key_version_id, b.current_key_version);
    let pt = e
        .kms
        .decrypt(&e.me, &moved.ciphertext, &AssociatedData::none(), Some(&b.id))
        .unwrap();
    assert_eq!(&pt.plaintext[..], b"moving");
    let r = e
        .kms
        .decrypt(&e.me, &moved.ciphertext, &AssociatedData::none(), Some(&a.id));
    assert!(is_invalid_ciphertext(&r), "{r:?}");
}

// ----- key and version states -----

#[test]
fn disabled_key_refuses_encrypt_and_decrypt_until_enabled() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let ct = e
        .kms
        .encrypt(&e.me, &key.id, b"payload", &AssociatedData::none())
        .unwrap();

    let disabled = e.kms.disable_key(&e.me, &key.id).unwrap();
    assert_eq!(disabled.lifecycle_state, kms_core::KeyState::Disabled);
    let r = e.kms.encrypt(&e.me, &key.id, b"payload", &AssociatedData::none());
    assert_eq!(
        r.as_ref().err().and_then(KmsError::refusal),
        Some(Refusal::KeyDisabled),
        "{r:?}"
    );
    let r = e.kms.decrypt(&e.me, &ct.ciphertext, &AssociatedData::none(), None);
    assert_eq!(
        r.as_ref().err().and_then(KmsError::refusal),
        Some(Refusal::KeyDisabled),
        "{r:?}"
    );
    let r = e.kms.generate_data_key(&e.me, &key.id, &AssociatedData::none(), true);
    assert_eq!(
        r.as_ref().err().and_then(KmsError::refusal),
        Some(Refusal::KeyDisabled),
        "{r:?}"
    );
    let r = e.kms.rewrap(&e.me, &ct.ciphertext, &AssociatedData::none(), None);
    assert_eq!(
        r.as_ref().err().and_then(KmsError::refusal),
        Some(Refusal::KeyDisabled),
        "{r:?}"
    );
    // Disabling twice is a state error, and a disabled key cannot be rotated.
    let r = e.kms.disable_key(&e.me, &key.id);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");
    let r = e.kms.create_key_version(&e.me, &key.id);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");

    let enabled = e.kms.enable_key(&e.me, &key.id).unwrap();
    assert_eq!(enabled.lifecycle_state, kms_core::KeyState::Enabled);
    let pt = e
        .kms
        .decrypt(&e.me, &ct.ciphertext, &AssociatedData::none(), None)
        .unwrap();
    assert_eq!(&pt.plaintext[..], b"payload");
    let again = e
        .kms
        .encrypt(&e.me, &key.id, b"payload", &AssociatedData::none())
        .unwrap();
    assert_eq!(again.key_version_id, key.current_key_version);
    let r = e.kms.enable_key(&e.me, &key.id);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");
}

#[test]
fn disabled_old_version_refuses_its_ciphertexts_and_primary_cannot_be_disabled() {
    let e = env();
    let (_, key) = e.vault_and_key();
    let v1 = key.current_key_version.clone();
    let old = e.kms.encrypt(&e.me, &key.id, b"old", &AssociatedData::none()).unwrap();
    let v2 = e.kms.create_key_version(&e.me, &key.id).unwrap().id;
    let new = e.kms.encrypt(&e.me, &key.id, b"new", &AssociatedData::none()).unwrap();

    let r = e.kms.disable_key_version(&e.me, &key.id, &v2, false);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");

    let disabled = e.kms.disable_key_version(&e.me, &key.id, &v1, false).unwrap();
    assert_eq!(disabled.lifecycle_state, kms_core::KeyVersionState::Disabled);
    assert_eq!(
        e.kms.get_key_version(&key.id, &v1).unwrap().lifecycle_state,
        kms_core::KeyVersionState::Disabled
    );
    let r = e.kms.decrypt(&e.me, &old.ciphertext, &AssociatedData::none(), None);
    assert_eq!(
        r.as_ref().err().and_then(KmsError::refusal),
        Some(Refusal::VersionDisabled),
        "{r:?}"
    );
    let r = e.kms.rewrap(&e.me, &old.ciphertext, &AssociatedData::none(), None);
    assert_eq!(
        r.as_ref().err().and_then(KmsError::refusal),
        Some(Refusal::VersionDisabled),
        "{r:?}"
    );
    // The primary is unaffected.
    let pt = e
        .kms
        .decrypt(&e.me, &new.ciphertext, &AssociatedData::none(), None)
        .unwrap();
    assert_eq!(&pt.plaintext[..], b"new");
    // Disabling again is a state error.
    let r = e.kms.disable_key_version(&e.me, &key.id, &v1, false);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");

    e.kms.enable_key_version(&e.me, &key.id, &v1).unwrap();
    let pt = e
        .kms
        .decrypt(&e.me, &old.ciphertext, &AssociatedData::none(), None)
        .unwrap();
    assert_eq!(&pt.plaintext[..], b"old");
    let r = e.kms.enable_key_version(&e.me, &key.id, &v1);
    assert!(matches!(r, Err(KmsError::IncorrectState(_))), "{r:?}");
}

#[test]
fn ciphertext_with_another_keys_id_is_rejected() {
    let e = env();
    let vault = e.vault("apps");
    let a = e.key(&vault, "a");
    let b = e.key(&vault, "b");
    let ct = e
        .kms
        .encrypt(&e.me, &a.id, b"for a only", &AssociatedData::none())
        .unwrap()
        .ciphertext;

    // Same-length ids, so the header stays well formed with only the key id replaced.
    assert_eq!(a.id.as_str().len(), b.id.as_str().len());
    let pos = ct
        .windows(a.id.as_str().len())
        .position(|w| w == a.id.as_str().as_bytes())
        .unwrap();
    let mut swapped = ct.clone();
    swapped[pos..pos + b.id.as_str().len()].copy_from_slice(b.id.as_str().as_bytes());
    assert_eq!(ciphertext::parse(&swapped).unwrap().key_id, b.id);
    let r = e.kms.decrypt(&e.me, &swapped, &AssociatedData::none(), None);
    assert!(is_invalid_ciphertext(&r), "key id swapped: {r:?}");

    // Swapping the version id as well (so both name b's real primary) still fails.
    let (av, bv) = (a.current_key_version.as_str(), b.current_key_version.as_str());
    assert_eq!(av.len(), bv.len());
    let vpos = swapped.windows(av.len()).position(|w| w == av.as_bytes()).unwrap();
    swapped[vpos..vpos + bv.len()].copy_from_slice(bv.as_bytes());
    let parsed = ciphertext::parse(&swapped).unwrap();
    assert_eq!(
        (parsed.key_id, parsed.key_version_id),
        (b.id.clone(), b.current_key_version.clone())
    );
    let r = e.kms.decrypt(&e.me, &swapped, &AssociatedData::none(), None);
    assert!(is_invalid_ciphertext(&r), "key and version ids swapped: {r:?}");

    // Asking for another key.
    let r = e.kms.decrypt(&e.me, &ct, &AssociatedData::none(), Some(&b.id));
    assert!(is_invalid_ciphertext(&r), "expected key b: {r:?}");
    let pt = e.kms.decrypt(&e.me, &ct, &AssociatedData::none(), Some(&a.id)).unwrap();
    assert_eq!(&pt.plaintext[..], b"for a only");
}

#[test]
fn ciphertext_naming_a_key_of_another_data_directory_is_rejected() {
    let e1 = env();
    let e2 = env();
    let (_, k1) = e1.vault_and_key();
    let _ = e2.vault_and_key();
    let ct = e1
        .kms
        .encrypt(&e1.me, &k1.id, b"elsewhere", &AssociatedData::none())
        .unwrap();
    let r = e2.kms.decrypt(&e2.me, &ct.ciphertext, &AssociatedData::none(), None);
    assert!(is_invalid_ciphertext(&r), "{r:?}");
}

/// A stand-in for a backend that may block (an HSM): it keeps the default placement.
#[derive(Debug)]
struct SlowBackend;

impl kms_core::protection::KeyProtection for SlowBackend {
    fn mode(&self) -> kms_core::ProtectionMode {
        kms_core::ProtectionMode::Hsm
    }
    fn create_material(&self, _version: &Ocid) -> Result<Vec<u8>, KmsError> {
        Ok(b"a handle".to_vec())
    }
    fn encrypt(&self, _: &Ocid, _: &[u8], _: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        Ok(plaintext.to_vec())
    }
    fn decrypt(&self, _: &Ocid, _: &[u8], _: &[u8], sealed: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, KmsError> {
        Ok(sealed.to_vec().into())
    }
    fn destroy(&self, _: &Ocid, _: &[u8]) -> Result<(), KmsError> {
        Ok(())
    }
}

#[test]
fn calls_run_inline_only_on_software_keys_while_the_audit_writer_runs() {
    use kms_core::Placement::{Blocking, Inline};
    let dir = tempfile::tempdir().unwrap();
    let mut kms = Kms::open(common::kms_config(dir.path())).unwrap();
    kms.register_protection(Arc::new(SlowBackend));
    let me = Principal::local_admin();
    let defaults = kms.ensure_defaults(&me).unwrap();
    let (vault, software) = (defaults.vault, defaults.key);
    let hsm = kms
        .create_key(
            &me,
            CreateKey {
                protection_mode: Some(kms_core::ProtectionMode::Hsm),
                ..CreateKey::new(vault.id.clone(), "hsm")
            },
        )
        .unwrap();
    let unknown = Ocid::generate(ResourceType::Key, "local-1");

    // Without the background writer, every crypto call writes its own audit entry.
    for key in [&software.id, &hsm.id, &unknown] {
        assert_eq!(kms.placement(key), Blocking, "{key}");
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| kms.run_audit_writer(&stop));
        while !kms.audit_writer_running() {
            std::thread::yield_now();
        }
        assert_eq!(kms.placement(&software.id), Inline);
        assert_eq!(KeyProvider::placement(&kms, &software.id), Inline);
        assert_eq!(kms.placement(&hsm.id), Blocking);
        // No such key: the call fails at once, wherever it runs.
        assert_eq!(kms.placement(&unknown), Inline);
        stop.store(true, std::sync::atomic::Ordering::Release);
        kms.wake_audit_writer();
        writer.join().unwrap().unwrap();
    });
    assert_eq!(kms.placement(&software.id), Blocking);
}
