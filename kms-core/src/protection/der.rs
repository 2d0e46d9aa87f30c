//! The few fixed DER structures a PKCS#11 token needs around its raw outputs: no cryptography,
//! only encoding.
//!
//! - [`ecdsa_signature`]: a token's `CKM_ECDSA` signature is `r ‖ s` (each as long as the
//!   curve's order); OCI, openssl and python `cryptography` expect DER `SEQUENCE { r, s }`.
//! - [`ec_point`]: `CKA_EC_POINT` is the uncompressed point inside a DER OCTET STRING
//!   (PKCS#11 v2.40; some tokens give the bare point).
//! - [`curve_params`]: `CKA_EC_PARAMS`, the named curve's OID.
//! - [`digest_info_prefix`]: the DER `DigestInfo` header `CKM_RSA_PKCS` signs in front of a
//!   digest (RFC 8017 §9.2, note 1).

use crate::model::{Curve, HashAlg};

/// DER tags used here.
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OBJECT_IDENTIFIER: u8 = 0x06;
const SEQUENCE: u8 = 0x30;

/// Appends a DER length.
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Appends an unsigned big-endian number as a DER INTEGER: leading zeros dropped, one zero
/// byte put back when the top bit is set (DER INTEGERs are signed), zero as `02 01 00`.
fn push_unsigned_integer(out: &mut Vec<u8>, be: &[u8]) {
    let trimmed = &be[be.iter().take_while(|b| **b == 0).count()..];
    let pad = trimmed.first().is_none_or(|b| b & 0x80 != 0);
    out.push(INTEGER);
    push_len(out, trimmed.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` from a raw `r ‖ s` signature (two halves of equal
/// length, as PKCS#11 `CKM_ECDSA` returns). `None` for an odd or empty input.
pub(crate) fn ecdsa_signature(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = Vec::with_capacity(raw.len() + 8);
    push_unsigned_integer(&mut body, r);
    push_unsigned_integer(&mut body, s);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(SEQUENCE);
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    Some(out)
}

/// Reads one DER element with tag `tag` that fills `der` exactly; its contents.
fn single(der: &[u8], tag: u8) -> Option<&[u8]> {
    let (&first, rest) = der.split_first()?;
    if first != tag {
        return None;
    }
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 2 || rest.len() < n {
            return None;
        }
        let (len, rest) = rest.split_at(n);
        (len.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), rest)
    };
    (rest.len() == len).then_some(rest)
}

/// The uncompressed point (`04 ‖ x ‖ y`) of a `CKA_EC_POINT` on `curve`: the contents of its
/// DER OCTET STRING, or the value itself when a token gives the bare point.
pub(crate) fn ec_point(curve: Curve, value: &[u8]) -> Option<&[u8]> {
    let point_len = 1 + 2 * curve.key_len() as usize;
    if value.len() == point_len && value[0] == 0x04 {
        return Some(value);
    }
    single(value, OCTET_STRING).filter(|p| p.len() == point_len && p[0] == 0x04)
}

/// `CKA_EC_POINT` for an uncompressed point: its DER OCTET STRING (PKCS#11 §2.3.3).
pub(crate) fn ec_point_attribute(point: &[u8]) -> Vec<u8> {
    let mut out = vec![OCTET_STRING];
    push_len(&mut out, point.len());
    out.extend_from_slice(point);
    out
}

/// `CKA_EC_PARAMS` of `curve`: DER OBJECT IDENTIFIER of the named curve (RFC 5480 §2.1.1.1).
pub(crate) fn curve_params(curve: Curve) -> &'static [u8] {
    match curve {
        // 1.2.840.10045.3.1.7 (secp256r1)
        Curve::P256 => &[OBJECT_IDENTIFIER, 8, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        // 1.3.132.0.34 (secp384r1)
        Curve::P384 => &[OBJECT_IDENTIFIER, 5, 0x2b, 0x81, 0x04, 0x00, 0x22],
        // 1.3.132.0.35 (secp521r1)
        Curve::P521 => &[OBJECT_IDENTIFIER, 5, 0x2b, 0x81, 0x04, 0x00, 0x23],
    }
}

/// The curve whose [`curve_params`] `params` are.
pub(crate) fn curve_of_params(params: &[u8]) -> Option<Curve> {
    [Curve::P256, Curve::P384, Curve::P521]
        .into_iter()
        .find(|c| curve_params(*c) == params)
}

/// The DER `DigestInfo` up to the digest's bytes, for RSASSA-PKCS1-v1_5 with `hash`
/// (RFC 8017 §9.2, note 1; SHA-224 from RFC 4055's OID 2.16.840.1.101.3.4.2.4).
pub(crate) fn digest_info_prefix(hash: HashAlg) -> &'static [u8] {
    match hash {
        HashAlg::Sha224 => &[
            0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04,
            0x1c,
        ],
        HashAlg::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
            0x20,
        ],
        HashAlg::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04,
            0x30,
        ],
        HashAlg::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04,
            0x40,
        ],
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::digest;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED_SIGNING,
        ECDSA_P521_SHA512_ASN1, ECDSA_P521_SHA512_FIXED_SIGNING,
    };

    use super::*;

    #[test]
    fn integers_are_minimal_and_positive() {
        let der = |r: &[u8], s: &[u8]| ecdsa_signature(&[r, s].concat()).unwrap();
        // Leading zeros go, a set top bit gets one zero byte back, zero stays one byte.
        assert_eq!(
            der(&[0, 0, 0x12, 0x34], &[0x80, 0, 0, 1]),
            [0x30, 0x0b, 0x02, 0x02, 0x12, 0x34, 0x02, 0x05, 0x00, 0x80, 0, 0, 1]
        );
        assert_eq!(
            der(&[0, 0], &[0, 0x7f]),
            [0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x7f]
        );
        assert!(ecdsa_signature(&[1, 2, 3]).is_none());
        assert!(ecdsa_signature(&[]).is_none());
    }

    #[test]
    fn long_signatures_use_long_form_lengths() {
        // P-521: two 66-byte halves with the top bit set make a 138-byte body.
        let raw = [0xff; 132];
        let der = ecdsa_signature(&raw).unwrap();
        assert_eq!(&der[..3], &[0x30, 0x81, 138]);
        assert_eq!(&der[3..6], &[0x02, 67, 0x00]);
        assert_eq!(der.len(), 3 + 138);
    }

    /// aws-lc's fixed-length (`r ‖ s`) signatures, converted here, verify as ASN.1 ones: the
    /// conversion is what a token's output needs.
    #[test]
    fn converted_fixed_signatures_verify_as_der() {
        let rng = SystemRandom::new();
        for _ in 0..32 {
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
            let fixed = pair.sign(&rng, b"message").unwrap();
            let der = ecdsa_signature(fixed.as_ref()).unwrap();
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, pair.public_key().as_ref())
                .verify(b"message", &der)
                .unwrap();
        }
        let pair = EcdsaKeyPair::generate(&ECDSA_P521_SHA512_FIXED_SIGNING).unwrap();
        let fixed = pair.sign(&rng, b"message").unwrap();
        assert_eq!(fixed.as_ref().len(), 132);
        UnparsedPublicKey::new(&ECDSA_P521_SHA512_ASN1, pair.public_key().as_ref())
            .verify(b"message", &ecdsa_signature(fixed.as_ref()).unwrap())
            .unwrap();
    }

    #[test]
    fn ec_points_in_and_out_of_their_octet_string() {
        let point = [[0x04].as_slice(), &[7; 64]].concat();
        let wrapped = [[OCTET_STRING, 65].as_slice(), &point].concat();
        assert_eq!(ec_point(Curve::P256, &wrapped), Some(point.as_slice()));
        assert_eq!(ec_point(Curve::P256, &point), Some(point.as_slice()));
        assert_eq!(ec_point(Curve::P384, &wrapped), None);
        // P-521: 133 bytes, a long-form length.
        let point = [[0x04].as_slice(), &[9; 132]].concat();
        let wrapped = [[OCTET_STRING, 0x81, 133].as_slice(), &point].concat();
        assert_eq!(ec_point(Curve::P521, &wrapped), Some(point.as_slice()));
        assert_eq!(ec_point(Curve::P521, &wrapped[..wrapped.len() - 1]), None);
    }

    #[test]
    fn curve_params_round_trip() {
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            assert_eq!(curve_of_params(curve_params(curve)), Some(curve));
        }
        assert_eq!(curve_of_params(&[OBJECT_IDENTIFIER, 1, 0]), None);
    }

    #[test]
    fn digest_info_prefixes_announce_their_digest() {
        for (hash, alg) in [
            (HashAlg::Sha224, &digest::SHA224),
            (HashAlg::Sha256, &digest::SHA256),
            (HashAlg::Sha384, &digest::SHA384),
            (HashAlg::Sha512, &digest::SHA512),
        ] {
            let prefix = digest_info_prefix(hash);
            let n = alg.output_len();
            // SEQUENCE length covers the rest; the OCTET STRING holds exactly the digest.
            assert_eq!(usize::from(prefix[1]), prefix.len() - 2 + n);
            assert_eq!(&prefix[prefix.len() - 2..], &[OCTET_STRING, n as u8]);
        }
    }
}
