//! The encrypted object header (spec: `docs/FORMATS.md`, "Encrypted object").
//!
//! [`ObjectHeader`] is the parsed form; [`ObjectHeader::encode`] and [`ObjectHeader::parse`]
//! follow the byte layout in the spec exactly. The associated data, the segment key and the
//! object identity are computed here too, so that there is one place that says what binds a
//! segment to its object.

use aws_lc_rs::digest::{Context, SHA256};
use aws_lc_rs::hkdf;
use thiserror::Error;

use crate::crypto::segment::{SegmentCipher, SegmentError, SegmentSize, NONCE_PREFIX_LEN};

/// First four bytes of every encrypted object.
pub const MAGIC: &[u8; 4] = b"SSOB";
/// The format version written and read here.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of the fixed part of the header (magic to nonce prefix).
const FIXED_LEN: usize = 57;
/// Header length without the wrapped DEK and metadata.
pub const MIN_HEADER_LEN: usize = 63;
/// Plaintext-length value meaning "not known when written".
const UNKNOWN_LEN: u64 = u64::MAX;
/// HKDF info string for the segment key.
const HKDF_INFO: &[u8] = b"sealstore object v1";

/// Errors reading an object's header.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FormatError {
    /// Not an encrypted object written by sealstore.
    #[error("not a sealstore encrypted object (bad magic)")]
    BadMagic,
    /// Written by a newer sealstore.
    #[error("unsupported object format version {0}")]
    UnsupportedVersion(u8),
    /// Reserved flags set.
    #[error("unsupported object flags {0:#04x}")]
    UnsupportedFlags(u8),
    /// The header is cut short.
    #[error("object header is truncated")]
    Truncated,
    /// A segment-level problem (bad segment size in the header).
    #[error(transparent)]
    Segment(#[from] SegmentError),
}

/// Who an object is: bucket, key and version id (`null` when unversioned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentity {
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Version id.
    pub version_id: String,
}

impl ObjectIdentity {
    /// An unversioned object.
    pub fn unversioned(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        ObjectIdentity {
            bucket: bucket.into(),
            key: key.into(),
            version_id: "null".into(),
        }
    }

    /// `bucket ‖ 0x00 ‖ key ‖ 0x00 ‖ version id`: the bytes bound into the object.
    pub fn to_bytes(&self) -> Vec<u8> {
        [
            self.bucket.as_bytes(),
            &[0],
            self.key.as_bytes(),
            &[0],
            self.version_id.as_bytes(),
        ]
        .concat()
    }
}

/// A parsed object header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHeader {
    /// Plaintext bytes per segment.
    pub segment_size: SegmentSize,
    /// Plaintext length, when the writer knew it up front.
    pub plain_len: Option<u64>,
    /// Per-object HKDF salt.
    pub salt: [u8; 32],
    /// Per-object nonce prefix.
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// The DEK wrapped by the KMS (a self-describing KMS ciphertext).
    pub wrapped_dek: Vec<u8>,
    /// Sealed metadata (may be empty).
    pub sealed_metadata: Vec<u8>,
}

impl ObjectHeader {
    /// A header with fresh random salt and nonce prefix.
    pub fn new(segment_size: SegmentSize, plain_len: Option<u64>, wrapped_dek: Vec<u8>) -> Self {
        let mut salt = [0u8; 32];
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        aws_lc_rs::rand::fill(&mut salt).expect("system random source failed");
        aws_lc_rs::rand::fill(&mut nonce_prefix).expect("system random source failed");
        ObjectHeader {
            segment_size,
            plain_len,
            salt,
            nonce_prefix,
            wrapped_dek,
            sealed_metadata: Vec::new(),
        }
    }

