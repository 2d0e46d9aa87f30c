//! Key protection: where master key material lives and where it is used.
//!
//! Callers never see key material. They hand a backend the bytes it asked to have stored for
//! a key version (sealed material for SOFTWARE, an object reference for HSM, a key reference
//! for EXTERNAL) and get encrypt/decrypt results back. New modes slot in by implementing
//! [`KeyProtection`] and registering it with [`crate::Kms::register_protection`]; nothing
//! above this module changes.

mod der;
pub mod hsm;
pub(crate) mod imported;
pub(crate) mod software;

use std::fmt::Debug;

use zeroize::Zeroizing;

use serde::{Deserialize, Serialize};

use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::{ExternalKeyManager, KeySpec, ProtectionMode, RsaEncryption, SigningAlgorithm};

/// Where a key call may run, as its key provider says (see [`crate::KeyProvider::placement`] and
/// [`KeyProtection::placement`]).
///
/// kms-core knows what a call on a key costs — its protection mode, whether its audit entry
/// only joins a queue — so it decides; an async caller (sealstore's key service) only follows
/// the answer, running the call on its own thread or on one that may block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In-process and short (a key lookup, a few microseconds of AES, a queued audit entry):
    /// cheaper on the calling thread, an async worker included, than a hop to another.
    Inline,
    /// May wait — on an HSM, on the network (an EXTERNAL key, a remote KMS), on a store write
    /// with fsync: only for a thread that may block.
    Blocking,
}

/// One way of holding master key material.
pub trait KeyProtection: Send + Sync + Debug {
    /// The protection mode this backend implements.
    fn mode(&self) -> ProtectionMode;

    /// Whether [`KeyProtection::encrypt`] and [`KeyProtection::decrypt`] only use the CPU
    /// ([`Placement::Inline`]) or may wait on a device or the network
    /// ([`Placement::Blocking`], the default).
    fn placement(&self) -> Placement {
        Placement::Blocking
    }

    /// Creates fresh AES-256 material for `version` and returns the bytes the store must keep
    /// for it (never the plaintext key).
    fn create_material(&self, version: &Ocid) -> Result<Vec<u8>>;

    /// Creates fresh material of shape `spec` for `version`. The default (EXTERNAL's) makes
    /// AES-256 keys with [`KeyProtection::create_material`] and refuses every other shape.
    fn create_material_for(&self, version: &Ocid, spec: KeySpec) -> Result<NewMaterial> {
        if spec != KeySpec::AES_256 {
            return Err(KmsError::InvalidParameter(format!(
                "{} keys are AES-256 only, as in OCI; {spec} keys need protectionMode SOFTWARE or HSM",
                self.mode().as_str()
            )));
        }
        Ok(NewMaterial {
            stored: self.create_material(version)?,
            public_key_der: None,
        })
    }

    /// Signs `digest` (already the algorithm's hash of the message) with the version's private
    /// key. Backends without asymmetric keys refuse.
    fn sign(&self, version: &Ocid, stored: &[u8], algorithm: SigningAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        let _ = (version, stored, digest);
        Err(KmsError::InvalidParameter(format!(
            "{} keys cannot sign ({})",
            self.mode().as_str(),
            algorithm.as_str()
        )))
    }

    /// Verifies `signature` over `digest` with the version's public key inside the backend.
    /// Only for what the software verifier cannot check (RSA signatures with SHA-224): every
    /// other signature is verified with the public key the version shows. The default refuses.
    fn verify(
        &self,
        version: &Ocid,
        stored: &[u8],
        algorithm: SigningAlgorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        let _ = (version, stored, digest, signature);
        Err(unsupported_rsa(algorithm))
    }

    /// Decrypts an RSA-OAEP `ciphertext` with the version's private key.
    fn rsa_decrypt(
        &self,
        version: &Ocid,
        stored: &[u8],
        algorithm: RsaEncryption,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let _ = (version, stored, ciphertext);
        Err(KmsError::InvalidParameter(format!(
            "{} keys cannot decrypt {}",
            self.mode().as_str(),
            algorithm.as_str()
        )))
    }

