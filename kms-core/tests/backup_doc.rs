//! Checks the code against the text of `docs/KMS_BACKUP.md`: the constants it names are the
//! code's, and its worked example opens with the root key and payload it states, parses into
//! the header fields it shows, and is refused when any byte changes.

use kms_core::internals::backup_format::{
    self as format, BackupKeyring, AAD_PREFIX, DEPLOYMENT_INFO, EXTRACT_SALT, FILE_KEY_INFO, MAGIC, SALT_LEN, SEPARATOR,
};
use kms_core::BackupKind;

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/KMS_BACKUP.md")).expect("docs/KMS_BACKUP.md")
}

/// The worked example: the fenced block after "## Worked example".
fn example(doc: &str) -> String {
    let section = &doc[doc.find("## Worked example").expect("worked example")..];
    let start = section.find("```\n").expect("example block") + 4;
    let end = start + section[start..].find("```").expect("block end");
    section[start..end].to_owned()
}

#[test]
fn the_doc_names_the_code_constants() {
    let doc = doc();
    for (what, value) in [
        ("first line", format!("\n{MAGIC}\n")),
        ("separator", format!("\n{SEPARATOR}\n")),
        (
            "extract salt",
            format!("salt = \"{}\"", std::str::from_utf8(EXTRACT_SALT).unwrap()),
        ),
        (
            "deployment info",
            format!("info = \"{}\"", std::str::from_utf8(DEPLOYMENT_INFO).unwrap()),
        ),
        (
            "file key info",
            format!(
                "info = \"{}\" ‖ 0x00 ‖ salt",
                std::str::from_utf8(FILE_KEY_INFO.strip_suffix(b"\0").unwrap()).unwrap()
            ),
        ),
        (
            "AAD",
            format!(
                "AAD        = \"{}\" ‖ 0x00 ‖ header",
                std::str::from_utf8(AAD_PREFIX.strip_suffix(b"\0").unwrap()).unwrap()
            ),
        ),
        ("salt length", format!("salt` is {SALT_LEN} fresh random bytes")),
    ] {
        assert!(doc.contains(&value), "KMS_BACKUP.md does not say the {what}: {value}");
    }
}

#[test]
fn worked_example_opens_as_the_doc_says() {
    let doc = doc();
    let text = example(&doc);
    let root: Vec<u8> = (0u8..32).collect();
    let keyring = BackupKeyring::from_root_secret(&root).unwrap();
    assert!(doc.contains(&format!("Deployment id: `{}`", keyring.deployment())));
    let (header, payload) = keyring.open(text.as_bytes()).expect("the worked example opens");
    assert_eq!(&payload[..], br#"{"region":"local-1","keys":[]}"#);
    assert!(doc.contains("Payload (30\nbytes"), "payload length stated");
    assert_eq!(payload.len(), 30);
    assert_eq!(header.kind, BackupKind::Vault);
    assert_eq!(header.resource, "ocid1.vault.oc1.local-1.amaaaaaaexample");
    assert_eq!(header.deployment, keyring.deployment());
    assert_eq!(header.created.to_string(), "2026-12-07T14:45:20.123Z");
    // The header the doc describes is the text through "---\n", and the file is its
    // canonical form.
    assert!(text.starts_with(&header.to_text()));
    let (parsed, body) = format::parse(text.as_bytes()).unwrap();
    assert_eq!(parsed, header);
    assert_eq!(body.len(), 12 + 30 + 16, "nonce ‖ ciphertext ‖ tag");
    // "Any altered byte is refused."
    for i in 0..text.len() {
        let mut altered = text.clone().into_bytes();
        altered[i] ^= 1;
        let err = keyring.open(&altered).unwrap_err().to_string();
        assert!(
            err.contains("backup rejected, nothing was restored:"),
            "byte {i}: {err}"
        );
    }
}
