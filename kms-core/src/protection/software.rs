//! SOFTWARE protection: key material generated here and sealed at rest with AES-256-GCM under
//! the data directory's root key.
//!
//! The root key is a 32-byte file (`root.key`, mode 0600) created on first start, or supplied
//! with `--root-key-file`. Unsealed master keys live only in memory, inside aws-lc key
//! contexts, and are cached per version so that a crypto call costs one AES-GCM operation.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, RwLock};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

use super::{KeyProtection, Placement};
use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::ProtectionMode;

/// Length of every AES-256 key handled here.
pub const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Domain separation for sealed key material.
const MATERIAL_AAD_PREFIX: &[u8] = b"sealstore/key-material/v1:";
/// Sealed under the root key and kept in the store to detect a wrong root key early.
const ROOT_CHECK_AAD: &[u8] = b"sealstore/root-key-check/v1";

/// AES-256-GCM with a fresh random 96-bit nonce per call; output `nonce ‖ ciphertext ‖ tag`.
///
/// Random nonces are safe here: each key encrypts far fewer than 2^32 messages (keys are
/// rotated, and every call is a small payload or a DEK), the bound NIST SP 800-38D sets.
pub(crate) fn gcm_seal(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| KmsError::Protection("random source failed".into()))?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[NONCE_LEN..],
        )
        .map_err(|_| KmsError::Protection("AES-GCM seal failed".into()))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens [`gcm_seal`] output; any change to it or to `aad` fails.
pub(crate) fn gcm_open(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(KmsError::InvalidCiphertext("sealed payload is too short".into()));
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).expect("nonce slice has NONCE_LEN bytes");
    let mut buf = Zeroizing::new(body.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| {
            KmsError::InvalidCiphertext("authentication failed: the ciphertext or its associated data was altered, or it belongs to another key".into())
        })?
        .len();
    buf.truncate(len);
    Ok(buf)
}

fn aes_key(bytes: &[u8]) -> Result<LessSafeKey> {
    let unbound =
        UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KmsError::Protection("bad AES-256 key length".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// The key that seals SOFTWARE key material at rest.
pub struct RootKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootKey(<redacted>)")
    }
}

impl RootKey {
    /// Loads the root key from `path`, creating it (32 random bytes, mode 0600) if it does not
    /// exist. Refuses a file that other users can read, as ssh does for private keys.
    pub fn load_or_create(path: &Path) -> Result<RootKey> {
        match fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KmsError::RootKey(format!(
                        "{} has permissions {mode:o}; it must be readable by its owner only (chmod 600)",
                        path.display()
                    )));
                }
                let bytes =
                    Zeroizing::new(fs::read(path).map_err(|e| KmsError::io(format!("reading {}", path.display()), e))?);
                if bytes.len() != KEY_LEN {
                    return Err(KmsError::RootKey(format!(
                        "{} holds {} bytes; a root key is exactly {KEY_LEN} random bytes",
                        path.display(),
                        bytes.len()
                    )));
                }
                Ok(RootKey { key: aes_key(&bytes)? })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
                aws_lc_rs::rand::fill(bytes.as_mut())
                    .map_err(|_| KmsError::Protection("random source failed".into()))?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| KmsError::io(format!("creating {}", path.display()), e))?;
                file.write_all(bytes.as_ref())
                    .and_then(|_| file.sync_all())
                    .map_err(|e| KmsError::io(format!("writing {}", path.display()), e))?;
                Ok(RootKey {
                    key: aes_key(bytes.as_ref())?,
                })
            }
            Err(e) => Err(KmsError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// A value that only this root key opens; stored beside the keys it seals.
    pub fn check_value(&self) -> Result<Vec<u8>> {
        gcm_seal(&self.key, ROOT_CHECK_AAD, b"sealstore")
    }

    /// Confirms that `check` was made by this root key.
    pub fn verify_check_value(&self, check: &[u8]) -> Result<()> {
        gcm_open(&self.key, ROOT_CHECK_AAD, check).map(drop).map_err(|_| {
            KmsError::RootKey(
                "this root key did not create this data directory's keys; pass the original with --root-key-file"
                    .into(),
            )
        })
    }
}

/// The SOFTWARE protection backend.
#[derive(Debug)]
pub struct SoftwareProtection {
    root: RootKey,
    unsealed: RwLock<HashMap<Ocid, Arc<LessSafeKey>>>,
}

