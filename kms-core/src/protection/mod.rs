//! Key protection: where master key material lives and where it is used.
//!
//! Callers never see key material. They hand a backend the bytes it asked to have stored for
//! a key version (sealed material for SOFTWARE, an object reference for HSM, a key reference
//! for EXTERNAL) and get encrypt/decrypt results back. New modes slot in by implementing
//! [`KeyProtection`] and registering it with [`crate::Kms::register_protection`]; nothing
//! above this module changes.

pub mod hsm;
pub mod software;

use std::fmt::Debug;

use zeroize::Zeroizing;

use crate::error::Result;
use crate::ids::Ocid;
use crate::model::ProtectionMode;

/// One way of holding master key material.
pub trait KeyProtection: Send + Sync + Debug {
    /// The protection mode this backend implements.
    fn mode(&self) -> ProtectionMode;

    /// Creates fresh AES-256 material for `version` and returns the bytes the store must keep
    /// for it (never the plaintext key).
    fn create_material(&self, version: &Ocid) -> Result<Vec<u8>>;

    /// Encrypts `plaintext` under the version's key, binding `aad`. The output is opaque to
    /// callers and carries whatever the backend needs to decrypt it (nonce, tag).
    fn encrypt(&self, version: &Ocid, stored: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;

    /// Reverses [`KeyProtection::encrypt`]; fails on any alteration of `sealed` or `aad`.
    fn decrypt(&self, version: &Ocid, stored: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>>;

    /// Forgets the version's material (drops caches, destroys HSM objects). Called when the
    /// store deletes the material for good.
    fn destroy(&self, version: &Ocid, stored: &[u8]) -> Result<()>;
}
