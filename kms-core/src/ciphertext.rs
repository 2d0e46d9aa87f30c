//! The self-describing ciphertext format (spec: `docs/FORMATS.md`, "KMS ciphertext").
//!
//! ```text
//! magic        4 bytes   "SSKC"
//! version      1 byte    0x01
//! key id       1 byte length n, then n bytes (ASCII OCID)
//! version id   1 byte length m, then m bytes (ASCII OCID)
//! payload      the protection backend's output; SOFTWARE: nonce(12) ‖ body ‖ tag(16)
//! ```
//!
//! Everything before the payload is the *header*. The backend authenticates
//! `header ‖ caller AAD` as GCM associated data, so changing either id, the version byte or
//! the caller's associated data fails decryption.

use crate::error::{KmsError, Result};
use crate::ids::{Ocid, ResourceType};

/// First four bytes of every KMS ciphertext.
pub(crate) const MAGIC: &[u8; 4] = b"SSKC";
/// The format version this code writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 1;

/// A parsed ciphertext: which key version made it, the header bytes, and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ciphertext<'a> {
    /// Key that made it.
    pub key_id: Ocid,
    /// Key version that made it.
    pub key_version_id: Ocid,
    /// The encoded header (authenticated as associated data).
    pub header: &'a [u8],
    /// The protection backend's sealed payload.
    pub payload: &'a [u8],
}

/// Encodes the header for `key_id` / `key_version_id`.
pub fn encode_header(key_id: &Ocid, key_version_id: &Ocid) -> Vec<u8> {
    let (k, v) = (key_id.as_str().as_bytes(), key_version_id.as_str().as_bytes());
    let mut out = Vec::with_capacity(7 + k.len() + v.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    for id in [k, v] {
        // Ocid::parse/generate keep ids ≤ 255 bytes.
        out.push(u8::try_from(id.len()).expect("OCIDs are at most 255 bytes"));
        out.extend_from_slice(id);
    }
    out
}

/// The associated data handed to the backend: header, then the caller's associated data.
/// The header is self-delimiting, so the concatenation is unambiguous.
pub fn backend_aad(header: &[u8], caller_aad: &[u8]) -> Vec<u8> {
    [header, caller_aad].concat()
}

fn bad(msg: &str) -> KmsError {
    KmsError::InvalidCiphertext(msg.to_owned())
}

/// Parses a ciphertext; checks framing only (authenticity is the backend's job).
pub fn parse(bytes: &[u8]) -> Result<Ciphertext<'_>> {
    if bytes.len() < 5 || &bytes[..4] != MAGIC {
        return Err(bad("not a sealstore KMS ciphertext (bad magic)"));
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(KmsError::InvalidCiphertext(format!(
            "unsupported ciphertext format version {}",
            bytes[4]
        )));
    }
    let mut pos = 5;
    let mut ids = Vec::with_capacity(2);
    for (kind, what) in [
        (ResourceType::Key, "key id"),
        (ResourceType::KeyVersion, "key version id"),
    ] {
        let len = *bytes.get(pos).ok_or_else(|| bad("truncated header"))? as usize;
        let raw = bytes
            .get(pos + 1..pos + 1 + len)
            .ok_or_else(|| bad("truncated header"))?;
        let text = std::str::from_utf8(raw)
            .map_err(|_| KmsError::InvalidCiphertext(format!("{what} in header is not text")))?;
        ids.push(
            Ocid::parse(kind, text)
                .map_err(|_| KmsError::InvalidCiphertext(format!("{what} in header is malformed")))?,
        );
        pos += 1 + len;
    }
    let key_version_id = ids.pop().expect("two ids parsed");
    let key_id = ids.pop().expect("two ids parsed");
    let payload = &bytes[pos..];
    if payload.is_empty() {
        return Err(bad("ciphertext has a header but no payload"));
    }
    Ok(Ciphertext {
        key_id,
        key_version_id,
        header: &bytes[..pos],
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let k = Ocid::generate(ResourceType::Key, "r");
        let v = Ocid::generate(ResourceType::KeyVersion, "r");
        let mut bytes = encode_header(&k, &v);
        let header_len = bytes.len();
        bytes.extend_from_slice(b"payload");
        let ct = parse(&bytes).unwrap();
        assert_eq!((ct.key_id, ct.key_version_id), (k, v));
        assert_eq!(ct.header.len(), header_len);
        assert_eq!(ct.payload, b"payload");
    }

    #[test]
    fn framing_errors_are_reported() {
        assert!(parse(b"").is_err());
        assert!(parse(b"XXXX\x01").is_err());
        assert!(parse(b"SSKC\x02").is_err());
        assert!(parse(b"SSKC\x01\x10ocid1.key").is_err());
        let k = Ocid::generate(ResourceType::Key, "r");
        let v = Ocid::generate(ResourceType::KeyVersion, "r");
        assert!(parse(&encode_header(&k, &v)).is_err(), "no payload");
        // Ids in the wrong slots are rejected.
        assert!(parse(&[encode_header(&v, &k), b"p".to_vec()].concat()).is_err());
    }
}
