//! The backup file: text, sealed with AES-256-GCM under a key derived from the data
//! directory's root key (spec: `docs/KMS_BACKUP.md`, which this file follows byte for byte).
//!
//! ```text
//! sealstore-kms-backup v1
//! kind: key
//! resource: ocid1.key.…
//! deployment: 0123456789abcdef
//! created: 2026-12-07T14:45:20.123Z
//! salt: <base64 of 32 random bytes>
//! ---
//! <base64 of nonce (12) ‖ ciphertext ‖ tag (16)>
//! ```
//!
//! Every line ends with `\n` (no `\r`: the `oci` CLI reads key backups in text mode). The
//! header, from its first byte through `---\n`, is the AES-GCM associated data behind the
//! prefix [`AAD_PREFIX`]; the key is HKDF-SHA256-Expand of the root key's backup PRK with
//! [`FILE_KEY_INFO`] ‖ salt. A file is accepted only if it is exactly what `BackupKeyring::seal` writes for
//! the fields it parses into (no other spacing, line break or base64 spelling) and the tag
//! verifies: any altered, added or removed byte is refused.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf::{KeyType, Prk, Salt, HKDF_SHA256};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use zeroize::Zeroizing;

use crate::error::{KmsError, Result};
use crate::time::Timestamp;

/// The first line.
pub const MAGIC: &str = "sealstore-kms-backup v1";
/// The line that ends the header.
pub const SEPARATOR: &str = "---";
/// HKDF-Extract salt that turns the root key into the backup PRK.
pub const EXTRACT_SALT: &[u8] = b"sealstore/kms-backup/v1";
/// HKDF-Expand info prefix of a file's key (followed by the file's 32-byte salt).
pub const FILE_KEY_INFO: &[u8] = b"sealstore/kms-backup/v1/file-key\0";
/// HKDF-Expand info of the deployment id (8 bytes, written as 16 lowercase hex digits).
pub const DEPLOYMENT_INFO: &[u8] = b"sealstore/kms-backup/v1/deployment-id";
/// Prefix of the associated data (followed by the header bytes).
pub const AAD_PREFIX: &[u8] = b"sealstore/kms-backup/v1\0";
/// Length of the per-file salt.
pub const SALT_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// What a backup holds: one key, or a vault (with its keys or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    /// `kind: key`
    Key,
    /// `kind: vault`
    Vault,
}

impl BackupKind {
    /// The header spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BackupKind::Key => "key",
            BackupKind::Vault => "vault",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "key" => Some(BackupKind::Key),
            "vault" => Some(BackupKind::Vault),
            _ => None,
        }
    }
}

/// The header fields of a backup (authenticated, not secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Key or vault.
    pub kind: BackupKind,
    /// The id of the key or vault backed up.
    pub resource: String,
    /// 16 hex digits naming the root key that made it.
    pub deployment: String,
    /// When it was made.
    pub created: Timestamp,
    /// The per-file HKDF salt.
    pub salt: [u8; SALT_LEN],
}

impl Header {
    /// The header's exact bytes, through the separator line.
    pub fn to_text(&self) -> String {
        format!(
            "{MAGIC}\nkind: {}\nresource: {}\ndeployment: {}\ncreated: {}\nsalt: {}\n{SEPARATOR}\n",
            self.kind.as_str(),
            self.resource,
            self.deployment,
            self.created,
            B64.encode(self.salt)
        )
    }
}

/// HKDF output length.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The keys of backups, derived from the root key: only the deployment holding that root key
/// makes or opens them.
#[derive(Clone)]
pub struct BackupKeyring {
    prk: Prk,
    deployment: String,
}

impl std::fmt::Debug for BackupKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupKeyring")
            .field("deployment", &self.deployment)
            .finish_non_exhaustive()
    }
}

