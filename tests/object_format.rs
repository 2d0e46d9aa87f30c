//! Property tests of the encrypted object format against its specification
//! (`docs/FORMATS.md`, "Encrypted object (format version 1)").
//!
//! The writer and reader below put a whole object together exactly as the spec describes it,
//! from the library's building blocks: `ObjectHeader::new`, optionally `seal_metadata`, then
//! `encode() ‖ cipher().seal(0, plaintext, true)`; the reader parses the header, derives the
//! plaintext length from the sealed length, unwraps the DEK, opens the metadata and the body.
//!
//! The DEK is wrapped by a stand-in for the KMS (AES-256-GCM under a fixed master key with the
//! object identity as associated data, framed with a short header), so that a flipped byte in
//! the wrapped DEK is detected the way the real store detects it: the unwrap fails. Tests that
//! need to bypass the unwrap pass the DEK to the reader directly.
//!
//! Segment size 4096 keeps most cases fast; a few use `SegmentSize::DEFAULT`.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use aws_lc_rs::{digest, hmac};
use proptest::prelude::*;
use proptest::test_runner::Config;
use sealstore::crypto::segment::{SegmentError, SegmentSize};
use sealstore_format::object::{FormatError, ObjectHeader, ObjectIdentity, FORMAT_VERSION, MAGIC, MIN_HEADER_LEN};

/// Segment size of most tests.
const S: usize = 4096;
/// Sealed segment size of most tests.
const SS: usize = S + TAG;
/// GCM tag length.
const TAG: usize = 16;
/// Offset of the wrapped DEK in the header.
const WRAPPED_AT: usize = 59;

fn small() -> SegmentSize {
    SegmentSize::new(S as u32).unwrap()
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).unwrap();
    out
}

/// Deterministic pseudo-random plaintext (splitmix64), so proptest failures reproduce.
fn plaintext(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn identity() -> ObjectIdentity {
    ObjectIdentity {
        bucket: "photos".into(),
        key: "2024/summer/beach.jpg".into(),
        version_id: "v-0001".into(),
    }
}

const METADATA: &[u8] = br#"{"contentType":"image/jpeg","userMetadata":{"camera":"x100","note":"caf\u00e9"}}"#;

// ---------------------------------------------------------------------------------------------
// KMS stand-in: wraps a DEK under a master key with the object identity as associated data.
// ---------------------------------------------------------------------------------------------

const MASTER_KEY: [u8; 32] = [0x42; 32];
const WRAP_HEADER: &[u8] = b"SSKC\x01test-master-key";

fn wrap_dek(dek: &[u8; 32], identity: &ObjectIdentity) -> Vec<u8> {
    let nonce: [u8; 12] = random();
    let aad = [WRAP_HEADER, &identity.to_bytes()[..]].concat();
    let sealed = Aes256Gcm::new_from_slice(&MASTER_KEY)
        .unwrap()
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: dek, aad: &aad })
        .unwrap();
    [WRAP_HEADER, &nonce[..], &sealed[..]].concat()
}

fn unwrap_dek(wrapped: &[u8], identity: &ObjectIdentity) -> Option<[u8; 32]> {
    let rest = wrapped.strip_prefix(WRAP_HEADER)?;
    if rest.len() < 12 {
        return None;
    }
    let (nonce, sealed) = rest.split_at(12);
    let aad = [WRAP_HEADER, &identity.to_bytes()[..]].concat();
    let dek = Aes256Gcm::new_from_slice(&MASTER_KEY)
        .unwrap()
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &aad })
        .ok()?;
    dek.try_into().ok()
}

// ---------------------------------------------------------------------------------------------
// Writer and reader.
// ---------------------------------------------------------------------------------------------

/// A sealed object and what went into it.
struct Object {
    bytes: Vec<u8>,
    header: ObjectHeader,
    dek: [u8; 32],
    identity: ObjectIdentity,
    plaintext: Vec<u8>,
}

impl Object {
    fn header_len(&self) -> usize {
        self.header.len()
    }

    fn body(&self) -> &[u8] {
        &self.bytes[self.header_len()..]
    }

    fn sealed_segment_len(&self) -> usize {
        self.header.segment_size.get() as usize + TAG
    }

    /// The sealed segments of the body.
    fn segments(&self) -> Vec<&[u8]> {
        self.body().chunks(self.sealed_segment_len()).collect()
    }

    /// Header followed by the given segments.
    fn with_segments(&self, segments: &[&[u8]]) -> Vec<u8> {
        let mut out = self.bytes[..self.header_len()].to_vec();
        for s in segments {
            out.extend_from_slice(s);
        }
        out
    }
}

/// Seals `plaintext` under `header` (its metadata sealed first when given), as the spec says.
fn seal_with(
    mut header: ObjectHeader,
    dek: [u8; 32],
    identity: &ObjectIdentity,
    plaintext: &[u8],
    metadata: Option<&[u8]>,
) -> Object {
    if let Some(json) = metadata {
        header.seal_metadata(&dek, identity, json);
    }
    let mut bytes = header.encode();
    assert_eq!(bytes.len(), header.len());
    bytes.extend(header.cipher(&dek, identity).seal(0, plaintext, true).unwrap());
    Object {
        bytes,
        header,
        dek,
        identity: identity.clone(),
        plaintext: plaintext.to_vec(),
    }
}

/// A fresh object: new DEK, wrapped for `identity`, fresh header.
fn seal(size: SegmentSize, identity: &ObjectIdentity, plaintext: &[u8], metadata: Option<&[u8]>) -> Object {
    let dek = random();
    let header = ObjectHeader::new(size, Some(plaintext.len() as u64), wrap_dek(&dek, identity));
    seal_with(header, dek, identity, plaintext, metadata)
}

