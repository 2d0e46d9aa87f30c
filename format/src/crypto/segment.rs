//! Segmented AES-256-GCM: the body of an encrypted object (spec: `docs/FORMATS.md`,
//! "Encrypted object").
//!
//! The plaintext is cut into fixed-size segments, each sealed on its own with a nonce that
//! carries its index and whether it is the last one, so segments can be sealed and opened in
//! parallel and in any subset (ranged reads), while truncation, reordering, duplication and
//! dropping of segments are all detected. Batches of segments are spread over the rayon
//! pool; each segment is encrypted straight from the input into the output (no copy).

use rayon::prelude::*;
use thiserror::Error;

use super::gcm::{GcmError, GcmKey, NONCE_LEN, TAG_LEN};

/// Bytes of random nonce prefix per object.
pub(crate) const NONCE_PREFIX_LEN: usize = 7;

/// Nonce flag of a segment that is not the last.
const FLAG_MORE: u8 = 0x00;
/// Nonce flag of the last segment.
const FLAG_LAST: u8 = 0x01;
/// Nonce flag of the sealed metadata.
const FLAG_METADATA: u8 = 0x02;

/// The nonce flag of a body segment: whether it is the object's last.
fn segment_flag(is_last: bool) -> u8 {
    if is_last {
        FLAG_LAST
    } else {
        FLAG_MORE
    }
}

/// Errors of segment sealing and opening.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SegmentError {
    /// A segment failed authentication: altered, moved, truncated or from another object.
    #[error(
        "integrity error in segment {index}: the object was altered, truncated, reordered or does not belong here"
    )]
    Integrity {
        /// Index of the first segment that failed.
        index: u64,
    },
    /// The sealed metadata failed authentication.
    #[error("integrity error in the object metadata: it was altered or does not belong here")]
    Metadata,
    /// A sealed length that no writer produces (cut inside a segment or tag).
    #[error("sealed body of {0} bytes is not a whole number of segments: the object is truncated")]
    Truncated(u64),
    /// Segment size outside what the format allows.
    #[error("segment size {0} is invalid: it must be 4 KiB to 16 MiB and a multiple of 16")]
    BadSegmentSize(u64),
    /// More segments than a 32-bit index can number.
    #[error("object too large: more than 2^32 segments")]
    TooLarge,
    /// A caller broke a precondition (a bug, reported instead of producing a bad object).
    #[error("segment layout error: {0}")]
    Layout(&'static str),
}

/// A validated segment size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSize(u32);

impl SegmentSize {
    /// 65 520 bytes, so that a sealed segment (plaintext + 16-byte tag) is exactly 64 KiB.
    /// Then every sealed segment starts at the same alignment as the buffer holding it, which
    /// keeps aws-lc's AES-GCM at full speed: with 64 KiB of plaintext (sealed segments
    /// 16 bytes off alignment, one after another) opening ran at 7.2 GB/s instead of 14.0
    /// (`cargo bench --bench object`).
    pub const DEFAULT: SegmentSize = SegmentSize(64 * 1024 - 16);
    /// Smallest allowed size.
    pub(crate) const MIN: u32 = 4 * 1024;
    /// Largest allowed size.
    pub(crate) const MAX: u32 = 16 * 1024 * 1024;

    /// Checks `bytes` against the format's limits.
    pub fn new(bytes: u32) -> Result<SegmentSize, SegmentError> {
        if (Self::MIN..=Self::MAX).contains(&bytes) && bytes.is_multiple_of(16) {
            Ok(SegmentSize(bytes))
        } else {
            Err(SegmentError::BadSegmentSize(bytes.into()))
        }
    }

    /// Plaintext bytes per segment.
    pub const fn get(self) -> u32 {
        self.0
    }

    fn plain(self) -> usize {
        self.0 as usize
    }

    const fn sealed(self) -> usize {
        self.0 as usize + TAG_LEN
    }

    /// Number of segments of a `plain_len`-byte object (at least one).
    pub fn segment_count(self, plain_len: u64) -> u64 {
        plain_len.div_ceil(self.0.into()).max(1)
    }

    /// Sealed body length of a `plain_len`-byte object.
    pub(crate) fn sealed_len(self, plain_len: u64) -> u64 {
        plain_len + TAG_LEN as u64 * self.segment_count(plain_len)
    }

    /// Plaintext length of a sealed body of `sealed_len` bytes.
    pub(crate) fn plain_len(self, sealed_len: u64) -> Result<u64, SegmentError> {
        let n = sealed_len.div_ceil(self.sealed() as u64).max(1);
        let plain = sealed_len
            .checked_sub(TAG_LEN as u64 * n)
            .ok_or(SegmentError::Truncated(sealed_len))?;
        if self.sealed_len(plain) != sealed_len {
            return Err(SegmentError::Truncated(sealed_len));
        }
        Ok(plain)
    }