impl BackupKeyring {
    /// Derives the keyring from the root key's bytes: PRK = HKDF-SHA256-Extract(salt
    /// [`EXTRACT_SALT`], root key).
    pub fn from_root_secret(root: &[u8]) -> Result<Self> {
        let prk = Salt::new(HKDF_SHA256, EXTRACT_SALT).extract(root);
        let mut id = [0u8; 8];
        prk.expand(&[DEPLOYMENT_INFO], Len(id.len()))
            .and_then(|okm| okm.fill(&mut id))
            .map_err(|_| KmsError::Protection("HKDF failed".into()))?;
        Ok(BackupKeyring {
            prk,
            deployment: data_encoding::HEXLOWER.encode(&id),
        })
    }

    /// This deployment's id, as backup headers name it.
    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    fn file_key(&self, salt: &[u8; SALT_LEN]) -> Result<LessSafeKey> {
        let mut key = Zeroizing::new([0u8; 32]);
        self.prk
            .expand(&[FILE_KEY_INFO, salt], Len(32))
            .and_then(|okm| okm.fill(key.as_mut()))
            .map_err(|_| KmsError::Protection("HKDF failed".into()))?;
        let unbound =
            UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| KmsError::Protection("AES key".into()))?;
        Ok(LessSafeKey::new(unbound))
    }

    /// Seals `payload` into a backup file of `kind` for `resource`.
    pub(crate) fn seal(&self, kind: BackupKind, resource: &str, created: Timestamp, payload: &[u8]) -> Result<String> {
        let random = |buf: &mut [u8]| {
            aws_lc_rs::rand::fill(buf).map_err(|_| KmsError::Protection("random source failed".into()))
        };
        let mut salt = [0u8; SALT_LEN];
        random(&mut salt)?;
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let header = Header {
            kind,
            resource: resource.to_owned(),
            deployment: self.deployment.clone(),
            created,
            salt,
        }
        .to_text();
        let aad = [AAD_PREFIX, header.as_bytes()].concat();
        let mut body = Vec::with_capacity(NONCE_LEN + payload.len() + TAG_LEN);
        body.extend_from_slice(&nonce);
        body.extend_from_slice(payload);
        let tag = self
            .file_key(&salt)?
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut body[NONCE_LEN..],
            )
            .map_err(|_| KmsError::Protection("AES-GCM seal failed".into()))?;
        body.extend_from_slice(tag.as_ref());
        Ok(format!("{header}{}\n", B64.encode(&body)))
    }

    /// Checks a backup file and returns its header and payload; refuses (as an invalid
    /// parameter, a 400) anything `BackupKeyring::seal` of this deployment did not write.
    pub fn open(&self, file: &[u8]) -> Result<(Header, Zeroizing<Vec<u8>>)> {
        let (header, body) = parse(file)?;
        if header.deployment != self.deployment {
            return Err(rejected(format!(
                "it was made by another sealstore deployment (deployment {}, this one is {}): only the data directory whose root key made a backup can restore it",
                header.deployment, self.deployment
            )));
        }
        let aad = [AAD_PREFIX, header.to_text().as_bytes()].concat();
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("NONCE_LEN bytes");
        let mut buf = Zeroizing::new(sealed.to_vec());
        let len = self
            .file_key(&header.salt)?
            .open_in_place(nonce, Aad::from(&aad), &mut buf)
            .map_err(|_| rejected("its authentication tag does not verify: it was altered or truncated".into()))?
            .len();
        buf.truncate(len);
        Ok((header, buf))
    }
}

fn rejected(why: String) -> KmsError {
    KmsError::InvalidParameter(format!("backup rejected, nothing was restored: {why}"))
}

