//! An open encrypted volume: byte-addressed reads and writes over XTS-encrypted 4 KiB
//! sectors in a sparse file (layout: [`super::format`]).
//!
//! Unwritten sectors are holes and read as zeros: a sector whose stored bytes are all zero is
//! taken as never written (a real ciphertext sector is all zeros with probability 2⁻³²⁷⁶⁸).
//! Writes that cover part of a sector read, modify and write it back, under a lock on its
//! extent so that concurrent partial writes of one sector cannot lose each other.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_lc_rs::hkdf;
use base64::Engine;
use kms_core::{KeyProvider, Ocid};
use thiserror::Error;

use super::format::{Generation, HeaderError, VolumeHeader, EXTENT_SIZE, MAP_OFFSET, MAX_SIZE, SLOT_LEN};
use crate::crypto::xts::{Xts, XtsError, XtsKey, SECTOR_SIZE, XTS_KEY_LEN};

/// Directory of the volumes in the data directory.
pub const VOLUMES_DIR: &str = "volumes";
/// File name suffix of volumes in the volumes directory.
pub const VOLUME_SUFFIX: &str = ".vol";

/// The volume files in `dir`, by name.
pub fn volume_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.retain(|p| p.to_string_lossy().ends_with(VOLUME_SUFFIX));
    paths.sort();
    paths
}
/// Extent locks (striped by extent index).
const LOCK_STRIPES: usize = 64;
const SECTOR: u64 = SECTOR_SIZE as u64;

/// Volume errors.
#[derive(Debug, Error)]
pub enum VolumeError {
    /// File system error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The header is unreadable.
    #[error("{path}: {source}")]
    Header {
        /// Volume file.
        path: PathBuf,
        /// Why.
        source: HeaderError,
    },
    /// Key management refused or failed.
    #[error("volume data key: {0}")]
    Key(#[from] kms_core::KmsError),
    /// XTS failed.
    #[error(transparent)]
    Xts(#[from] XtsError),
    /// An I/O beyond the end of the volume.
    #[error("{len} bytes at offset {offset} are beyond the end of the {size}-byte volume")]
    OutOfRange {
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Volume size.
        size: u64,
    },
    /// Bad volume name or size.
    #[error("{0}")]
    Invalid(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VolumeError {
    let context = context.into();
    move |source| VolumeError::Io { context, source }
}

/// Result alias.
pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

/// Checks a volume name: 1–64 letters, digits, `.`, `_`, `-`, not starting with `.`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(VolumeError::Invalid(format!(
            "invalid volume name '{name}': use 1–64 letters, digits, '.', '_' or '-'"
        )))
    }
}

/// Associated data binding a generation's wrapped key to its volume.
fn key_aad(uuid: &str, generation: u8) -> Vec<u8> {
    format!("sealstore volume v1\0{uuid}\0{generation}").into_bytes()
}

/// The XTS key of a generation: HKDF-SHA256 of the 256-bit data key, salted with the volume
/// id, expanded to 512 bits.
fn xts_key(dek: &[u8; 32], uuid: &str, generation: u8) -> Result<XtsKey> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, uuid.as_bytes()).extract(dek);
    let info = [b"sealstore volume xts v1".as_slice(), &[generation]];
    struct Len64;
    impl hkdf::KeyType for Len64 {
        fn len(&self) -> usize {
            XTS_KEY_LEN
        }
    }
    let okm = prk.expand(&info, Len64).map_err(|_| XtsError::Backend("hkdf expand"))?;
    let mut bytes = zeroize::Zeroizing::new([0u8; XTS_KEY_LEN]);
    okm.fill(bytes.as_mut()).map_err(|_| XtsError::Backend("hkdf fill"))?;
    Ok(XtsKey::from_bytes(&bytes)?)
}

/// An open volume.
pub struct Volume {
    path: PathBuf,
    file: File,
    header: VolumeHeader,
    /// XTS keys by generation id.
    keys: Vec<(u8, XtsKey)>,
    locks: Vec<Mutex<()>>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("path", &self.path)
            .field("size", &self.header.size)
            .finish_non_exhaustive()
    }
}