/// Why a read failed.
#[derive(Debug)]
enum ReadError {
    /// `ObjectHeader::parse` or `plain_len_of` refused the bytes.
    Format(FormatError),
    /// The wrapped DEK did not unwrap for this identity.
    Unwrap,
    /// The sealed metadata did not open.
    Metadata(SegmentError),
    /// The body did not open.
    Body(SegmentError),
    /// The body opened but its length is not what the header declares.
    DeclaredLength { declared: u64, actual: u64 },
}

/// A successfully read object.
#[derive(Debug)]
struct Read {
    header: ObjectHeader,
    plain_len: u64,
    metadata: Vec<u8>,
    plaintext: Vec<u8>,
}

/// Reads a whole object: parse, size, unwrap (unless `dek` is given), metadata, body. The
/// declared plaintext length is compared last, so that edits of it must be caught by the
/// cryptography before that check.
fn read(bytes: &[u8], identity: &ObjectIdentity, dek: Option<&[u8; 32]>) -> Result<Read, ReadError> {
    let (header, header_len) = ObjectHeader::parse(bytes).map_err(ReadError::Format)?;
    assert_eq!(header_len, header.len(), "parse returns the header's own length");
    let plain_len = header.plain_len_of(bytes.len() as u64).map_err(ReadError::Format)?;
    let dek = match dek {
        Some(dek) => *dek,
        None => unwrap_dek(&header.wrapped_dek, identity).ok_or(ReadError::Unwrap)?,
    };
    let metadata = header.open_metadata(&dek, identity).map_err(ReadError::Metadata)?;
    let plaintext = header
        .cipher(&dek, identity)
        .open(0, &bytes[header_len..], true)
        .map_err(ReadError::Body)?;
    assert_eq!(
        plaintext.len() as u64,
        plain_len,
        "plain_len_of agrees with what the body opened to"
    );
    if let Some(declared) = header.plain_len {
        if declared != plain_len {
            return Err(ReadError::DeclaredLength {
                declared,
                actual: plain_len,
            });
        }
    }
    Ok(Read {
        header,
        plain_len,
        metadata,
        plaintext,
    })
}

/// Asserts that reading `bytes` fails, and returns the error.
#[track_caller]
fn rejected(bytes: &[u8], identity: &ObjectIdentity, dek: Option<&[u8; 32]>, what: &str) -> ReadError {
    match read(bytes, identity, dek) {
        Ok(r) => panic!(
            "{what}: tampered object was accepted ({} plaintext bytes)",
            r.plaintext.len()
        ),
        Err(e) => e,
    }
}

/// Checks everything a round trip promises about `obj`.
fn check_round_trip(obj: &Object, metadata: Option<&[u8]>) {
    let s = obj.header.segment_size.get() as u64;
    let p = obj.plaintext.len() as u64;
    let n = p.div_ceil(s).max(1);
    let w = obj.header.wrapped_dek.len() as u64;
    let z = obj.header.sealed_metadata.len() as u64;
    assert_eq!(z, metadata.map_or(0, |m| m.len() as u64 + TAG as u64), "z");
    assert_eq!(obj.bytes.len() as u64, 63 + w + z + p + 16 * n, "sealed size formula");
    assert_eq!(MIN_HEADER_LEN, 63);

    let r = read(&obj.bytes, &obj.identity, None).expect("round trip");
    assert_eq!(r.plaintext, obj.plaintext);
    assert_eq!(r.plain_len, p);
    assert_eq!(r.header, obj.header);
    assert_eq!(r.header.plain_len, Some(p));
    assert_eq!(r.metadata, metadata.unwrap_or_default());
    assert_eq!(obj.header.plain_len_of(obj.bytes.len() as u64).unwrap(), p);
    assert_eq!(obj.segments().len() as u64, n);
}

// ---------------------------------------------------------------------------------------------
// 1. Round trips and sizes.
// ---------------------------------------------------------------------------------------------

#[test]
fn round_trip_at_segment_edges() {
    for size in [small(), SegmentSize::DEFAULT] {
        let s = size.get() as usize;
        for len in [0, 1, s - 1, s, s + 1, 3 * s, 3 * s + 7] {
            for metadata in [None, Some(METADATA), Some(&b""[..])] {
                let plain = plaintext(len, len as u64);
                let obj = seal(size, &identity(), &plain, metadata);
                check_round_trip(&obj, metadata);
            }
        }
    }
}

#[test]
fn plain_len_of_accepts_exactly_the_sizes_writers_produce() {
    let obj = seal(small(), &identity(), b"", Some(METADATA));
    let h = obj.header_len() as u64;
    let mut valid = std::collections::BTreeMap::new();
    for p in 0..=(4 * S as u64) {
        let n = p.div_ceil(S as u64).max(1);
        valid.insert(p + 16 * n, p);
    }
    for body in 0..=(4 * SS as u64) {
        let got = obj.header.plain_len_of(h + body).ok();
        assert_eq!(got, valid.get(&body).copied(), "body of {body} bytes");
    }
    for total in 0..h {
        assert!(
            obj.header.plain_len_of(total).is_err(),
            "total {total} is shorter than the header"
        );
    }
}