    /// Encrypts `plaintext` under the version's key, binding `aad`. The output is opaque to
    /// callers and carries whatever the backend needs to decrypt it (nonce, tag).
    fn encrypt(&self, version: &Ocid, stored: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;

    /// Reverses [`KeyProtection::encrypt`]; fails on any alteration of `sealed` or `aad`.
    fn decrypt(&self, version: &Ocid, stored: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>>;

    /// Forgets the version's material (drops caches, destroys HSM objects). Called when the
    /// store deletes the material for good.
    fn destroy(&self, version: &Ocid, stored: &[u8]) -> Result<()>;

    /// Replication: the version's material in a form another region can import (the caller
    /// wraps secrets for the destination). Modes whose material cannot leave refuse.
    fn export_material(&self, version: &Ocid, stored: &[u8]) -> Result<ExportedMaterial> {
        let _ = (version, stored);
        Err(KmsError::InvalidParameter(format!(
            "{} key material cannot leave its protection boundary; such keys are not replicated",
            self.mode().as_str()
        )))
    }

    /// What to store for material from outside: another region's export (replication) or
    /// the key owner's own, unwrapped and checked against the key's shape (bring your own key).
    fn import_material(&self, version: &Ocid, exported: &ExportedMaterial) -> Result<Vec<u8>> {
        let _ = (version, exported);
        Err(KmsError::InvalidParameter(format!(
            "{} key material cannot be imported",
            self.mode().as_str()
        )))
    }

    /// Backup: the version's material as a backup holds it (sealed for the backup by the
    /// caller). By default what [`KeyProtection::export_material`] gives; modes whose material
    /// cannot leave override it with a reference.
    fn backup_material(&self, version: &Ocid, stored: &[u8]) -> Result<ExportedMaterial> {
        self.export_material(version, stored)
    }

    /// Restore: what to store for material a backup held (see
    /// [`KeyProtection::backup_material`]). By default [`KeyProtection::import_material`].
    fn restore_material(&self, version: &Ocid, backed_up: &ExportedMaterial) -> Result<Vec<u8>> {
        self.import_material(version, backed_up)
    }

    /// EXTERNAL protection only: the state of `key_id` in the key manager of `manager`, which
    /// is where its versions are made.
    fn external_key(&self, manager: &ExternalKeyManager, key_id: &str) -> Result<ExternalKeyState> {
        let _ = (manager, key_id);
        Err(KmsError::InvalidParameter(format!(
            "{} protection has no external key manager",
            self.mode().as_str()
        )))
    }
}

/// The refusal of an RSA algorithm aws-lc-rs cannot sign or verify (SHA-224), for keys whose
/// backend cannot either (HSM keys can).
pub(crate) fn unsupported_rsa(algorithm: SigningAlgorithm) -> KmsError {
    KmsError::InvalidParameter(format!(
        "signingAlgorithm {} is not supported by sealstore for SOFTWARE keys: its crypto library (aws-lc-rs) has no SHA-224 RSA signatures; use SHA-256, SHA-384 or SHA-512, or an HSM key",
        algorithm.as_str()
    ))
}

/// A SubjectPublicKeyInfo DER as PEM (`-----BEGIN PUBLIC KEY-----`, 64-column base64), as
/// OCI's `publicKey` carries it (and `sealstore iam user add --public-key` reads it).
///
/// ```
/// use kms_core::protection::{public_key_der, public_key_pem};
///
/// let der = [0x30, 0x03, 0x02, 0x01, 0x05]; // any DER; normally a key's SubjectPublicKeyInfo
/// let pem = public_key_pem(&der);
/// assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
/// assert_eq!(public_key_der(&pem)?, der);
/// # Ok::<(), kms_core::KmsError>(())
/// ```
pub fn public_key_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// The DER inside a [`public_key_pem`] PEM.
pub fn public_key_der(pem: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| KmsError::Store("a stored public key is not PEM".into()))
}

/// What [`KeyProtection::create_material_for`] made.
pub struct NewMaterial {
    /// The bytes the store keeps for the version (never a plaintext secret).
    pub stored: Vec<u8>,
    /// RSA and ECDSA: the public key, SubjectPublicKeyInfo DER.
    pub public_key_der: Option<Vec<u8>>,
}

/// Material on its way to another region (see [`KeyProtection::export_material`]).
pub enum ExportedMaterial {
    /// Key bytes: wrapped for the destination before they leave.
    Secret(Zeroizing<Vec<u8>>),
    /// A reference (EXTERNAL keys): not secret.
    Reference(Vec<u8>),
}

/// What an external key manager reports about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalKeyState {
    /// Whether the key may be used.
    pub enabled: bool,
    /// The version new data is encrypted under.
    pub current_version_id: String,
    /// Its enabled versions, oldest first.
    pub version_ids: Vec<String>,
}

/// What the store keeps for a version of an EXTERNAL key: where it is, never key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalVersionRef {
    /// The key manager's base URL.
    pub endpoint: String,
    /// The key's id there.
    pub key_id: String,
    /// The version's id there.
    pub version_id: String,
}

impl ExternalVersionRef {
    /// The bytes stored as the version's "material".
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reference serializes")
    }

    /// Reads what `ExternalVersionRef::to_bytes` wrote.
    pub fn from_bytes(stored: &[u8]) -> Result<Self> {
        serde_json::from_slice(stored)
            .map_err(|e| KmsError::Protection(format!("unreadable external key reference: {e}")))
    }
}