impl Volume {
    /// Creates `dir/NAME.vol` of `size` bytes (a multiple of 4096), its data key wrapped by
    /// `key_id`. The file is sparse: it costs nothing until written.
    pub fn create(dir: &Path, name: &str, size: u64, keys: &Arc<dyn KeyProvider>, key_id: &Ocid) -> Result<Self> {
        check_name(name)?;
        if size == 0 || !size.is_multiple_of(SECTOR) || size > MAX_SIZE {
            return Err(VolumeError::Invalid(format!(
                "a volume size must be a non-zero multiple of 4096 bytes up to 64 TiB, not {size}"
            )));
        }
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let mut uuid = [0u8; 16];
        aws_lc_rs::rand::fill(&mut uuid).map_err(|_| XtsError::Backend("random"))?;
        let uuid = data_encoding::HEXLOWER.encode(&uuid);
        let data_key = keys.generate_data_key(key_id, &key_aad(&uuid, 0))?;
        let header = VolumeHeader {
            sequence: 1,
            uuid,
            name: name.to_owned(),
            size,
            sector_size: SECTOR_SIZE as u32,
            extent_size: EXTENT_SIZE,
            generations: vec![Generation {
                id: 0,
                key_id: data_key.key_id,
                key_version_id: data_key.key_version_id,
                wrapped_dek: base64::engine::general_purpose::STANDARD.encode(&data_key.wrapped),
            }],
            created: chrono::Utc::now().to_rfc3339(),
        };
        let path = dir.join(format!("{name}{VOLUME_SUFFIX}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => VolumeError::Invalid(format!("volume '{name}' already exists")),
                _ => VolumeError::Io {
                    context: format!("creating {}", path.display()),
                    source: e,
                },
            })?;
        let written = (|| {
            file.set_len(header.data_offset() + size)?;
            let slot = header.encode().map_err(std::io::Error::other)?;
            file.write_all_at(&slot, 0)?;
            file.write_all_at(&slot, SLOT_LEN)?;
            file.sync_all()?;
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(VolumeError::Io {
                context: format!("writing {}", path.display()),
                source: e,
            });
        }
        drop(file);
        Self::open(&path, keys)
    }

    /// Opens a volume file, unwrapping its data keys.
    pub fn open(path: &Path, keys: &Arc<dyn KeyProvider>) -> Result<Self> {
        let header = read_header(path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(format!("opening {}", path.display())))?;
        let mut xts_keys = Vec::new();
        for generation in &header.generations {
            let wrapped = base64::engine::general_purpose::STANDARD
                .decode(&generation.wrapped_dek)
                .map_err(|e| VolumeError::Invalid(format!("{}: bad wrapped key: {e}", path.display())))?;
            let dek = keys.unwrap_data_key(&wrapped, &key_aad(&header.uuid, generation.id))?;
            xts_keys.push((generation.id, xts_key(dek.expose(), &header.uuid, generation.id)?));
        }
        Ok(Volume {
            path: path.to_owned(),
            file,
            header,
            keys: xts_keys,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    /// The header.
    pub fn header(&self) -> &VolumeHeader {
        &self.header
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.header.size
    }

    /// The XTS key new data is written with (the last generation; all extents use generation
    /// 0 until rotation exists).
    fn key_for_extent(&self, _extent: u64) -> &XtsKey {
        &self.keys[0].1
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.header.size) {
            return Err(VolumeError::OutOfRange {
                offset,
                len,
                size: self.header.size,
            });
        }
        Ok(())
    }

    /// Reads and decrypts whole sectors `[first, first + n)` into `out` (n·4096 bytes).
    fn read_sectors(&self, first: u64, out: &mut [u8]) -> Result<()> {
        let at = self.header.data_offset() + first * SECTOR;
        self.file
            .read_exact_at(out, at)
            .map_err(io(format!("reading {}", self.path.display())))?;
        let mut xts: Option<(u64, Xts)> = None;
        for (i, sector) in out.chunks_exact_mut(SECTOR_SIZE).enumerate() {
            if sector.iter().all(|b| *b == 0) {
                continue; // never written (a hole)
            }
            let n = first + i as u64;
            let extent = n * SECTOR / EXTENT_SIZE;
            if xts.as_ref().is_none_or(|(e, _)| *e != extent) {
                xts = Some((extent, Xts::new(self.key_for_extent(extent))?));
            }
            let (_, x) = xts.as_mut().expect("set above");
            x.decrypt_sectors(n, sector)?;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let first = offset / SECTOR;
        let last = (offset + buf.len() as u64 - 1) / SECTOR;
        let skip = (offset - first * SECTOR) as usize;
        if skip == 0 && buf.len().is_multiple_of(SECTOR_SIZE) {
            return self.read_sectors(first, buf);
        }
        let mut sectors = vec![0u8; ((last - first + 1) * SECTOR) as usize];
        self.read_sectors(first, &mut sectors)?;
        buf.copy_from_slice(&sectors[skip..skip + buf.len()]);
        Ok(())
    }

    /// Encrypts and writes `data` at `offset`; partial sectors at either end are read,
    /// modified and written back under their extents' locks.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let first = offset / SECTOR;
        let last = (offset + data.len() as u64 - 1) / SECTOR;
        let skip = (offset - first * SECTOR) as usize;
        let mut sectors = vec![0u8; ((last - first + 1) * SECTOR) as usize];
        let aligned = skip == 0 && data.len().is_multiple_of(SECTOR_SIZE);
        let _guards = self.lock_extents(first * SECTOR / EXTENT_SIZE, last * SECTOR / EXTENT_SIZE);
        if aligned {
            sectors.copy_from_slice(data);
        } else {
            // Only the edge sectors need their old contents.
            self.read_sectors(first, &mut sectors[..SECTOR_SIZE])?;
            if last > first {
                let tail = sectors.len() - SECTOR_SIZE;
                self.read_sectors(last, &mut sectors[tail..])?;
            }
            sectors[skip..skip + data.len()].copy_from_slice(data);
        }
        let mut start = 0usize;
        while start < sectors.len() {
            let n = first + (start / SECTOR_SIZE) as u64;
            let extent = n * SECTOR / EXTENT_SIZE;
            let extent_end = ((extent + 1) * EXTENT_SIZE / SECTOR - first) as usize * SECTOR_SIZE;
            let end = extent_end.min(sectors.len());
            Xts::new(self.key_for_extent(extent))?.encrypt_sectors(n, &mut sectors[start..end])?;
            start = end;
        }
        self.file
            .write_all_at(&sectors, self.header.data_offset() + first * SECTOR)
            .map_err(io(format!("writing {}", self.path.display())))
    }

    /// Makes every completed write durable (fdatasync).
    pub fn flush(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(io(format!("flushing {}", self.path.display())))
    }

    /// Bytes the volume file really occupies on disk.
    pub fn allocated(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let meta = self
            .file
            .metadata()
            .map_err(io(format!("reading {}", self.path.display())))?;
        Ok(meta.blocks() * 512)
    }

    fn lock_extents(&self, first: u64, last: u64) -> Vec<std::sync::MutexGuard<'_, ()>> {
        // Stripes in ascending order, each once: no two writers can deadlock.
        let mut stripes: Vec<usize> = (first..=last.min(first + LOCK_STRIPES as u64))
            .map(|e| (e % LOCK_STRIPES as u64) as usize)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|s| self.locks[s].lock().expect("extent lock poisoned"))
            .collect()
    }
}

/// Reads the newest valid header of a volume file.
pub fn read_header(path: &Path) -> Result<VolumeHeader> {
    let file = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut slots = vec![0u8; 2 * SLOT_LEN as usize];
    let n = read_up_to(&file, &mut slots, 0).map_err(io(format!("reading {}", path.display())))?;
    slots.truncate(n);
    let (a, b) = slots.split_at((SLOT_LEN as usize).min(slots.len()));
    VolumeHeader::newest(a, b)
        .map(|(h, _)| h)
        .map_err(|source| VolumeError::Header {
            path: path.to_owned(),
            source,
        })
}

fn read_up_to(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// Checks a volume file without keys: a valid header, the expected file length, and the map
/// area readable. Returns what was found, for `volume check`.
pub fn check(path: &Path) -> Result<String> {
    let header = read_header(path)?;
    let len = std::fs::metadata(path)
        .map_err(io(format!("reading {}", path.display())))?
        .len();
    let expected = header.data_offset() + header.size;
    if len != expected {
        return Err(VolumeError::Invalid(format!(
            "{}: file is {len} bytes, the header says {expected}",
            path.display()
        )));
    }
    let mut map = vec![0u8; header.extents() as usize];
    let file = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    file.read_exact_at(&mut map, MAP_OFFSET)
        .map_err(io(format!("reading the extent map of {}", path.display())))?;
    let known: Vec<u8> = header.generations.iter().map(|g| g.id).collect();
    if let Some(bad) = map.iter().position(|g| !known.contains(g)) {
        return Err(VolumeError::Invalid(format!(
            "{}: extent {bad} names generation {}, which the header does not have",
            path.display(),
            map[bad]
        )));
    }
    Ok(format!(
        "header sequence {}, {} generation(s), {} extent(s), file {} bytes: consistent",
        header.sequence,
        header.generations.len(),
        header.extents(),
        len
    ))
}