proptest! {
    #![proptest_config(Config { cases: 32, ..Config::default() })]

    #[test]
    fn round_trip_random_sizes(len in 0usize..=(3 << 20), seed: u64, with_metadata: bool, default_size in proptest::bool::weighted(0.25)) {
        let size = if default_size { SegmentSize::DEFAULT } else { small() };
        let metadata = with_metadata.then_some(METADATA);
        let obj = seal(size, &identity(), &plaintext(len, seed), metadata);
        check_round_trip(&obj, metadata);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Ranged reads.
// ---------------------------------------------------------------------------------------------

/// Reads plaintext bytes `x..=y` of `obj` fetching only the segments that cover them, the way
/// the spec describes ranged reads.
fn ranged_read(obj: &Object, x: usize, y: usize) -> Result<Vec<u8>, SegmentError> {
    let h = obj.header_len();
    let total = obj.bytes.len() as u64;
    let (header, header_len) = ObjectHeader::parse(&obj.bytes[..h]).unwrap();
    assert_eq!(header_len, h);
    let size = header.segment_size;
    let s = size.get() as usize;
    let plain_len = header.plain_len_of(total).unwrap();
    let n = size.segment_count(plain_len);
    let (first, last) = (x / s, y / s);
    let start = h + size.sealed_offset(first as u64) as usize;
    assert_eq!(start, h + first * (s + TAG));
    let end = (h + (last + 1) * (s + TAG)).min(obj.bytes.len());
    let ends_object = last as u64 + 1 == n;
    let opened = header
        .cipher(&obj.dek, &obj.identity)
        .open(first as u64, &obj.bytes[start..end], ends_object)?;
    Ok(opened[x - first * s..=y - first * s].to_vec())
}

proptest! {
    #![proptest_config(Config { cases: 64, ..Config::default() })]

    #[test]
    fn ranged_reads_fetch_only_the_covering_segments(
        len in 1usize..=(24 * S),
        seed: u64,
        ranges in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..8),
    ) {
        let plain = plaintext(len, seed);
        let obj = seal(small(), &identity(), &plain, Some(METADATA));
        let n = len.div_ceil(S);
        let cipher = obj.header.cipher(&obj.dek, &obj.identity);
        for (a, b) in ranges {
            let (a, b) = (a.index(len), b.index(len));
            let (x, y) = (a.min(b), a.max(b));
            prop_assert_eq!(ranged_read(&obj, x, y).unwrap(), &plain[x..=y], "range {}..={}", x, y);

            let (first, last) = (x / S, y / S);
            let start = obj.header_len() + first * SS;
            let end = (obj.header_len() + (last + 1) * SS).min(obj.bytes.len());
            let fetched = &obj.bytes[start..end];
            if last + 1 < n {
                // A middle range claimed to end the object: its last segment was not sealed last.
                prop_assert!(cipher.open(first as u64, fetched, true).is_err(), "middle {}..={} as last", first, last);
            } else if fetched.len().is_multiple_of(SS) {
                // The range that ends the object, claimed not to.
                prop_assert!(cipher.open(first as u64, fetched, false).is_err(), "tail {}..={} as middle", first, last);
            }
            // Opened at the wrong index.
            prop_assert!(cipher.open(first as u64 + 1, fetched, last + 1 == n).is_err());
            if first > 0 {
                prop_assert!(cipher.open(first as u64 - 1, fetched, last + 1 == n).is_err());
            }
        }
    }
}

#[test]
fn ranged_reads_with_the_default_segment_size() {
    let size = SegmentSize::DEFAULT;
    let s = size.get() as usize;
    let plain = plaintext(5 * s + 123, 7);
    let obj = seal(size, &identity(), &plain, None);
    let len = plain.len();
    for (x, y) in [
        (0, 0),
        (0, len - 1),
        (s - 1, s),
        (s, 2 * s - 1),
        (2 * s + 5, 4 * s + 9),
        (5 * s, len - 1),
        (len - 1, len - 1),
    ] {
        assert_eq!(ranged_read(&obj, x, y).unwrap(), &plain[x..=y], "range {x}..={y}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Tampering.
// ---------------------------------------------------------------------------------------------

/// Flips `mask` into byte `at` of `obj` and checks the read fails, and fails where it should:
/// magic, version and flags in `parse`, the wrapped DEK in the unwrap, the authenticated header
/// fields and the body in the cryptography.
#[track_caller]
fn check_flip(obj: &Object, at: usize, mask: u8) {
    assert_ne!(mask, 0);
    let mut bytes = obj.bytes.clone();
    bytes[at] ^= mask;
    let what = format!(
        "byte {at} ^ {mask:#04x} of {} (header {})",
        bytes.len(),
        obj.header_len()
    );
    let err = rejected(&bytes, &obj.identity, None, &what);
    let h = obj.header_len();
    let w = obj.header.wrapped_dek.len();
    let z_at = WRAPPED_AT + w;
    match at {
        0..=3 => assert!(
            matches!(err, ReadError::Format(FormatError::BadMagic)),
            "{what}: {err:?}"
        ),
        4 => assert!(
            matches!(err, ReadError::Format(FormatError::UnsupportedVersion(v)) if v == FORMAT_VERSION ^ mask),
            "{what}: {err:?}"
        ),
        5 => assert!(
            matches!(err, ReadError::Format(FormatError::UnsupportedFlags(f)) if f == mask),
            "{what}: {err:?}"
        ),
        // Segment size: invalid sizes are refused by parse, valid ones by the cryptography.
        6..=9 => assert!(
            matches!(
                err,
                ReadError::Format(_) | ReadError::Metadata(SegmentError::Metadata) | ReadError::Body(_)
            ),
            "{what}: {err:?}"
        ),
        // Plaintext length, salt, nonce prefix: only the cryptography can tell.
        10..=56 => assert!(
            matches!(
                err,
                ReadError::Metadata(SegmentError::Metadata) | ReadError::Body(SegmentError::Integrity { .. })
            ),
            "{what}: {err:?}"
        ),
        // w and z: the header no longer parses to the same length.
        57 | 58 => {}
        _ if (WRAPPED_AT..z_at).contains(&at) => assert!(matches!(err, ReadError::Unwrap), "{what}: {err:?}"),
        _ if (z_at..z_at + 4).contains(&at) => {}
        // Sealed metadata.
        _ if at < h => assert!(
            matches!(err, ReadError::Metadata(SegmentError::Metadata)),
            "{what}: {err:?}"
        ),
        _ => {
            let index = ((at - h) / obj.sealed_segment_len()) as u64;
            assert!(
                matches!(err, ReadError::Body(SegmentError::Integrity { index: i }) if i == index),
                "{what}: {err:?}"
            )
        }
    }
}

#[test]
fn every_single_byte_flip_is_rejected() {
    for len in [0, 1, S - 1, S, S + 1, 3 * S + 7] {
        for metadata in [None, Some(METADATA)] {
            let obj = seal(small(), &identity(), &plaintext(len, 1), metadata);
            for at in 0..obj.bytes.len() {
                // Every bit position, over the bytes, and a full-byte flip.
                check_flip(&obj, at, 1 << (at % 8));
                check_flip(&obj, at, 0xff);
            }
        }
    }
}

#[test]
fn every_single_byte_flip_is_rejected_with_the_default_segment_size() {
    let obj = seal(SegmentSize::DEFAULT, &identity(), &plaintext(200, 2), Some(METADATA));
    for at in 0..obj.bytes.len() {
        check_flip(&obj, at, 0x80 >> (at % 8));
    }
}

proptest! {
    #![proptest_config(Config { cases: 24, ..Config::default() })]

    #[test]
    fn sampled_byte_flips_are_rejected(
        len in 0usize..=(1 << 20),
        seed: u64,
        with_metadata: bool,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 16),
    ) {
        let obj = seal(small(), &identity(), &plaintext(len, seed), with_metadata.then_some(METADATA));
        for (at, mask) in flips {
            check_flip(&obj, at.index(obj.bytes.len()), mask);
        }
        // And always the edges of the body: first and last byte, last tag.
        let total = obj.bytes.len();
        for at in [obj.header_len(), total - TAG, total - 1] {
            check_flip(&obj, at, 0x01);
        }
    }
}

#[test]
fn every_truncation_is_rejected() {
    for len in [0, 1, S, S + 1, 3 * S, 3 * S + 7] {
        for metadata in [None, Some(METADATA)] {
            let obj = seal(small(), &identity(), &plaintext(len, 3), metadata);
            for cut in 0..obj.bytes.len() {
                let err = rejected(&obj.bytes[..cut], &obj.identity, None, &format!("{len} cut at {cut}"));
                if cut >= obj.header_len() + SS && (cut - obj.header_len()).is_multiple_of(SS) {
                    // Cut at a segment boundary: the size is valid, the new last segment is not.
                    assert!(
                        matches!(err, ReadError::Body(SegmentError::Integrity { .. })),
                        "{len} cut at {cut}: {err:?}"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 32, ..Config::default() })]

    #[test]
    fn truncation_at_boundaries_and_random_points_is_rejected(
        len in 1usize..=(64 * S),
        seed: u64,
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 8),
    ) {
        let obj = seal(small(), &identity(), &plaintext(len, seed), None);
        let h = obj.header_len();
        let n = obj.segments().len();
        for k in 0..n {
            let cut = h + k * SS;
            rejected(&obj.bytes[..cut], &obj.identity, None, &format!("boundary {k} of {n}"));
            // The header fixed up to declare the shorter length does not help.
            let mut header = obj.header.clone();
            header.plain_len = Some((k * S) as u64);
            let mut forged = header.encode();
            forged.extend_from_slice(&obj.bytes[h..cut]);
            rejected(&forged, &obj.identity, None, &format!("boundary {k} of {n}, length fixed"));
        }
        for cut in cuts {
            let cut = cut.index(obj.bytes.len());
            rejected(&obj.bytes[..cut], &obj.identity, None, &format!("cut at {cut}"));
        }
    }
}

/// Segment edits on objects with a partial and with a whole last segment.
#[test]
fn dropped_duplicated_and_reordered_segments_are_rejected() {
    for len in [5 * S, 5 * S + 100] {
        let obj = seal(small(), &identity(), &plaintext(len, 4), Some(METADATA));
        let segs = obj.segments();
        let n = segs.len();
        assert_eq!(n, 5 + usize::from(len % S != 0));
        assert_eq!(
            read(&obj.with_segments(&segs), &obj.identity, None).unwrap().plaintext,
            obj.plaintext
        );
        for i in 0..n {
            let mut dropped = segs.clone();
            dropped.remove(i);
            rejected(&obj.with_segments(&dropped), &obj.identity, None, &format!("drop {i}"));

            let mut duplicated = segs.clone();
            duplicated.insert(i, segs[i]);
            rejected(
                &obj.with_segments(&duplicated),
                &obj.identity,
                None,
                &format!("duplicate {i}"),
            );

            // Duplicate over the next segment (same length when neither is the last).
            if i + 1 < n {
                let mut replaced = segs.clone();
                replaced[i + 1] = segs[i];
                rejected(
                    &obj.with_segments(&replaced),
                    &obj.identity,
                    None,
                    &format!("{i} over {}", i + 1),
                );
            }
            for j in i + 1..n {
                let mut swapped = segs.clone();
                swapped.swap(i, j);
                rejected(
                    &obj.with_segments(&swapped),
                    &obj.identity,
                    None,
                    &format!("swap {i} {j}"),
                );
            }
        }
        // Every rotation and the reversal.
        for r in 1..n {
            let mut rotated = segs.clone();
            rotated.rotate_left(r);
            rejected(
                &obj.with_segments(&rotated),
                &obj.identity,
                None,
                &format!("rotate {r}"),
            );
        }
        let mut reversed = segs.clone();
        reversed.reverse();
        rejected(&obj.with_segments(&reversed), &obj.identity, None, "reverse");
    }
}

/// Two objects sealed with the same DEK and the very same header (salt, nonce prefix): a
/// segment of one appended to the other is rejected, because the other's last segment was
/// sealed as the last one. (Two such objects share key and nonces, which the format forbids;
/// the test shows extension is still detected.)
#[test]
fn appending_a_segment_from_an_object_with_the_same_dek_and_header_is_rejected() {
    let id = identity();
    let dek = random();
    let header = ObjectHeader::new(small(), None, wrap_dek(&dek, &id));
    for (len_a, len_b) in [(2 * S, 4 * S + 9), (2 * S + 10, 4 * S), (0, 2 * S), (1, 3 * S)] {
        let a = seal_with(header.clone(), dek, &id, &plaintext(len_a, 5), Some(METADATA));
        let b = seal_with(header.clone(), dek, &id, &plaintext(len_b, 6), Some(METADATA));
        assert_eq!(a.bytes[..a.header_len()], b.bytes[..b.header_len()], "same header");
        let (sa, sb) = (a.segments(), b.segments());
        for k in 0..sb.len() {
            let mut extended = sa.clone();
            extended.push(sb[k]);
            rejected(&a.with_segments(&extended), &id, None, &format!("{len_a} + b[{k}]"));
            let mut extended = sa.clone();
            extended.extend_from_slice(&sb[k..]);
            rejected(&a.with_segments(&extended), &id, None, &format!("{len_a} + b[{k}..]"));
        }
    }
}

fn moved_identities() -> Vec<ObjectIdentity> {
    let id = identity();
    vec![
        ObjectIdentity {
            bucket: "photos2".into(),
            ..id.clone()
        },
        ObjectIdentity {
            key: "2024/summer/beach.jpeg".into(),
            ..id.clone()
        },
        ObjectIdentity {
            version_id: "v-0002".into(),
            ..id.clone()
        },
        ObjectIdentity {
            version_id: "null".into(),
            ..id.clone()
        },
        // The same bytes shifted across the separators.
        ObjectIdentity {
            bucket: "photos/2024".into(),
            key: "summer/beach.jpg".into(),
            ..id.clone()
        },
        ObjectIdentity {
            bucket: "photo".into(),
            key: "s2024/summer/beach.jpg".into(),
            ..id.clone()
        },
        ObjectIdentity::unversioned("photos", "2024/summer/beach.jpg"),
        ObjectIdentity {
            key: "2024/summer/beach.jpg\0".into(),
            ..id.clone()
        },
    ]
}

#[test]
fn moving_an_object_to_another_identity_is_rejected() {
    for len in [0, 1, S, 2 * S + 3] {
        for metadata in [None, Some(METADATA)] {
            let obj = seal(small(), &identity(), &plaintext(len, 7), metadata);
            for other in moved_identities() {
                assert_ne!(other.to_bytes(), obj.identity.to_bytes());
                let what = format!("{len} moved to {other:?}");
                // The real reader: the DEK does not unwrap under another identity.
                assert!(
                    matches!(rejected(&obj.bytes, &other, None, &what), ReadError::Unwrap),
                    "{what}"
                );
                // Even with the right DEK, the identity is in A.
                let err = rejected(&obj.bytes, &other, Some(&obj.dek), &what);
                let expected = if metadata.is_some() {
                    matches!(err, ReadError::Metadata(SegmentError::Metadata))
                } else {
                    matches!(err, ReadError::Body(SegmentError::Integrity { index: 0 }))
                };
                assert!(expected, "{what}: {err:?}");
                assert!(
                    obj.header.cipher(&obj.dek, &other).open(0, obj.body(), true).is_err(),
                    "{what}"
                );
            }
        }
    }
}

/// A key made of characters that stress the identity encoding: the separator byte 0x00, '/'
/// and anything else.
fn awkward_key() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just('\0'), Just('/'), Just('a'), any::<char>()], 0..10)
        .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(Config { cases: 128, ..Config::default() })]

    /// The identity encoding is injective for bucket names and version ids without 0x00 (S3
    /// bucket names and the store's version ids), whatever the key holds, and an object moved
    /// between two such identities does not open even with the right DEK.
    #[test]
    fn identities_are_bound_unambiguously(
        bucket_a in "[a-z0-9][a-z0-9.-]{1,8}[a-z0-9]",
        bucket_b in "[a-z0-9][a-z0-9.-]{1,8}[a-z0-9]",
        key_a in awkward_key(),
        key_b in awkward_key(),
        version_a in "null|[A-Za-z0-9]{1,6}",
        version_b in "null|[A-Za-z0-9]{1,6}",
    ) {
        let a = ObjectIdentity { bucket: bucket_a, key: key_a, version_id: version_a };
        let b = ObjectIdentity { bucket: bucket_b, key: key_b, version_id: version_b };
        prop_assert_eq!(a == b, a.to_bytes() == b.to_bytes());
        let obj = seal(small(), &a, b"payload", None);
        prop_assert_eq!(read(&obj.bytes, &a, None).unwrap().plaintext, b"payload");
        if a != b {
            prop_assert!(read(&obj.bytes, &b, Some(&obj.dek)).is_err(), "moved from {:?} to {:?}", a, b);
        }
    }
}

