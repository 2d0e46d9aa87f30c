//! This region's replication identity — an RSA-3072 signing key (its requests to peers) and
//! an RSA-3072 wrapping key (what peers wrap key material to, with RSA-OAEP-SHA256) — and the
//! wrapping of key material for a peer (spec: `docs/REPLICATION.md`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
    OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use zeroize::Zeroizing;

use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::replication::Region;
use crate::protection::software::{gcm_open, gcm_seal};

/// OAEP label prefix: wrapped material is bound to its version id.
const WRAP_LABEL: &str = "sealstore/replication/v1:";
/// File names of the replication identity in the data directory.
const SIGNING_KEY_FILE: &str = "replication-signing.key";
const WRAPPING_KEY_FILE: &str = "replication-wrapping.key";

fn load_or_create(path: &Path, make: impl FnOnce() -> Result<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(der) => return Ok(Zeroizing::new(der)),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(KmsError::io(format!("reading {}", path.display()), e))
        }
        Err(_) => {}
    }
    let der = Zeroizing::new(make()?);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| KmsError::io(format!("creating {}", path.display()), e))?;
    file.write_all(&der)
        .and_then(|()| file.sync_all())
        .map_err(|e| KmsError::io(format!("writing {}", path.display()), e))?;
    Ok(der)
}

pub(crate) fn crypto_failed(what: &str) -> KmsError {
    KmsError::Protection(format!("replication: {what}"))
}

/// This region's replication keys (made on first use, PKCS#8 files of mode 0600).
pub struct ReplicationIdentity {
    signing: RsaKeyPair,
    signing_pkcs8: Zeroizing<Vec<u8>>,
    wrapping: OaepPrivateDecryptingKey,
    wrapping_public: Vec<u8>,
}

impl std::fmt::Debug for ReplicationIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicationIdentity(<keys>)")
    }
}

impl ReplicationIdentity {
    /// The identity kept in `data_dir`.
    pub(crate) fn load_or_create(data_dir: &Path) -> Result<Self> {
        let signing_pkcs8 = load_or_create(&data_dir.join(SIGNING_KEY_FILE), || {
            let pair =
                aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa3072).map_err(|_| crypto_failed("key generation"))?;
            Ok(pair
                .as_der()
                .map_err(|_| crypto_failed("key encoding"))?
                .as_ref()
                .to_vec())
        })?;
        let wrapping_pkcs8 = load_or_create(&data_dir.join(WRAPPING_KEY_FILE), || {
            let key = PrivateDecryptingKey::generate(KeySize::Rsa3072).map_err(|_| crypto_failed("key generation"))?;
            Ok(key
                .as_der()
                .map_err(|_| crypto_failed("key encoding"))?
                .as_ref()
                .to_vec())
        })?;
        let signing = RsaKeyPair::from_pkcs8(&signing_pkcs8).map_err(|_| crypto_failed("unreadable signing key"))?;
        let wrapping_key =
            PrivateDecryptingKey::from_pkcs8(&wrapping_pkcs8).map_err(|_| crypto_failed("unreadable wrapping key"))?;
        let wrapping_public = wrapping_key
            .public_key()
            .as_der()
            .map_err(|_| crypto_failed("key encoding"))?
            .as_ref()
            .to_vec();
        Ok(ReplicationIdentity {
            signing,
            signing_pkcs8,
            wrapping: OaepPrivateDecryptingKey::new(wrapping_key).map_err(|_| crypto_failed("wrapping key"))?,
            wrapping_public,
        })
    }

    /// The signing key as PKCS#8 DER.
    pub fn signing_pkcs8(&self) -> &[u8] {
        &self.signing_pkcs8
    }

    /// The public keys to give peers: `(signing, wrapping)`, SubjectPublicKeyInfo DER.
    pub fn public_keys(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let spki = self
            .signing
            .public_key()
            .as_der()
            .map_err(|_| crypto_failed("key encoding"))?
            .as_ref()
            .to_vec();
        Ok((spki, self.wrapping_public.clone()))
    }

    /// Unwraps material wrapped for this region by [`wrap_for`], bound to `version`.
    pub(crate) fn unwrap(&self, version: &Ocid, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let label = format!("{WRAP_LABEL}{version}");
        let refused = || KmsError::InvalidCiphertext(format!("replicated material of {version} does not unwrap"));
        let modulus = self.wrapping.key_size_bytes();
        let (block, sealed) = wrapped.split_at(wrapped.len().min(modulus));
        let mut out = Zeroizing::new(vec![0u8; self.wrapping.min_output_size()]);
        let len = self
            .wrapping
            .decrypt(&OAEP_SHA256_MGF1SHA256, block, &mut out, Some(label.as_bytes()))
            .map_err(|_| refused())?
            .len();
        out.truncate(len);
        if sealed.is_empty() {
            return Ok(out);
        }
        // Hybrid form: the block held a one-time AES-256 key sealing the material.
        let key = UnboundKey::new(&AES_256_GCM, &out).map_err(|_| refused())?;
        gcm_open(&LessSafeKey::new(key), label.as_bytes(), sealed).map_err(|_| refused())
    }
}

