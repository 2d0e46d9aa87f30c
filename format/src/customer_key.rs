//! Customer-provided keys (S3's SSE-C): the client sends a 256-bit key with every request;
//! sealstore uses it to wrap the object's data key and forgets it when the request ends.
//!
//! What is stored instead of a KMS ciphertext in the object header (spec: `docs/FORMATS.md`,
//! "Customer-wrapped data key") is the data key sealed under the customer key, and a *key
//! check*: an HMAC of the object identity keyed with the customer key. The key check lets
//! the server tell "wrong key" from "damaged object" (and answer HEAD without reading the
//! object) while revealing nothing about the key: without the key it cannot be computed, and
//! being bound to the identity it differs between objects even under one key.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hmac;
use kms_core::Dek;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::object::ObjectIdentity;

/// First four bytes of a customer-wrapped data key.
pub(crate) const MAGIC: &[u8; 4] = b"SSCK";
/// The version written and read here.
const VERSION: u8 = 1;
/// Length of a key check.
pub const KEY_CHECK_LEN: usize = 32;
/// Label HMAC-ed before the identity, so a key check is never a MAC of anything else.
const KEY_CHECK_LABEL: &[u8] = b"sealstore SSE-C key check v1\0";
/// Bytes before the sealed data key: magic, version, key check, nonce.
const PREFIX_LEN: usize = 4 + 1 + KEY_CHECK_LEN + NONCE_LEN;
/// Total length: prefix, sealed 32-byte key, tag.
pub const WRAPPED_LEN: usize = PREFIX_LEN + 32 + 16;

/// Problems with a customer key or a customer-wrapped data key.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CustomerKeyError {
    /// The key is not 256 bits.
    #[error("a customer-provided key must be 256 bits (32 bytes), not {0} bytes")]
    BadLength(usize),
    /// The key check does not match: another key was used for this object.
    #[error("the customer-provided key is not the one this object was encrypted with")]
    WrongKey,
    /// Not a customer-wrapped key, or damaged.
    #[error("the customer-wrapped data key is damaged or not in a known format")]
    Malformed,
    /// The random source failed.
    #[error("the system random source failed")]
    Random,
}

/// A 256-bit customer-provided key; zeroized on drop, never printed.
pub struct CustomerKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerKey(<redacted>)")
    }
}

impl CustomerKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CustomerKeyError> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| CustomerKeyError::BadLength(bytes.len()))?;
        Ok(CustomerKey(Zeroizing::new(key)))
    }

    /// `HMAC-SHA256(key, label ‖ identity)`: proves knowledge of the key for this object.
    pub fn key_check(&self, identity: &ObjectIdentity) -> [u8; KEY_CHECK_LEN] {
        let mac_key = hmac::Key::new(hmac::HMAC_SHA256, self.0.as_ref());
        let mut ctx = hmac::Context::with_key(&mac_key);
        ctx.update(KEY_CHECK_LABEL);
        ctx.update(&identity.to_bytes());
        ctx.sign().as_ref().try_into().expect("HMAC-SHA256 is 32 bytes")
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, self.0.as_ref()).expect("a 32-byte AES-256 key"))
    }

    /// Seals `dek` for the object `identity`.
    pub fn wrap(&self, dek: &Dek, identity: &ObjectIdentity) -> Result<Vec<u8>, CustomerKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CustomerKeyError::Random)?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.key_check(identity));
        out.extend_from_slice(&nonce);
        let aad = [&out[..], &identity.to_bytes()].concat();
        let mut sealed = dek.expose().to_vec();
        self.aead()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut sealed)
            .map_err(|_| CustomerKeyError::Malformed)?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a data key sealed by [`CustomerKey::wrap`] for `identity`.
    pub fn unwrap(&self, wrapped: &[u8], identity: &ObjectIdentity) -> Result<Dek, CustomerKeyError> {
        let stored_check = key_check_of(wrapped).ok_or(CustomerKeyError::Malformed)?;
        if wrapped.len() != WRAPPED_LEN {
            return Err(CustomerKeyError::Malformed);
        }
        if !constant_time_eq(&stored_check, &self.key_check(identity)) {
            return Err(CustomerKeyError::WrongKey);
        }
        let (prefix, sealed) = wrapped.split_at(PREFIX_LEN);
        let nonce: [u8; NONCE_LEN] = prefix[PREFIX_LEN - NONCE_LEN..].try_into().expect("nonce length");
        let aad = [prefix, &identity.to_bytes()].concat();
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .aead()
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
            .map_err(|_| CustomerKeyError::Malformed)?;
        Dek::from_slice(plain).map_err(|_| CustomerKeyError::Malformed)
    }

    /// Whether `check` (a stored key check) was made with this key for `identity`.
    pub fn matches(&self, check: &[u8], identity: &ObjectIdentity) -> bool {
        constant_time_eq(check, &self.key_check(identity))
    }
}

/// Whether a wrapped data key is customer-wrapped (rather than a KMS ciphertext).
pub fn is_customer_wrapped(wrapped: &[u8]) -> bool {
    wrapped.starts_with(MAGIC)
}

/// The key check stored in a customer-wrapped data key.
pub fn key_check_of(wrapped: &[u8]) -> Option<[u8; KEY_CHECK_LEN]> {
    if !is_customer_wrapped(wrapped) || wrapped.len() < PREFIX_LEN || wrapped[4] != VERSION {
        return None;
    }
    wrapped[5..5 + KEY_CHECK_LEN].try_into().ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str) -> ObjectIdentity {
        ObjectIdentity::unversioned("bucket", key)
    }

    #[test]
    fn wraps_and_unwraps_only_with_the_same_key_and_identity() {
        let key = CustomerKey::from_bytes(&[7u8; 32]).unwrap();
        let dek = Dek::generate().unwrap();
        let wrapped = key.wrap(&dek, &id("a")).unwrap();
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        assert_eq!(key.unwrap(&wrapped, &id("a")).unwrap().expose(), dek.expose());

        let other = CustomerKey::from_bytes(&[8u8; 32]).unwrap();
        assert_eq!(
            other.unwrap(&wrapped, &id("a")).unwrap_err(),
            CustomerKeyError::WrongKey
        );
        // Moved to another name: the key check no longer matches.
        assert_eq!(key.unwrap(&wrapped, &id("b")).unwrap_err(), CustomerKeyError::WrongKey);
        for i in [5 + KEY_CHECK_LEN, PREFIX_LEN, WRAPPED_LEN - 1] {
            let mut bad = wrapped.clone();
            bad[i] ^= 1;
            assert_eq!(key.unwrap(&bad, &id("a")).unwrap_err(), CustomerKeyError::Malformed);
        }
        assert_eq!(
            key.unwrap(&wrapped[..WRAPPED_LEN - 1], &id("a")).unwrap_err(),
            CustomerKeyError::Malformed
        );
    }

    #[test]
    fn key_checks_differ_per_object_and_key() {
        let key = CustomerKey::from_bytes(&[7u8; 32]).unwrap();
        assert_ne!(key.key_check(&id("a")), key.key_check(&id("b")));
        let other = CustomerKey::from_bytes(&[8u8; 32]).unwrap();
        assert_ne!(key.key_check(&id("a")), other.key_check(&id("a")));
        assert!(key.matches(&key.key_check(&id("a")), &id("a")));
        assert_eq!(
            CustomerKey::from_bytes(&[0; 16]).unwrap_err(),
            CustomerKeyError::BadLength(16)
        );
    }
}