#[test]
fn swapping_headers_between_objects_is_rejected() {
    for len in [0, 100, S, 3 * S + 7] {
        for metadata in [None, Some(METADATA)] {
            let id = identity();
            let x = seal(small(), &id, &plaintext(len, 8), metadata);
            let y = seal(small(), &id, &plaintext(len, 9), metadata);
            assert_eq!(x.bytes.len(), y.bytes.len());
            let hybrid = [&x.bytes[..x.header_len()], y.body()].concat();
            // Unwrapping the header's DEK gives x's key, which does not open y's body.
            let err = rejected(&hybrid, &id, None, "x header, y body");
            assert!(
                matches!(err, ReadError::Body(SegmentError::Integrity { index: 0 })),
                "{err:?}"
            );
            // Neither does y's key (y's body is bound to y's salt, nonce prefix and metadata).
            rejected(&hybrid, &id, Some(&y.dek), "x header, y body, y key");
            // Same with the same plaintext in both.
            let y2 = seal(small(), &id, &x.plaintext, metadata);
            let hybrid = [&x.bytes[..x.header_len()], y2.body()].concat();
            rejected(&hybrid, &id, None, "x header, y body with x's plaintext");
            // Only the metadata taken from the other object.
            if metadata.is_some() {
                let mut header = x.header.clone();
                header.sealed_metadata = y.header.sealed_metadata.clone();
                let forged = [&header.encode()[..], x.body()].concat();
                let err = rejected(&forged, &id, None, "y's metadata in x");
                assert!(matches!(err, ReadError::Metadata(SegmentError::Metadata)), "{err:?}");
            }
        }
    }
}