    fn fixed_part(&self) -> [u8; FIXED_LEN] {
        let mut out = [0u8; FIXED_LEN];
        out[0..4].copy_from_slice(MAGIC);
        out[4] = FORMAT_VERSION;
        out[5] = 0;
        out[6..10].copy_from_slice(&self.segment_size.get().to_be_bytes());
        out[10..18].copy_from_slice(&self.plain_len.unwrap_or(UNKNOWN_LEN).to_be_bytes());
        out[18..50].copy_from_slice(&self.salt);
        out[50..57].copy_from_slice(&self.nonce_prefix);
        out
    }

    /// Encoded length.
    pub fn len(&self) -> usize {
        MIN_HEADER_LEN + self.wrapped_dek.len() + self.sealed_metadata.len()
    }

    /// Never empty; present for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The header bytes as the spec lays them out.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&self.fixed_part());
        out.extend_from_slice(
            &u16::try_from(self.wrapped_dek.len())
                .expect("wrapped DEKs are small")
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.wrapped_dek);
        out.extend_from_slice(
            &u32::try_from(self.sealed_metadata.len())
                .expect("metadata is small")
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.sealed_metadata);
        out
    }

    /// Parses a header from the start of `bytes`; returns it and its length. `bytes` may hold
    /// more (the body) or, when it is too short, [`FormatError::Truncated`] says so; callers
    /// reading from a store fetch more and try again.
    pub fn parse(bytes: &[u8]) -> Result<(ObjectHeader, usize), FormatError> {
        if bytes.len() < 4 {
            return Err(FormatError::Truncated);
        }
        if &bytes[0..4] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        if bytes.len() < MIN_HEADER_LEN {
            return Err(FormatError::Truncated);
        }
        if bytes[4] != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(bytes[4]));
        }
        if bytes[5] != 0 {
            return Err(FormatError::UnsupportedFlags(bytes[5]));
        }
        let be32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let segment_size = SegmentSize::new(be32(6))?;
        let plain_len = u64::from_be_bytes(bytes[10..18].try_into().expect("8 bytes"));
        let w = u16::from_be_bytes(bytes[57..59].try_into().expect("2 bytes")) as usize;
        let z_at = 59 + w;
        if bytes.len() < z_at + 4 {
            return Err(FormatError::Truncated);
        }
        let z = be32(z_at) as usize;
        let end = z_at + 4 + z;
        if bytes.len() < end {
            return Err(FormatError::Truncated);
        }
        let header = ObjectHeader {
            segment_size,
            plain_len: (plain_len != UNKNOWN_LEN).then_some(plain_len),
            salt: bytes[18..50].try_into().expect("32 bytes"),
            nonce_prefix: bytes[50..57].try_into().expect("7 bytes"),
            wrapped_dek: bytes[59..59 + w].to_vec(),
            sealed_metadata: bytes[z_at + 4..end].to_vec(),
        };
        Ok((header, end))
    }

    /// `A` of the spec for `sealed_metadata` (pass an empty slice for `A'`).
    fn aad_with(&self, sealed_metadata: &[u8], identity: &ObjectIdentity) -> [u8; 32] {
        let mut ctx = Context::new(&SHA256);
        ctx.update(&self.fixed_part());
        ctx.update(
            &u32::try_from(sealed_metadata.len())
                .expect("metadata is small")
                .to_be_bytes(),
        );
        ctx.update(sealed_metadata);
        ctx.update(&identity.to_bytes());
        ctx.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
    }

    /// The segment cipher of this object, from its unwrapped DEK.
    pub fn cipher(&self, dek: &[u8; 32], identity: &ObjectIdentity) -> SegmentCipher {
        SegmentCipher::new(
            &segment_key(dek, &self.salt),
            self.nonce_prefix,
            self.aad_with(&self.sealed_metadata, identity),
            self.segment_size,
        )
    }

    /// Seals `metadata` into the header (before the header is written).
    pub fn seal_metadata(&mut self, dek: &[u8; 32], identity: &ObjectIdentity, metadata: &[u8]) {
        let aad = self.aad_with(&[], identity);
        self.sealed_metadata = self.cipher(dek, identity).seal_metadata(&aad, metadata);
    }

    /// Opens the sealed metadata (empty when there is none).
    pub fn open_metadata(&self, dek: &[u8; 32], identity: &ObjectIdentity) -> Result<Vec<u8>, SegmentError> {
        if self.sealed_metadata.is_empty() {
            return Ok(Vec::new());
        }
        self.cipher(dek, identity)
            .open_metadata(&self.aad_with(&[], identity), &self.sealed_metadata)
    }

    /// Plaintext length of an object whose sealed form is `total_len` bytes with this header.
    pub fn plain_len_of(&self, total_len: u64) -> Result<u64, FormatError> {
        let body = total_len.checked_sub(self.len() as u64).ok_or(FormatError::Truncated)?;
        Ok(self.segment_size.plain_len(body)?)
    }
}

