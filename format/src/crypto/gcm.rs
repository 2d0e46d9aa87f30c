//! AES-256-GCM with detached tags, in place: the primitive under segmented object encryption.
//!
//! Callers supply the nonce because the object format derives it (prefix ‖ segment index ‖
//! last-segment flag); uniqueness per key is the format's job, which is why [`GcmKey`] is
//! built from a per-object derived key and never from a long-lived one.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use thiserror::Error;

/// Bytes in a GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes in a GCM nonce.
pub const NONCE_LEN: usize = 12;

/// Failures of AES-GCM.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GcmError {
    /// The ciphertext, tag, nonce or associated data was altered (or the key is wrong).
    #[error("authentication failed: data was altered or does not belong here")]
    Authentication,
    /// aws-lc refused the operation (input too long).
    #[error("AES-GCM operation refused")]
    Refused,
}

/// An AES-256-GCM key.
///
/// ```
/// use sealstore_format::crypto::gcm::{GcmKey, NONCE_LEN};
///
/// let key = GcmKey::new(&[0x42; 32]);
/// let nonce = [1u8; NONCE_LEN]; // never twice with the same key
/// let mut buf = b"attack at dawn".to_vec();
/// let tag = key.seal_in_place(nonce, b"header", &mut buf)?;
/// buf.extend_from_slice(&tag);
/// let len = key.open_in_place(nonce, b"header", &mut buf)?;
/// assert_eq!(&buf[..len], b"attack at dawn");
/// assert!(key.open_in_place(nonce, b"other header", &mut buf).is_err());
/// # Ok::<(), sealstore_format::crypto::gcm::GcmError>(())
/// ```
pub struct GcmKey(LessSafeKey);

impl std::fmt::Debug for GcmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GcmKey(<redacted>)")
    }
}

impl GcmKey {
    /// A key from 32 bytes.
    pub fn new(key: &[u8; 32]) -> Self {
        GcmKey(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key).expect("32-byte keys are valid for AES-256"),
        ))
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_in_place(&self, nonce: [u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], GcmError> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .map_err(|_| GcmError::Refused)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Encrypts `plaintext` into `out` (same length) and `tag`, leaving `plaintext` untouched:
    /// one pass over the data, no copy.
    pub(crate) fn seal_into(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), GcmError> {
        self.0
            .seal_out_of_place_scatter(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                plaintext,
                out,
                &[],
                tag,
            )
            .map_err(|_| GcmError::Refused)
    }

    /// Decrypts `ciphertext` with `tag` into `out` (same length), leaving the input untouched.
    /// On failure `out` holds no plaintext.
    pub(crate) fn open_into(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), GcmError> {
        self.0
            .open_separate_gather(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                ciphertext,
                tag,
                out,
            )
            .map_err(|_| {
                out.fill(0);
                GcmError::Authentication
            })
    }

    /// Decrypts `sealed` = ciphertext ‖ tag in place and returns the plaintext length (the
    /// plaintext is `sealed[..len]`). On failure nothing in `sealed` is plaintext.
    pub fn open_in_place(&self, nonce: [u8; NONCE_LEN], aad: &[u8], sealed: &mut [u8]) -> Result<usize, GcmError> {
        self.0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), sealed)
            .map(|plain| plain.len())
            .map_err(|_| GcmError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(key: &GcmKey, nonce: [u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        let tag = key.seal_in_place(nonce, aad, &mut buf).unwrap();
        buf.extend_from_slice(&tag);
        buf
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = GcmKey::new(&[7u8; 32]);
        let good = sealed(&key, [1; 12], b"hdr", b"segment data");
        let mut buf = good.clone();
        let n = key.open_in_place([1; 12], b"hdr", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"segment data");

        assert_eq!(
            key.open_in_place([2; 12], b"hdr", &mut good.clone()),
            Err(GcmError::Authentication)
        );
        assert_eq!(
            key.open_in_place([1; 12], b"hdX", &mut good.clone()),
            Err(GcmError::Authentication)
        );
        for bit in 0..good.len() * 8 {
            let mut flipped = good.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                key.open_in_place([1; 12], b"hdr", &mut flipped),
                Err(GcmError::Authentication),
                "bit {bit}"
            );
        }
        assert_eq!(
            key.open_in_place([1; 12], b"hdr", &mut good[..good.len() - 1].to_vec()),
            Err(GcmError::Authentication)
        );
    }

    /// NIST GCM test vector (gcmEncryptExtIV256, Count 0 with 128-bit plaintext).
    #[test]
    fn known_answer() {
        let hex = |s: &str| data_hex(s);
        let key: [u8; 32] = hex("31bdadd96698c204aa9ce1448ea94ae1fb4a9a0b3c9d773b51bb1822666b8f22")
            .try_into()
            .unwrap();
        let nonce: [u8; 12] = hex("0d18e06c7c725ac9e362e1ce").try_into().unwrap();
        let mut buf = hex("2db5168e932556f8089a0622981d017d");
        let tag = GcmKey::new(&key).seal_in_place(nonce, &[], &mut buf).unwrap();
        assert_eq!(buf, hex("fa4362189661d163fcd6a56d8bf0405a"));
        assert_eq!(tag.to_vec(), hex("d636ac1bbedd5cc3ee727dc2ab4a9489"));
    }

    fn data_hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