#[test]
fn editing_the_metadata_is_rejected() {
    let id = identity();
    let obj = seal(small(), &id, &plaintext(S + 1, 10), Some(METADATA));
    let z = obj.header.sealed_metadata.len();
    assert_eq!(z, METADATA.len() + TAG);
    let with_metadata = |sealed: Vec<u8>| {
        let mut header = obj.header.clone();
        header.sealed_metadata = sealed;
        [&header.encode()[..], obj.body()].concat()
    };
    // Every byte of it, every bit.
    for at in 0..z {
        for bit in 0..8 {
            let mut sealed = obj.header.sealed_metadata.clone();
            sealed[at] ^= 1 << bit;
            let err = rejected(
                &with_metadata(sealed),
                &id,
                None,
                &format!("metadata byte {at} bit {bit}"),
            );
            assert!(matches!(err, ReadError::Metadata(SegmentError::Metadata)), "{err:?}");
        }
    }
    // Cut short, extended, removed.
    for keep in 0..z {
        rejected(
            &with_metadata(obj.header.sealed_metadata[..keep].to_vec()),
            &id,
            None,
            "metadata cut",
        );
    }
    let mut longer = obj.header.sealed_metadata.clone();
    longer.push(0);
    rejected(&with_metadata(longer), &id, None, "metadata extended");
    let err = rejected(&with_metadata(Vec::new()), &id, None, "metadata removed");
    assert!(
        matches!(err, ReadError::Body(SegmentError::Integrity { index: 0 })),
        "{err:?}"
    );
    // Metadata added to an object that had none.
    let bare = seal(small(), &id, &plaintext(10, 11), None);
    let mut header = bare.header.clone();
    header.sealed_metadata = obj.header.sealed_metadata.clone();
    rejected(
        &[&header.encode()[..], bare.body()].concat(),
        &id,
        None,
        "metadata added",
    );
    // Metadata re-sealed by someone with the DEK but after the body: the body binds the old one.
    let mut header = obj.header.clone();
    header.seal_metadata(&obj.dek, &id, br#"{"contentType":"text/html","userMetadata":{}}"#);
    let err = rejected(
        &[&header.encode()[..], obj.body()].concat(),
        &id,
        None,
        "metadata replaced",
    );
    assert!(
        matches!(err, ReadError::Body(SegmentError::Integrity { index: 0 })),
        "{err:?}"
    );
}

#[test]
fn a_wrapped_dek_from_another_object_is_rejected() {
    for len in [0, 1, S, 3 * S + 7] {
        for metadata in [None, Some(METADATA)] {
            let id = identity();
            let x = seal(small(), &id, &plaintext(len, 12), metadata);
            // Another object at the same name (an earlier write), and one elsewhere.
            let same_name = seal(small(), &id, &plaintext(len, 13), metadata);
            let elsewhere = seal(small(), &moved_identities()[0], &plaintext(len, 14), metadata);
            for (other, same_identity) in [(&same_name, true), (&elsewhere, false)] {
                // Opening with the other object's DEK fails.
                let err = rejected(&x.bytes, &id, Some(&other.dek), "other DEK");
                assert!(
                    matches!(
                        err,
                        ReadError::Metadata(_) | ReadError::Body(SegmentError::Integrity { index: 0 })
                    ),
                    "{err:?}"
                );
                assert!(x.header.cipher(&other.dek, &id).open(0, x.body(), true).is_err());
                // Its wrapped DEK swapped into x's header (the wrapped DEK is not in A).
                let mut header = x.header.clone();
                header.wrapped_dek = other.header.wrapped_dek.clone();
                let forged = [&header.encode()[..], x.body()].concat();
                let err = rejected(&forged, &id, None, "other wrapped DEK");
                if same_identity {
                    // It unwraps (same name), to the other object's DEK, which opens nothing here.
                    assert!(matches!(err, ReadError::Metadata(_) | ReadError::Body(_)), "{err:?}");
                } else {
                    assert!(matches!(err, ReadError::Unwrap), "{err:?}");
                }
            }
            // Re-wrapping the same DEK (what `reencrypt --rewrap` does) keeps the object readable.
            let mut header = x.header.clone();
            header.wrapped_dek = wrap_dek(&x.dek, &id);
            assert_ne!(header.wrapped_dek, x.header.wrapped_dek);
            let rewrapped = [&header.encode()[..], x.body()].concat();
            assert_eq!(read(&rewrapped, &id, None).unwrap().plaintext, x.plaintext);
        }
    }
}

#[test]
fn a_declared_length_that_disagrees_with_the_body_is_reported() {
    // A writer bug, not an attack (the declared length is in A): the reader still notices.
    let id = identity();
    let dek = random();
    for (declared, actual) in [(S as u64 + 1, S), (0, 1), (5, 0), (3 * S as u64, 2 * S + 1)] {
        let header = ObjectHeader::new(small(), Some(declared), wrap_dek(&dek, &id));
        let obj = seal_with(header, dek, &id, &plaintext(actual, 18), None);
        let err = rejected(&obj.bytes, &id, None, "wrong declared length");
        assert!(
            matches!(err, ReadError::DeclaredLength { declared: d, actual: a } if d == declared && a == actual as u64),
            "{err:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Nonce and key uniqueness.
// ---------------------------------------------------------------------------------------------

#[test]
fn fresh_headers_give_fresh_ciphertexts_for_the_same_plaintext_and_dek() {
    let id = identity();
    let dek = random();
    let plain = plaintext(4 * S + 5, 15);
    let objects: Vec<Object> = (0..8)
        .map(|_| {
            let header = ObjectHeader::new(small(), Some(plain.len() as u64), wrap_dek(&dek, &id));
            seal_with(header, dek, &id, &plain, Some(METADATA))
        })
        .collect();
    for (i, a) in objects.iter().enumerate() {
        assert_eq!(read(&a.bytes, &id, None).unwrap().plaintext, plain);
        for b in &objects[i + 1..] {
            assert_ne!(a.header.salt, b.header.salt);
            assert_ne!(a.header.nonce_prefix, b.header.nonce_prefix);
            assert_ne!(a.header.sealed_metadata, b.header.sealed_metadata);
            assert_ne!(a.body(), b.body());
            // No segment, and no segment's keystream part, is shared.
            for (sa, sb) in a.segments().into_iter().zip(b.segments()) {
                assert_ne!(sa, sb);
                assert_ne!(sa[..16], sb[..16]);
            }
            // Each object's DEK only opens its own segments with its own header.
            assert!(a.header.cipher(&dek, &id).open(0, b.body(), true).is_err());
        }
    }
    // Sealing twice under one header is deterministic: the differences above come from the header.
    let again = seal_with(objects[0].header.clone(), dek, &id, &plain, None);
    assert_eq!(again.body(), objects[0].body());
}

// ---------------------------------------------------------------------------------------------
// 5. Batched (streaming) sealing and opening equal whole-object sealing and opening.
// ---------------------------------------------------------------------------------------------

/// Splits `n` segments into batches of the given sizes (cycled), the last taking the rest.
fn batches(n: usize, sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    for &k in sizes.iter().cycle() {
        if at + k >= n {
            out.push(at..n);
            return out;
        }
        out.push(at..at + k);
        at += k;
    }
    unreachable!("sizes is not empty")
}

proptest! {
    #![proptest_config(Config { cases: 48, ..Config::default() })]

    #[test]
    fn batched_sealing_and_opening_equal_whole_object_sealing(
        len in 0usize..=(40 * S),
        seed: u64,
        seal_batches in proptest::collection::vec(1usize..=8, 1..6),
        open_batches in proptest::collection::vec(1usize..=8, 1..6),
    ) {
        let id = identity();
        let plain = plaintext(len, seed);
        let obj = seal(small(), &id, &plain, Some(METADATA));
        let cipher = obj.header.cipher(&obj.dek, &id);
        let n = len.div_ceil(S).max(1);

        let mut streamed = obj.header.encode();
        for batch in batches(n, &seal_batches) {
            let ends_object = batch.end == n;
            let chunk = &plain[batch.start * S..(batch.end * S).min(len)];
            streamed.extend(cipher.seal(batch.start as u64, chunk, ends_object).unwrap());
        }
        prop_assert!(streamed == obj.bytes, "batched sealing differs from whole sealing");

        let mut opened = Vec::new();
        for batch in batches(n, &open_batches) {
            let ends_object = batch.end == n;
            let start = obj.header_len() + batch.start * SS;
            let end = (obj.header_len() + batch.end * SS).min(obj.bytes.len());
            opened.extend(cipher.open(batch.start as u64, &obj.bytes[start..end], ends_object).unwrap());
        }
        prop_assert!(opened == plain, "batched opening differs from the plaintext");
    }
}

#[test]
fn batched_sealing_with_the_default_segment_size() {
    let id = identity();
    let size = SegmentSize::DEFAULT;
    let s = size.get() as usize;
    for len in [s, 3 * s, 3 * s + 1, 7 * s - 1] {
        let plain = plaintext(len, 16);
        let obj = seal(size, &id, &plain, None);
        let cipher = obj.header.cipher(&obj.dek, &id);
        let n = len.div_ceil(s);
        let mut streamed = obj.header.encode();
        for i in 0..n {
            streamed.extend(
                cipher
                    .seal(i as u64, &plain[i * s..((i + 1) * s).min(len)], i + 1 == n)
                    .unwrap(),
            );
        }
        assert!(streamed == obj.bytes, "{len}");
    }
}

// ---------------------------------------------------------------------------------------------
// The bytes themselves, against an independent implementation of the spec.
// ---------------------------------------------------------------------------------------------

/// HKDF-SHA256 (RFC 5869) for a 32-byte output, written out from HMAC.
fn hkdf_sha256_32(ikm: &[u8], salt: &[u8], info: &[u8]) -> [u8; 32] {
    let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), ikm);
    let okm = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref()), &[info, &[1]].concat());
    okm.as_ref().try_into().unwrap()
}

