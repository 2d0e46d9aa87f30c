//! The encrypted volume file (spec: `docs/FORMATS.md`, "Encrypted volume").
//!
//! ```text
//! 0        header slot A (64 KiB)   } two copies: an update writes the older slot, so a
//! 64 KiB   header slot B (64 KiB)   } crash leaves the other one valid
//! 1 MiB    extent generation map: 1 byte per extent, the generation encrypting it
//! J        journal: one record sector, then room for one extent (re-encryption in flight)
//! D        data: sector n (4096 bytes, AES-256-XTS, tweak n) at D + 4096·n
//! ```
//!
//! A header slot is `"SSVL" ‖ version (1) ‖ 3 reserved ‖ u32 length L ‖ L bytes of JSON
//! ([`VolumeHeader`]) ‖ SHA-256 of everything before it`. The slot with the valid checksum
//! and the higher `sequence` wins.

use aws_lc_rs::digest::{digest, SHA256};
use kms_core::Ocid;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::crypto::xts::SECTOR_SIZE;

/// First bytes of a header slot.
pub(crate) const MAGIC: &[u8; 4] = b"SSVL";
/// Format version written and read here.
pub(crate) const VERSION: u8 = 1;
/// Bytes of one header slot.
pub const SLOT_LEN: u64 = 64 << 10;
/// Where the extent generation map starts.
pub const MAP_OFFSET: u64 = 1 << 20;
/// Bytes per extent: the unit of re-encryption after a rotation.
pub const EXTENT_SIZE: u64 = 1 << 20;
/// Largest volume: 64 TiB.
pub const MAX_SIZE: u64 = 64 << 40;
/// Bytes of the journal's record sector.
pub const JOURNAL_RECORD: u64 = 4096;
/// First bytes of a valid journal record.
pub const JOURNAL_MAGIC: &[u8; 4] = b"SSVJ";

/// Errors reading a volume header.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    /// Neither slot holds a valid header.
    #[error("not a sealstore volume, or both header copies are damaged: {0}")]
    NoValidHeader(String),
    /// Written by a newer sealstore.
    #[error("unsupported volume format version {0}")]
    UnsupportedVersion(u8),
    /// The header does not fit a slot.
    #[error("volume header too large ({0} bytes)")]
    TooLarge(usize),
}

/// One data-key generation: an XTS key wrapped by a master key version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Generation {
    /// Generation number (0, 1, …), the value in the extent map.
    pub id: u8,
    /// Master key.
    pub key_id: Ocid,
    /// Master key version that wraps the data key.
    pub key_version_id: Ocid,
    /// The 256-bit data key as a KMS ciphertext (base64); the XTS key is derived from it.
    pub wrapped_dek: String,
}

/// The metadata in a header slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeHeader {
    /// Incremented by every header update; the higher valid slot wins.
    pub sequence: u64,
    /// Volume id (random UUID, hex).
    pub uuid: String,
    /// Volume name.
    pub name: String,
    /// Size in bytes (a multiple of the sector size).
    pub size: u64,
    /// Sector size: 4096.
    pub sector_size: u32,
    /// Extent size: 1 MiB.
    pub extent_size: u64,
    /// Data-key generations in use; writes use the last.
    pub generations: Vec<Generation>,
    /// When the volume was created (RFC 3339).
    pub created: String,
}

impl VolumeHeader {
    /// Number of extents.
    pub fn extents(&self) -> u64 {
        self.size.div_ceil(self.extent_size)
    }

    /// Offset of the journal: after the map, rounded up to a MiB.
    pub fn journal_offset(&self) -> u64 {
        (MAP_OFFSET + self.extents()).div_ceil(1 << 20) * (1 << 20)
    }

    /// Offset of sector 0: after the journal (a record sector and one extent), rounded up to
    /// a MiB.
    pub fn data_offset(&self) -> u64 {
        (self.journal_offset() + JOURNAL_RECORD + self.extent_size).div_ceil(1 << 20) * (1 << 20)
    }

    /// The generation new data is written with: the last one.
    pub fn current_generation(&self) -> u8 {
        self.generations.last().map_or(0, |g| g.id)
    }