    /// Offset of segment `index` in the sealed body.
    pub const fn sealed_offset(self, index: u64) -> u64 {
        index * self.sealed() as u64
    }
}

/// Seals and opens the segments of one object.
#[derive(Debug)]
pub struct SegmentCipher {
    key: GcmKey,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    aad: [u8; 32],
    size: SegmentSize,
}

/// Batches up to this many sealed bytes are sealed and opened on the calling thread: handing
/// them to the rayon pool (a cross-thread wake-up there and back, even for one segment) costs
/// more than the AES-GCM of a few segments (tens of microseconds), and it was most of a small
/// object's GET.
const SAME_THREAD_MAX: usize = 256 * 1024;

/// Whether a batch of `sealed_len` bytes is done on the calling thread (see [`SAME_THREAD_MAX`]).
pub(crate) fn on_this_thread(sealed_len: usize) -> bool {
    sealed_len <= SAME_THREAD_MAX
}

impl SegmentCipher {
    /// A cipher for one object: its derived segment key, nonce prefix and associated data.
    pub fn new(segment_key: &[u8; 32], nonce_prefix: [u8; NONCE_PREFIX_LEN], aad: [u8; 32], size: SegmentSize) -> Self {
        SegmentCipher {
            key: GcmKey::new(segment_key),
            nonce_prefix,
            aad,
            size,
        }
    }

    /// The segment size.
    pub fn size(&self) -> SegmentSize {
        self.size
    }

    fn nonce(&self, index: u32, flag: u8) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        n[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
        n[NONCE_LEN - 1] = flag;
        n
    }