/// Where the identity files are, for messages.
pub fn identity_files(data_dir: &Path) -> [PathBuf; 2] {
    [data_dir.join(SIGNING_KEY_FILE), data_dir.join(WRAPPING_KEY_FILE)]
}

/// Wraps `secret` (the material of `version`) for `region`: RSA-OAEP-SHA256 of the secret
/// itself when it fits one block (AES keys, as always), otherwise (RSA and ECDSA private keys)
/// RSA-OAEP-SHA256 of a one-time AES-256 key followed by AES-256-GCM of the secret under it,
/// both bound to the version by the same label.
pub(crate) fn wrap_for(region: &Region, version: &Ocid, secret: &[u8]) -> Result<Vec<u8>> {
    let der = B64
        .decode(&region.wrapping_key)
        .map_err(|_| KmsError::Store(format!("region {}: bad wrapping key", region.name)))?;
    let key = OaepPublicEncryptingKey::new(
        PublicEncryptingKey::from_der(&der)
            .map_err(|_| KmsError::Store(format!("region {}: bad wrapping key", region.name)))?,
    )
    .map_err(|_| crypto_failed("wrapping key"))?;
    let label = format!("{WRAP_LABEL}{version}");
    let oaep = |plaintext: &[u8]| -> Result<Vec<u8>> {
        let mut out = vec![0u8; key.ciphertext_size()];
        let len = key
            .encrypt(&OAEP_SHA256_MGF1SHA256, plaintext, &mut out, Some(label.as_bytes()))
            .map_err(|_| crypto_failed("wrapping failed"))?
            .len();
        out.truncate(len);
        Ok(out)
    };
    if secret.len() <= key.max_plaintext_size(&OAEP_SHA256_MGF1SHA256) {
        return oaep(secret);
    }
    let mut one_time = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(one_time.as_mut()).map_err(|_| crypto_failed("random source"))?;
    let sealer =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, one_time.as_ref()).map_err(|_| crypto_failed("AES key"))?);
    let mut out = oaep(one_time.as_ref())?;
    out.extend(gcm_seal(&sealer, label.as_bytes(), secret)?);
    Ok(out)
}

/// A region's public identity as `kms region identity` prints it and `kms region add
/// --public-key FILE` reads it: `{"region", "signingKey", "wrappingKey"}` (the keys are
/// SubjectPublicKeyInfo DER, base64).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedIdentity {
    /// The region's name.
    pub region: String,
    /// Its signing public key.
    pub signing_key: String,
    /// Its wrapping public key.
    pub wrapping_key: String,
}

/// Why a file is not a [`PublishedIdentity`].
#[derive(Debug, thiserror::Error)]
pub enum IdentityFileError {
    /// Neither the JSON nor the `field  value` lines of `kms region identity`.
    #[error(
        "expected what `sealstore kms region identity` prints on the peer: JSON {{\"region\": \"NAME\", \"signingKey\": \"BASE64\", \"wrappingKey\": \"BASE64\"}} ({0})"
    )]
    Unreadable(String),
}

impl PublishedIdentity {
    /// Reads the JSON `kms region identity` prints, or its `field  value` lines (what older
    /// versions printed without `--json`).
    pub fn parse(text: &str) -> std::result::Result<Self, IdentityFileError> {
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') {
            return serde_json::from_str(trimmed).map_err(|e| IdentityFileError::Unreadable(e.to_string()));
        }
        let field = |name: &str| {
            text.lines()
                .filter_map(|line| line.trim().split_once(char::is_whitespace))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.trim().to_owned())
                .ok_or_else(|| IdentityFileError::Unreadable(format!("no JSON, and no {name} line")))
        };
        Ok(PublishedIdentity {
            region: field("region")?,
            signing_key: field("signingKey")?,
            wrapping_key: field("wrappingKey")?,
        })
    }
}

#[cfg(test)]
mod published_identity_tests {
    use super::*;

    #[test]
    fn reads_the_json_and_the_field_lines_and_says_what_it_expects() {
        let id = PublishedIdentity {
            region: "r1".into(),
            signing_key: "U0lH".into(),
            wrapping_key: "V1JB".into(),
        };
        let json = serde_json::to_string_pretty(&id).unwrap();
        assert_eq!(PublishedIdentity::parse(&json).unwrap(), id);
        let lines = "region       r1\nsigningKey   U0lH\nwrappingKey  V1JB\n";
        assert_eq!(PublishedIdentity::parse(lines).unwrap(), id);
        let err = PublishedIdentity::parse("-----BEGIN PUBLIC KEY-----\nMIIB\n").unwrap_err();
        assert!(err.to_string().contains("sealstore kms region identity"), "{err}");
        assert!(err.to_string().contains("signingKey"), "{err}");
    }
}