/// `HKDF-SHA256(ikm = DEK, salt, info = "sealstore object v1")`, 32 bytes.
fn segment_key(dek: &[u8; 32], salt: &[u8; 32]) -> [u8; 32] {
    struct Len32;
    impl hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(dek);
    let mut out = [0u8; 32];
    prk.expand(&[HKDF_INFO], Len32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> ObjectHeader {
        ObjectHeader::new(SegmentSize::DEFAULT, Some(5), b"wrapped-dek".to_vec())
    }

    #[test]
    fn header_round_trips_with_trailing_body() {
        let mut h = header();
        let id = ObjectIdentity::unversioned("b", "k");
        h.seal_metadata(&[1; 32], &id, b"{}");
        let mut bytes = h.encode();
        assert_eq!(bytes.len(), h.len());
        bytes.extend_from_slice(b"body");
        let (parsed, len) = ObjectHeader::parse(&bytes).unwrap();
        assert_eq!(parsed, h);
        assert_eq!(len, h.len());
        assert_eq!(parsed.open_metadata(&[1; 32], &id).unwrap(), b"{}");
        for cut in 0..h.len() {
            assert!(ObjectHeader::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_header_field_is_bound_into_the_segments() {
        let id = ObjectIdentity::unversioned("b", "k");
        let h = header();
        let sealed = h.cipher(&[1; 32], &id).seal(0, b"hello", true).unwrap();
        assert_eq!(h.cipher(&[1; 32], &id).open(0, &sealed, true).unwrap(), b"hello");
        let encoded = h.encode();
        // Flip each byte of the fixed part and the metadata length: the segment must not open.
        for i in (4..FIXED_LEN).chain([encoded.len() - 1]) {
            let mut bytes = encoded.clone();
            bytes[i] ^= 0x01;
            if let Ok((edited, _)) = ObjectHeader::parse(&bytes) {
                assert!(edited.cipher(&[1; 32], &id).open(0, &sealed, true).is_err(), "byte {i}");
            }
        }
        // Another name, or another DEK, does not open it either.
        assert!(h
            .cipher(&[1; 32], &ObjectIdentity::unversioned("b", "k2"))
            .open(0, &sealed, true)
            .is_err());
        assert!(h.cipher(&[2; 32], &id).open(0, &sealed, true).is_err());
    }

    #[test]
    fn unknown_length_and_flags() {
        let h = ObjectHeader::new(SegmentSize::DEFAULT, None, vec![1]);
        let bytes = h.encode();
        assert_eq!(ObjectHeader::parse(&bytes).unwrap().0.plain_len, None);
        let mut flagged = bytes.clone();
        flagged[5] = 1;
        assert_eq!(ObjectHeader::parse(&flagged), Err(FormatError::UnsupportedFlags(1)));
        let mut v2 = bytes;
        v2[4] = 2;
        assert_eq!(ObjectHeader::parse(&v2), Err(FormatError::UnsupportedVersion(2)));
        assert_eq!(
            ObjectHeader::parse(b"XXXXrest-of-it............................................................"),
            Err(FormatError::BadMagic)
        );
    }
}