/// Splits a file into its header and sealed body, refusing anything that is not exactly what
/// `BackupKeyring::seal` writes.
pub fn parse(file: &[u8]) -> Result<(Header, Vec<u8>)> {
    let malformed = |what: &str| {
        rejected(format!(
            "it is not a sealstore KMS backup, or it was altered or truncated ({what})"
        ))
    };
    let text = std::str::from_utf8(file).map_err(|_| malformed("not UTF-8 text"))?;
    let mut lines = text.split('\n');
    if lines.next() != Some(MAGIC) {
        return Err(malformed("first line"));
    }
    let mut next_field = |name: &str| -> Result<&str> {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|l| l.strip_prefix(": "))
            .ok_or_else(|| malformed(&format!("no '{name}' line where expected")))
    };
    let kind = BackupKind::parse(next_field("kind")?).ok_or_else(|| malformed("kind"))?;
    let resource = next_field("resource")?.to_owned();
    let deployment = next_field("deployment")?.to_owned();
    let created = Timestamp::parse(next_field("created")?).map_err(|_| malformed("created"))?;
    let salt: [u8; SALT_LEN] = B64
        .decode(next_field("salt")?)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| malformed("salt"))?;
    if lines.next() != Some(SEPARATOR) {
        return Err(malformed("header end"));
    }
    let body_line = lines.next().ok_or_else(|| malformed("no body"))?;
    if lines.next() != Some("") || lines.next().is_some() {
        return Err(malformed("text after the body"));
    }
    let body = B64.decode(body_line).map_err(|_| malformed("body is not base64"))?;
    let header = Header {
        kind,
        resource,
        deployment,
        created,
        salt,
    };
    // Only the canonical spelling of these fields is accepted.
    let canonical = format!("{}{}\n", header.to_text(), B64.encode(&body));
    if canonical.as_bytes() != file {
        return Err(malformed("not in canonical form"));
    }
    if body.len() < NONCE_LEN + TAG_LEN {
        return Err(malformed("body too short"));
    }
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(seed: u8) -> BackupKeyring {
        BackupKeyring::from_root_secret(&[seed; 32]).unwrap()
    }

    fn sample(k: &BackupKeyring) -> String {
        k.seal(
            BackupKind::Key,
            "ocid1.key.oc1.local-1.abc",
            Timestamp::from_unix_millis(1_796_000_000_123),
            br#"{"secret":"material"}"#,
        )
        .unwrap()
    }

    #[test]
    fn round_trip_is_text_and_opens() {
        let k = keyring(7);
        let file = sample(&k);
        assert!(file.is_ascii() && !file.contains('\r') && file.ends_with('\n'));
        assert!(file.starts_with("sealstore-kms-backup v1\nkind: key\nresource: ocid1.key.oc1.local-1.abc\n"));
        let (header, payload) = k.open(file.as_bytes()).unwrap();
        assert_eq!(&payload[..], br#"{"secret":"material"}"#);
        assert_eq!(header.kind, BackupKind::Key);
        assert_eq!(header.deployment, k.deployment());
        assert_eq!(header.created, Timestamp::from_unix_millis(1_796_000_000_123));
        // Fresh salt and nonce each time.
        assert_ne!(sample(&k), file);
    }

    #[test]
    fn every_altered_byte_is_refused() {
        let k = keyring(7);
        let file = sample(&k).into_bytes();
        for i in 0..file.len() {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut altered = file.clone();
                altered[i] ^= flip;
                let err = k.open(&altered).unwrap_err();
                assert!(
                    matches!(&err, KmsError::InvalidParameter(m) if m.starts_with("backup rejected")),
                    "byte {i} ^ {flip:#x}: {err}"
                );
            }
        }
    }

    #[test]
    fn truncated_or_extended_files_are_refused() {
        let k = keyring(7);
        let file = sample(&k).into_bytes();
        for len in 0..file.len() {
            assert!(k.open(&file[..len]).is_err(), "truncated to {len}");
        }
        for extra in [&b"\n"[..], b" ", b"A", b"\r\n"] {
            assert!(k.open(&[&file[..], extra].concat()).is_err());
        }
        // Windows line ends are not ours.
        let crlf = String::from_utf8(file).unwrap().replace('\n', "\r\n");
        assert!(k.open(crlf.as_bytes()).is_err());
    }

    #[test]
    fn another_deployment_cannot_open_it() {
        let (mine, theirs) = (keyring(7), keyring(8));
        assert_ne!(mine.deployment(), theirs.deployment());
        let err = theirs.open(sample(&mine).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("another sealstore deployment"), "{err}");
        // Even with the deployment line rewritten, the key does not fit.
        let forged = sample(&mine).replace(mine.deployment(), theirs.deployment());
        let err = theirs.open(forged.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
    }
}
