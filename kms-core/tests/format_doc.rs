//! Checks the code against the text of `docs/FORMATS.md`: the worked example's header bytes
//! must be what `ciphertext::encode_header` writes, and its full ciphertext must parse and
//! open with the associated data the spec describes.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use kms_core::ciphertext::{backend_aad, encode_header, parse};
use kms_core::{AssociatedData, Ocid, ResourceType};

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMATS.md")).expect("docs/FORMATS.md")
}

/// The hex after `label:` in the worked example, spaces removed.
/// A value may continue on following lines indented past the label.
fn field(doc: &str, label: &str) -> Vec<u8> {
    let mut lines = doc.lines().skip_while(|l| !l.starts_with(label));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no '{label}' line in FORMATS.md"));
    let mut hex: String = first[label.len()..].chars().filter(|c| !c.is_whitespace()).collect();
    for more in lines.take_while(|l| l.starts_with("            ")) {
        hex.extend(more.chars().filter(|c| !c.is_whitespace()));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn worked_example_matches_the_code() {
    let doc = doc();
    let key_id = Ocid::parse(ResourceType::Key, "ocid1.key.oc1.x.a").unwrap();
    let version_id = Ocid::parse(ResourceType::KeyVersion, "ocid1.keyversion.oc1.x.b").unwrap();
    let header = field(&doc, "header:");
    assert_eq!(
        encode_header(&key_id, &version_id),
        header,
        "header bytes differ from the spec"
    );

    let nonce: [u8; 12] = field(&doc, "nonce:").try_into().unwrap();
    let ciphertext = field(&doc, "ciphertext:");
    let parsed = parse(&ciphertext).expect("the example parses");
    assert_eq!(parsed.key_id, key_id);
    assert_eq!(parsed.key_version_id, version_id);
    assert_eq!(parsed.header, header.as_slice());
    assert_eq!(&parsed.payload[..12], &nonce, "payload starts with the nonce");
    assert_eq!(parsed.payload.len(), 12 + "hello".len() + 16);

    let material: Vec<u8> = (0u8..32).collect();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &material).unwrap());
    let aad = AssociatedData::from_json(r#"{"bucket":"photos"}"#).unwrap();
    let mut body = parsed.payload[12..].to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(backend_aad(&header, &aad.canonical_bytes())),
            &mut body,
        )
        .expect("the example opens with header ‖ canonical associated data");
    assert_eq!(plain, b"hello");
}