/// The object the spec describes, computed from its text alone (AES-GCM from the `aes-gcm`
/// crate, not aws-lc), for the given salt and nonce prefix.
#[allow(clippy::too_many_arguments)]
fn spec_object(
    s: u32,
    declared_len: Option<u64>,
    salt: &[u8; 32],
    nonce_prefix: &[u8; 7],
    wrapped_dek: &[u8],
    dek: &[u8; 32],
    identity: &ObjectIdentity,
    metadata: Option<&[u8]>,
    plaintext: &[u8],
) -> Vec<u8> {
    let mut fixed = Vec::new();
    fixed.extend_from_slice(b"SSOB");
    fixed.push(0x01);
    fixed.push(0x00);
    fixed.extend_from_slice(&s.to_be_bytes());
    fixed.extend_from_slice(&declared_len.unwrap_or(u64::MAX).to_be_bytes());
    fixed.extend_from_slice(salt);
    fixed.extend_from_slice(nonce_prefix);
    assert_eq!(fixed.len(), 57);
    let id: Vec<u8> = [
        identity.bucket.as_bytes(),
        &[0],
        identity.key.as_bytes(),
        &[0],
        identity.version_id.as_bytes(),
    ]
    .concat();
    let a_for = |sealed_metadata: &[u8]| {
        let input = [
            &fixed[..],
            &(sealed_metadata.len() as u32).to_be_bytes()[..],
            sealed_metadata,
            &id[..],
        ]
        .concat();
        digest::digest(&digest::SHA256, &input).as_ref().to_vec()
    };
    let key = hkdf_sha256_32(dek, salt, b"sealstore object v1");
    let gcm = Aes256Gcm::new_from_slice(&key).unwrap();
    let nonce = |index: u32, flag: u8| [&nonce_prefix[..], &index.to_be_bytes()[..], &[flag][..]].concat();
    let sealed_metadata = match metadata {
        None => Vec::new(),
        Some(json) => gcm
            .encrypt(
                Nonce::from_slice(&nonce(0, 2)),
                Payload {
                    msg: json,
                    aad: &a_for(&[]),
                },
            )
            .unwrap(),
    };
    let a = a_for(&sealed_metadata);

    let mut out = fixed.clone();
    out.extend_from_slice(&(wrapped_dek.len() as u16).to_be_bytes());
    out.extend_from_slice(wrapped_dek);
    out.extend_from_slice(&(sealed_metadata.len() as u32).to_be_bytes());
    out.extend_from_slice(&sealed_metadata);
    let s = s as usize;
    let n = plaintext.len().div_ceil(s).max(1);
    for i in 0..n {
        let segment = &plaintext[(i * s).min(plaintext.len())..((i + 1) * s).min(plaintext.len())];
        let flag = u8::from(i + 1 == n);
        out.extend(
            gcm.encrypt(
                Nonce::from_slice(&nonce(i as u32, flag)),
                Payload { msg: segment, aad: &a },
            )
            .unwrap(),
        );
    }
    out
}

