//! The S3 admin key pair: created on the first start, kept 0600 in the data directory
//! (`s3-admin.json`), printed by `serve`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// File holding the admin key pair.
pub const ADMIN_KEYS_FILE: &str = "s3-admin.json";

/// An access key and its secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPair {
    /// Access key id (public).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

fn random_text(alphabet: &[u8], len: usize) -> String {
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut bytes).expect("system random source failed");
    // 256 is a multiple of neither alphabet; the bias of `% len` is below 1/256 per character
    // and irrelevant for 160+ bits of secret.
    bytes
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect()
}

/// Loads the admin key pair, creating it on first use. Returns it and whether it was created.
pub fn load_or_create(data_dir: &Path) -> std::io::Result<(KeyPair, bool)> {
    let path = data_dir.join(ADMIN_KEYS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok((serde_json::from_slice(&bytes).map_err(std::io::Error::other)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pair = KeyPair {
                access_key_id: format!("SS{}", random_text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 18)),
                secret_access_key: random_text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 40),
            };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(&serde_json::to_vec_pretty(&pair).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            Ok((pair, true))
        }
        Err(e) => Err(e),
    }
}

/// SigV4 authentication against the admin key pair: an unknown access key is
/// `InvalidAccessKeyId`, a wrong secret `SignatureDoesNotMatch` (s3s checks the signature).
#[derive(Debug)]
pub struct AdminAuth {
    keys: KeyPair,
}

impl AdminAuth {
    /// Authenticates requests signed with `keys`.
    pub fn new(keys: KeyPair) -> Self {
        AdminAuth { keys }
    }
}

#[async_trait::async_trait]
impl s3s::auth::S3Auth for AdminAuth {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        if access_key == self.keys.access_key_id {
            Ok(s3s::auth::SecretKey::from(self.keys.secret_access_key.as_str()))
        } else {
            Err(s3s::s3_error!(
                InvalidAccessKeyId,
                "the access key id does not exist in our records"
            ))
        }
    }
}