    /// The slot bytes of this header.
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        let json = serde_json::to_vec(self).expect("headers serialize");
        let mut out = Vec::with_capacity(json.len() + 44);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        let sum = digest(&SHA256, &out);
        out.extend_from_slice(sum.as_ref());
        if out.len() as u64 > SLOT_LEN {
            return Err(HeaderError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// Parses one slot; `Err` with the reason when it is not a valid header.
    pub fn parse(slot: &[u8]) -> Result<Self, HeaderError> {
        let bad = |why: &str| HeaderError::NoValidHeader(why.to_owned());
        if slot.len() < 12 || &slot[..4] != MAGIC {
            return Err(bad("bad magic"));
        }
        if slot[4] != VERSION {
            return Err(HeaderError::UnsupportedVersion(slot[4]));
        }
        let len = u32::from_be_bytes(slot[8..12].try_into().expect("4 bytes")) as usize;
        let end = 12usize.checked_add(len).ok_or_else(|| bad("bad length"))?;
        if slot.len() < end + 32 {
            return Err(bad("truncated"));
        }
        if digest(&SHA256, &slot[..end]).as_ref() != &slot[end..end + 32] {
            return Err(bad("checksum mismatch"));
        }
        let header: VolumeHeader = serde_json::from_slice(&slot[12..end]).map_err(|e| bad(&e.to_string()))?;
        if header.sector_size as usize != SECTOR_SIZE
            || header.extent_size != EXTENT_SIZE
            || !header.size.is_multiple_of(u64::from(header.sector_size))
            || header.size > MAX_SIZE
            || header.generations.is_empty()
        {
            return Err(bad("inconsistent geometry"));
        }
        Ok(header)
    }

    /// The newer valid header of two slots.
    pub fn newest(a: &[u8], b: &[u8]) -> Result<(Self, usize), HeaderError> {
        match (Self::parse(a), Self::parse(b)) {
            (Ok(x), Ok(y)) if y.sequence > x.sequence => Ok((y, 1)),
            (Ok(x), _) => Ok((x, 0)),
            (Err(_), Ok(y)) => Ok((y, 1)),
            (Err(e @ HeaderError::UnsupportedVersion(_)), Err(_))
            | (Err(_), Err(e @ HeaderError::UnsupportedVersion(_))) => Err(e),
            (Err(HeaderError::NoValidHeader(a)), Err(HeaderError::NoValidHeader(b))) => {
                Err(HeaderError::NoValidHeader(format!("slot A: {a}; slot B: {b}")))
            }
            (Err(e), Err(_)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u64) -> VolumeHeader {
        VolumeHeader {
            sequence: seq,
            uuid: "00".repeat(16),
            name: "v".into(),
            size: 10 << 20,
            sector_size: 4096,
            extent_size: EXTENT_SIZE,
            generations: vec![Generation {
                id: 0,
                key_id: Ocid::parse(kms_core::ResourceType::Key, "ocid1.key.oc1.x.k").unwrap(),
                key_version_id: Ocid::parse(kms_core::ResourceType::KeyVersion, "ocid1.keyversion.oc1.x.v").unwrap(),
                wrapped_dek: "AAAA".into(),
            }],
            created: "2026-11-24T00:00:00Z".into(),
        }
    }

    #[test]
    fn round_trip_checksum_and_newest_slot() {
        let a = header(1).encode().unwrap();
        let b = header(2).encode().unwrap();
        assert_eq!(VolumeHeader::parse(&a).unwrap(), header(1));
        assert_eq!(VolumeHeader::newest(&a, &b).unwrap(), (header(2), 1));
        let mut torn = b.clone();
        torn[20] ^= 1;
        assert_eq!(VolumeHeader::newest(&a, &torn).unwrap(), (header(1), 0));
        assert!(matches!(
            VolumeHeader::newest(&torn, &[0u8; 100]),
            Err(HeaderError::NoValidHeader(_))
        ));
        assert_eq!(header(1).journal_offset(), 2 << 20);
        assert_eq!(header(1).data_offset(), 4 << 20);
    }
}