fn check_against_spec(size: SegmentSize, len: usize, seed: u64, metadata: Option<&[u8]>) {
    let id = identity();
    let plain = plaintext(len, seed);
    let obj = seal(size, &id, &plain, metadata);
    let h = &obj.header;
    let expected = spec_object(
        size.get(),
        h.plain_len,
        &h.salt,
        &h.nonce_prefix,
        &h.wrapped_dek,
        &obj.dek,
        &id,
        metadata,
        &plain,
    );
    assert!(expected == obj.bytes, "object of {len} bytes differs from the spec");
    // And the unknown-length form.
    let header = ObjectHeader {
        plain_len: None,
        sealed_metadata: Vec::new(),
        ..obj.header.clone()
    };
    let unknown = seal_with(header, obj.dek, &id, &plain, metadata);
    let expected = spec_object(
        size.get(),
        None,
        &h.salt,
        &h.nonce_prefix,
        &h.wrapped_dek,
        &obj.dek,
        &id,
        metadata,
        &plain,
    );
    assert!(
        expected == unknown.bytes,
        "unknown-length object of {len} bytes differs from the spec"
    );
    assert_eq!(read(&unknown.bytes, &id, None).unwrap().plaintext, plain);
    assert_eq!(&unknown.bytes[..4], MAGIC);
}