    /// Seals metadata under `aad` (the format's `A'`), returning ciphertext ‖ tag.
    pub(crate) fn seal_metadata(&self, aad: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; plaintext.len() + TAG_LEN];
        let (body, tag) = out.split_at_mut(plaintext.len());
        let tag: &mut [u8; TAG_LEN] = tag.try_into().expect("tag slot is TAG_LEN bytes");
        self.key
            .seal_into(self.nonce(0, FLAG_METADATA), aad, plaintext, body, tag)
            .expect("metadata is small");
        out
    }

    /// Opens [`SegmentCipher::seal_metadata`] output.
    pub(crate) fn open_metadata(&self, aad: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, SegmentError> {
        let body_len = sealed.len().checked_sub(TAG_LEN).ok_or(SegmentError::Metadata)?;
        let (body, tag) = sealed.split_at(body_len);
        let tag: &[u8; TAG_LEN] = tag.try_into().expect("tag is TAG_LEN bytes");
        let mut out = vec![0u8; body_len];
        self.key
            .open_into(self.nonce(0, FLAG_METADATA), aad, body, tag, &mut out)
            .map_err(|_| SegmentError::Metadata)?;
        Ok(out)
    }

    fn index(first: u64, i: usize) -> Result<u32, SegmentError> {
        u32::try_from(first + i as u64).map_err(|_| SegmentError::TooLarge)
    }

    /// Checks the layout rules for a plaintext batch of `len` bytes starting at segment
    /// `first`, and returns how many segments it holds.
    fn plain_batch_segments(&self, first: u64, len: usize, ends_object: bool) -> Result<usize, SegmentError> {
        let s = self.size.plain();
        if !ends_object && (len == 0 || !len.is_multiple_of(s)) {
            return Err(SegmentError::Layout(
                "a batch that does not end the object must hold whole segments",
            ));
        }
        if len == 0 && first != 0 {
            return Err(SegmentError::Layout("only an empty object has an empty segment"));
        }
        let count = len.div_ceil(s).max(1);
        Self::index(first, count - 1)?;
        Ok(count)
    }

    /// Sealed length of a batch holding `plain_len` plaintext bytes.
    pub fn sealed_batch_len(&self, plain_len: usize) -> usize {
        self.size.sealed_len(plain_len as u64) as usize
    }

    /// Seals `plaintext` as segments `first, first+1, …` into `out`, which must be exactly
    /// [`SegmentCipher::sealed_batch_len`] bytes. Unless `ends_object`, the plaintext must be
    /// a non-empty whole number of segments; when `ends_object` its last segment is sealed as
    /// the object's last (an empty batch only for an empty object, as segment 0).
    pub fn seal_into(
        &self,
        first: u64,
        plaintext: &[u8],
        ends_object: bool,
        out: &mut [u8],
    ) -> Result<(), SegmentError> {
        let s = self.size.plain();
        let count = self.plain_batch_segments(first, plaintext.len(), ends_object)?;
        if out.len() != self.sealed_batch_len(plaintext.len()) {
            return Err(SegmentError::Layout("output buffer has the wrong length"));
        }
        let seal = |(i, slot): (usize, &mut [u8])| {
            let start = i * s;
            let plain = &plaintext[start..(start + s).min(plaintext.len())];
            let flag = segment_flag(ends_object && i == count - 1);
            let (body, tag) = slot.split_at_mut(plain.len());
            let tag: &mut [u8; TAG_LEN] = tag.try_into().expect("slot ends with a tag");
            self.key
                .seal_into(self.nonce(Self::index(first, i)?, flag), &self.aad, plain, body, tag)
                .map_err(|_| SegmentError::Layout("AES-GCM refused a segment"))
        };
        if on_this_thread(out.len()) {
            out.chunks_mut(self.size.sealed()).enumerate().try_for_each(seal)
        } else {
            out.par_chunks_mut(self.size.sealed()).enumerate().try_for_each(seal)
        }
    }

    /// Seals `buf` (plaintext segments `first, first+1, …`, same layout rules as
    /// [`SegmentCipher::seal_into`]) in place and returns the segments' tags in order: the
    /// sealed form is each ciphertext segment followed by its tag. No copy, no allocation
    /// beyond the tags — the fastest path when the caller owns the plaintext buffer.
    pub(crate) fn seal_in_place(
        &self,
        first: u64,
        buf: &mut [u8],
        ends_object: bool,
    ) -> Result<Vec<[u8; TAG_LEN]>, SegmentError> {
        let s = self.size.plain();
        let count = self.plain_batch_segments(first, buf.len(), ends_object)?;
        let mut tags = vec![[0u8; TAG_LEN]; count];
        if buf.is_empty() {
            tags[0] = self
                .key
                .seal_in_place(self.nonce(Self::index(first, 0)?, FLAG_LAST), &self.aad, &mut [])
                .map_err(|_| SegmentError::Layout("AES-GCM refused a segment"))?;
            return Ok(tags);
        }
        let seal = |(i, (segment, tag)): (usize, (&mut [u8], &mut [u8; TAG_LEN]))| {
            let flag = segment_flag(ends_object && i == count - 1);
            *tag = self
                .key
                .seal_in_place(self.nonce(Self::index(first, i)?, flag), &self.aad, segment)
                .map_err(|_| SegmentError::Layout("AES-GCM refused a segment"))?;
            Ok::<(), SegmentError>(())
        };
        if on_this_thread(buf.len()) {
            buf.chunks_mut(s).zip(tags.iter_mut()).enumerate().try_for_each(seal)?;
        } else {
            buf.par_chunks_mut(s)
                .zip(tags.par_iter_mut())
                .enumerate()
                .try_for_each(seal)?;
        }
        Ok(tags)
    }

    /// Seals into a new buffer; see [`SegmentCipher::seal_into`].
    pub fn seal(&self, first: u64, plaintext: &[u8], ends_object: bool) -> Result<Vec<u8>, SegmentError> {
        let mut out = vec![0u8; self.sealed_batch_len(plaintext.len())];
        self.seal_into(first, plaintext, ends_object, &mut out)?;
        Ok(out)
    }

    /// Plaintext length of a sealed batch, checking that it is made of whole segments.
    pub fn plain_batch_len(&self, sealed_len: usize, ends_object: bool) -> Result<usize, SegmentError> {
        let whole = sealed_len.is_multiple_of(self.size.sealed());
        if sealed_len == 0 || (!ends_object && !whole) {
            return Err(SegmentError::Truncated(sealed_len as u64));
        }
        self.size.plain_len(sealed_len as u64).map(|p| p as usize)
    }

    /// Opens sealed segments `first, first+1, …` into `out` (exactly
    /// [`SegmentCipher::plain_batch_len`] bytes). When `ends_object`, the batch's last
    /// segment must have been sealed as the object's last; otherwise none may be. The error
    /// names the first bad segment (in order, whatever thread found it). On error,
    /// `out` holds no plaintext.
    pub fn open_into(&self, first: u64, sealed: &[u8], ends_object: bool, out: &mut [u8]) -> Result<(), SegmentError> {
        let plain_len = self.plain_batch_len(sealed.len(), ends_object)?;
        if out.len() != plain_len {
            return Err(SegmentError::Layout("output buffer has the wrong length"));
        }
        let count = sealed.len().div_ceil(self.size.sealed());
        Self::index(first, count - 1)?;
        let open = |(i, (slot, plain)): (usize, (&[u8], &mut [u8]))| {
            let (body, tag) = slot.split_at(slot.len() - TAG_LEN);
            let tag: &[u8; TAG_LEN] = tag.try_into().expect("slot ends with a tag");
            let flag = segment_flag(ends_object && i == count - 1);
            let index = Self::index(first, i)?;
            self.key
                .open_into(self.nonce(index, flag), &self.aad, body, tag, plain)
                .map_err(|_: GcmError| SegmentError::Integrity { index: index.into() })
        };
        let result = if on_this_thread(sealed.len()) {
            sealed
                .chunks(self.size.sealed())
                .zip(out.chunks_mut(self.size.plain()))
                .enumerate()
                .map(open)
                .find(Result::is_err)
        } else {
            sealed
                .par_chunks(self.size.sealed())
                .zip(out.par_chunks_mut(self.size.plain()))
                .enumerate()
                .map(open)
                .find_first(Result::is_err)
        }
        .unwrap_or(Ok(()));
        // An empty last segment has no plaintext chunk to pair with: open it on its own.
        let result = result.and_then(|()| {
            if plain_len == 0 {
                let tag: &[u8; TAG_LEN] = sealed
                    .try_into()
                    .map_err(|_| SegmentError::Truncated(sealed.len() as u64))?;
                let flag = segment_flag(ends_object);
                self.key
                    .open_into(self.nonce(Self::index(first, 0)?, flag), &self.aad, &[], tag, &mut [])
                    .map_err(|_| SegmentError::Integrity { index: first })?;
            }
            Ok(())
        });
        if result.is_err() {
            out.fill(0);
        }
        result
    }

    /// Opens sealed segments `first, …` in place: afterwards each segment's slot (S + 16
    /// bytes, the last one shorter) starts with its plaintext. Same checks as
    /// [`SegmentCipher::open_into`] (the error names the first bad segment); on error, `buf`
    /// holds no plaintext.
    pub(crate) fn open_in_place(&self, first: u64, buf: &mut [u8], ends_object: bool) -> Result<(), SegmentError> {
        self.plain_batch_len(buf.len(), ends_object)?;
        let count = buf.len().div_ceil(self.size.sealed());
        Self::index(first, count - 1)?;
        let open = |(i, slot): (usize, &mut [u8])| {
            let flag = segment_flag(ends_object && i == count - 1);
            let index = Self::index(first, i)?;
            self.key
                .open_in_place(self.nonce(index, flag), &self.aad, slot)
                .map(drop)
                .map_err(|_| SegmentError::Integrity { index: index.into() })
        };
        let result = if on_this_thread(buf.len()) {
            buf.chunks_mut(self.size.sealed())
                .enumerate()
                .map(open)
                .find(Result::is_err)
        } else {
            buf.par_chunks_mut(self.size.sealed())
                .enumerate()
                .map(open)
                .find_first(Result::is_err)
        }
        .unwrap_or(Ok(()));
        if result.is_err() {
            buf.fill(0);
        }
        result
    }

    /// Opens into a new buffer; see [`SegmentCipher::open_into`].
    pub fn open(&self, first: u64, sealed: &[u8], ends_object: bool) -> Result<Vec<u8>, SegmentError> {
        let mut out = vec![0u8; self.plain_batch_len(sealed.len(), ends_object)?];
        self.open_into(first, sealed, ends_object, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(size: u32) -> SegmentCipher {
        SegmentCipher::new(&[9; 32], [1; 7], [2; 32], SegmentSize::new(size).unwrap())
    }

    #[test]
    fn sizes_round_trip() {
        let s = SegmentSize::new(4096).unwrap();
        for p in [0u64, 1, 4095, 4096, 4097, 8192, 1 << 20, (1 << 20) + 3] {
            assert_eq!(s.plain_len(s.sealed_len(p)).unwrap(), p, "{p}");
        }
        assert_eq!(s.sealed_len(0), 16);
        assert!(s.plain_len(15).is_err());
        assert!(
            s.plain_len(4096 + 16 + 10).is_err(),
            "a tail shorter than a tag is a truncation"
        );
        assert!(SegmentSize::new(1000).is_err());
        assert!(SegmentSize::new(4100).is_err());
    }

    #[test]
    fn batches_on_this_thread_and_on_the_pool_agree_and_find_the_same_damage() {
        let c = cipher(4096);
        // 10 segments stay on the calling thread, 100 go to the rayon pool.
        for segments in [10usize, 100] {
            let plain: Vec<u8> = (0..segments * 4096 - 7).map(|i| (i * 31 % 251) as u8).collect();
            let sealed = c.seal(5, &plain, true).unwrap();
            assert_eq!(on_this_thread(sealed.len()), segments == 10);
            let mut in_place = plain.clone();
            let tags = c.seal_in_place(5, &mut in_place, true).unwrap();
            for (i, tag) in tags.iter().enumerate() {
                let slot = &sealed[i * (4096 + TAG_LEN)..];
                let len = (plain.len() - i * 4096).min(4096);
                assert_eq!(
                    &slot[..len],
                    &in_place[i * 4096..i * 4096 + len],
                    "{segments}: segment {i}"
                );
                assert_eq!(&slot[len..len + TAG_LEN], tag, "{segments}: tag {i}");
            }
            assert_eq!(c.open(5, &sealed, true).unwrap(), plain);
            let mut buf = sealed.clone();
            c.open_in_place(5, &mut buf, true).unwrap();
            assert_eq!(&buf[..4096], &plain[..4096]);
            // A flipped byte in segment 7 (and in 3) is reported as the first bad one, index 5 + 3.
            let mut bad = sealed.clone();
            bad[7 * (4096 + TAG_LEN) + 1] ^= 1;
            bad[3 * (4096 + TAG_LEN) + 2] ^= 1;
            let mut out = vec![0u8; plain.len()];
            assert!(matches!(
                c.open_into(5, &bad, true, &mut out),
                Err(SegmentError::Integrity { index: 8 })
            ));
            assert!(out.iter().all(|&b| b == 0), "no plaintext left behind");
            assert!(matches!(
                c.open_in_place(5, &mut bad, true),
                Err(SegmentError::Integrity { index: 8 })
            ));
        }
    }

    #[test]
    fn whole_object_round_trips_and_rejects_tampering() {
        let c = cipher(4096);
        for len in [0usize, 1, 4095, 4096, 4097, 3 * 4096, 20_000] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let sealed = c.seal(0, &plain, true).unwrap();
            assert_eq!(sealed.len() as u64, c.size().sealed_len(len as u64));
            assert_eq!(c.open(0, &sealed, true).unwrap(), plain, "{len}");
            // Claiming it does not end the object fails (last flag), for whole-segment bodies.
            if sealed.len().is_multiple_of(4112) {
                assert!(c.open(0, &sealed, false).is_err());
            }
            let mut bad = sealed.clone();
            bad[sealed.len() / 2] ^= 0x40;
            assert!(matches!(c.open(0, &bad, true), Err(SegmentError::Integrity { .. })));
        }
    }

    #[test]
    fn truncation_at_a_boundary_and_reordering_fail() {
        let c = cipher(4096);
        let plain = vec![7u8; 3 * 4096];
        let sealed = c.seal(0, &plain, true).unwrap();
        // Drop the last segment: the new last one was not sealed as last.
        assert_eq!(
            c.open(0, &sealed[..2 * 4112], true),
            Err(SegmentError::Integrity { index: 1 })
        );
        // Swap segments 0 and 1.
        let mut swapped = sealed.clone();
        swapped[..4112].copy_from_slice(&sealed[4112..8224]);
        swapped[4112..8224].copy_from_slice(&sealed[..4112]);
        assert!(c.open(0, &swapped, true).is_err());
        // A middle batch opened at the wrong index.
        assert!(c.open(1, &sealed[..4112], false).is_err());
        assert_eq!(c.open(1, &sealed[4112..8224], false).unwrap(), vec![7u8; 4096]);
    }

    #[test]
    fn in_place_seal_matches_seal() {
        let c = cipher(4096);
        for len in [0usize, 1, 4096, 3 * 4096 + 5] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = plain.clone();
            let tags = c.seal_in_place(0, &mut buf, true).unwrap();
            let mut joined = Vec::new();
            for (i, tag) in tags.iter().enumerate() {
                joined.extend_from_slice(&buf[(i * 4096).min(len)..((i + 1) * 4096).min(len)]);
                joined.extend_from_slice(tag);
            }
            assert_eq!(joined, c.seal(0, &plain, true).unwrap(), "{len}");
        }
    }

    #[test]
    fn metadata_round_trip() {
        let c = cipher(4096);
        let sealed = c.seal_metadata(&[3; 32], b"{\"contentType\":\"text/plain\"}");
        assert_eq!(
            c.open_metadata(&[3; 32], &sealed).unwrap(),
            b"{\"contentType\":\"text/plain\"}"
        );
        assert_eq!(c.open_metadata(&[4; 32], &sealed), Err(SegmentError::Metadata));
    }
}