impl SoftwareProtection {
    /// A backend sealing material under `root`.
    pub fn new(root: RootKey) -> Self {
        SoftwareProtection {
            root,
            unsealed: RwLock::new(HashMap::new()),
        }
    }

    fn material_aad(version: &Ocid) -> Vec<u8> {
        [MATERIAL_AAD_PREFIX, version.as_str().as_bytes()].concat()
    }

    fn key_for(&self, version: &Ocid, stored: &[u8]) -> Result<Arc<LessSafeKey>> {
        if let Some(k) = self.unsealed.read().expect("cache lock poisoned").get(version) {
            return Ok(k.clone());
        }
        let raw = gcm_open(&self.root.key, &Self::material_aad(version), stored).map_err(|_| {
            KmsError::Protection(format!(
                "sealed material of key version {version} does not open under the root key"
            ))
        })?;
        let key = Arc::new(aes_key(&raw)?);
        self.unsealed
            .write()
            .expect("cache lock poisoned")
            .insert(version.clone(), key.clone());
        Ok(key)
    }
}

impl KeyProtection for SoftwareProtection {
    fn mode(&self) -> ProtectionMode {
        ProtectionMode::Software
    }

    /// Material unsealed once and cached: a crypto call is one AES-GCM operation.
    fn placement(&self) -> Placement {
        Placement::Inline
    }

    fn create_material(&self, version: &Ocid) -> Result<Vec<u8>> {
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(raw.as_mut()).map_err(|_| KmsError::Protection("random source failed".into()))?;
        gcm_seal(&self.root.key, &Self::material_aad(version), raw.as_ref())
    }

    fn encrypt(&self, version: &Ocid, stored: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        gcm_seal(&*self.key_for(version, stored)?, aad, plaintext)
    }

    fn decrypt(&self, version: &Ocid, stored: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        gcm_open(&*self.key_for(version, stored)?, aad, sealed)
    }

    fn destroy(&self, version: &Ocid, _stored: &[u8]) -> Result<()> {
        self.unsealed.write().expect("cache lock poisoned").remove(version);
        Ok(())
    }

    fn export_material(&self, version: &Ocid, stored: &[u8]) -> Result<super::ExportedMaterial> {
        let raw = gcm_open(&self.root.key, &Self::material_aad(version), stored).map_err(|_| {
            KmsError::Protection(format!(
                "sealed material of key version {version} does not open under the root key"
            ))
        })?;
        Ok(super::ExportedMaterial::Secret(raw))
    }

    fn import_material(&self, version: &Ocid, exported: &super::ExportedMaterial) -> Result<Vec<u8>> {
        match exported {
            super::ExportedMaterial::Secret(raw) if raw.len() == KEY_LEN => {
                gcm_seal(&self.root.key, &Self::material_aad(version), raw)
            }
            _ => Err(KmsError::InvalidParameter(format!(
                "replicated material of key version {version} is not a {KEY_LEN}-byte key"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ResourceType;

    #[test]
    fn root_key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let a = RootKey::load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let check = a.check_value().unwrap();
        let b = RootKey::load_or_create(&path).unwrap();
        b.verify_check_value(&check).unwrap();

        let other = RootKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(matches!(other.verify_check_value(&check), Err(KmsError::RootKey(_))));

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(RootKey::load_or_create(&path), Err(KmsError::RootKey(_))));
    }

    #[test]
    fn material_is_bound_to_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let sw = SoftwareProtection::new(RootKey::load_or_create(&dir.path().join("root.key")).unwrap());
        let v1 = Ocid::generate(ResourceType::KeyVersion, "t");
        let v2 = Ocid::generate(ResourceType::KeyVersion, "t");
        let m1 = sw.create_material(&v1).unwrap();
        let ct = sw.encrypt(&v1, &m1, b"aad", b"hello").unwrap();
        assert_eq!(&*sw.decrypt(&v1, &m1, b"aad", &ct).unwrap(), b"hello");
        assert!(sw.decrypt(&v1, &m1, b"other", &ct).is_err());
        // Material sealed for v1 cannot be passed off as v2's.
        assert!(sw.encrypt(&v2, &m1, b"", b"x").is_err());
    }
}