#[test]
fn sealed_bytes_follow_the_spec_at_segment_edges() {
    for size in [small(), SegmentSize::DEFAULT] {
        let s = size.get() as usize;
        for len in [0, 1, s - 1, s, s + 1, 3 * s, 3 * s + 7] {
            for metadata in [None, Some(METADATA)] {
                check_against_spec(size, len, 17, metadata);
            }
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 16, ..Config::default() })]

    #[test]
    fn sealed_bytes_follow_the_spec(len in 0usize..=(32 * S), seed: u64, with_metadata: bool) {
        check_against_spec(small(), len, seed, with_metadata.then_some(METADATA));
    }
}

// ---------------------------------------------------------------------------------------------
// Customer-wrapped data key (`docs/FORMATS.md`, "Customer-wrapped data key"): read by an
// independent implementation of the documented layout (RustCrypto AES-GCM, aws-lc HMAC).
// ---------------------------------------------------------------------------------------------

#[test]
fn customer_wrapped_key_follows_the_spec() {
    use sealstore_format::customer_key::{CustomerKey, WRAPPED_LEN};
    let k: [u8; 32] = random();
    let customer = CustomerKey::from_bytes(&k).unwrap();
    let dek = kms_core::Dek::generate().unwrap();
    let id = identity();
    let wrapped = customer.wrap(&dek, &id).unwrap();

    assert_eq!(wrapped.len(), 97);
    assert_eq!(WRAPPED_LEN, 97);
    assert_eq!(&wrapped[0..4], b"SSCK");
    assert_eq!(wrapped[4], 0x01);
    let mac_key = hmac::Key::new(hmac::HMAC_SHA256, &k);
    let check = hmac::sign(
        &mac_key,
        &[&b"sealstore SSE-C key check v1\0"[..], &id.to_bytes()].concat(),
    );
    assert_eq!(&wrapped[5..37], check.as_ref());
    let aad = [&wrapped[..49], &id.to_bytes()[..]].concat();
    let opened = Aes256Gcm::new_from_slice(&k)
        .unwrap()
        .decrypt(
            Nonce::from_slice(&wrapped[37..49]),
            Payload {
                msg: &wrapped[49..],
                aad: &aad,
            },
        )
        .expect("the sealed DEK opens as the spec says");
    assert_eq!(opened.as_slice(), dek.expose());

    // An object with this wrapped key is a normal object otherwise: it round-trips.
    let mut header = ObjectHeader::new(small(), Some(5), wrapped.clone());
    header.seal_metadata(dek.expose(), &id, METADATA);
    let body = header.cipher(dek.expose(), &id).seal(0, b"hello", true).unwrap();
    let bytes = [header.encode(), body].concat();
    let (parsed, len) = ObjectHeader::parse(&bytes).unwrap();
    assert_eq!(&bytes[WRAPPED_AT..WRAPPED_AT + 97], wrapped.as_slice());
    let reopened = customer.unwrap(&parsed.wrapped_dek, &id).unwrap();
    let cipher = parsed.cipher(reopened.expose(), &id);
    assert_eq!(cipher.open(0, &bytes[len..], true).unwrap(), b"hello");
}
