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
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use aws_lc_rs::hkdf;
use base64::Engine;
use kms_core::{KeyProvider, Ocid};
use thiserror::Error;

use super::format::{
    Generation, HeaderError, VolumeHeader, EXTENT_SIZE, JOURNAL_MAGIC, JOURNAL_RECORD, MAP_OFFSET, MAX_SIZE, SLOT_LEN,
};
use crate::crypto::xts::{Xts, XtsError, XtsKey, SECTOR_SIZE, XTS_KEY_LEN};

/// Directory of the volumes in the data directory.
pub(crate) const VOLUMES_DIR: &str = "volumes";
/// File name suffix of volumes in the volumes directory.
pub(crate) const VOLUME_SUFFIX: &str = ".vol";

/// The volumes of a directory as a key-version inventory: a version is in use while a
/// volume has a generation wrapped by it (so `disable-version` refuses until
/// `volume reencrypt` dropped that generation).
#[derive(Debug)]
pub(crate) struct VolumeInventory {
    /// The volumes directory.
    pub dir: PathBuf,
}

impl kms_core::DataInventory for VolumeInventory {
    fn objects_protected_by(&self, key_version: &Ocid) -> kms_core::Result<u64> {
        Ok(volume_files(&self.dir)
            .iter()
            .filter_map(|p| read_header(p).ok())
            .filter(|h| h.generations.iter().any(|g| g.key_version_id == *key_version))
            .count() as u64)
    }
}

/// The volume files in `dir`, by name.
pub(crate) fn volume_files(dir: &Path) -> Vec<PathBuf> {
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
pub(crate) type Result<T, E = VolumeError> = std::result::Result<T, E>;

/// Checks a volume name: 1–64 letters, digits, `.`, `_`, `-`, not starting with `.`.
pub(crate) fn check_name(name: &str) -> Result<()> {
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

/// An open volume: a file of AES-256-XTS sectors whose keys come from a master key of a
/// [`KeyProvider`], wrapped in the volume's header. Rotating the master key
/// ([`Volume::rotate_if_key_rotated`]) starts a new key generation that extents move to on
/// their next write, or all at once with [`Volume::reencrypt_all`].
///
/// ```
/// use std::sync::Arc;
/// use kms_core::{CreateKey, CreateVault, KeyProvider, Kms, KmsConfig, Principal};
/// use sealstore::block::Volume;
///
/// let dir = tempfile::tempdir()?;
/// let kms = Arc::new(Kms::open(KmsConfig::new(dir.path().join("kms")))?);
/// let me = Principal::local_admin();
/// let vault = kms.create_vault(&me, CreateVault { display_name: "v".into(), ..Default::default() })?;
/// let key = kms.create_key(&me, CreateKey::new(vault.id, "disks"))?;
/// let keys: Arc<dyn KeyProvider> = kms;
///
/// let volume = Volume::create(dir.path(), "disk0", 1 << 20, &keys, &key.id)?;
/// volume.write_at(4096, &[7u8; 512])?;
/// let mut sector = [0u8; 512];
/// volume.read_at(4096, &mut sector)?;
/// assert_eq!(sector, [7u8; 512]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// `examples/volume.rs` shows a rotation followed lazily and by a sweep.
pub struct Volume {
    path: PathBuf,
    file: File,
    /// Geometry, fixed for the volume's life.
    size: u64,
    extents: u64,
    data_offset: u64,
    journal_offset: u64,
    uuid: String,
    /// The header and the generations' keys; rotation and dropping generations change them
    /// while the volume is served.
    state: RwLock<KeyState>,
    /// Generation of each extent (mirrors the on-disk map).
    map: Vec<AtomicU8>,
    /// Extent locks, striped: readers share, writers and re-encryption exclude.
    locks: Vec<RwLock<()>>,
    /// One re-encryption at a time uses the journal.
    journal: Mutex<()>,
    /// XTS contexts ready for use, by generation: setting one up (two aws-lc contexts, four
    /// AES key schedules, allocations) cost about as much as encrypting a 4 KiB sector, on
    /// every request. Taken for one call, given back after; those of a dropped generation
    /// are discarded.
    contexts: Mutex<Vec<(u8, Xts)>>,
    /// Test hook: fail a re-encryption after this step (1 journal written, 2 extent written,
    /// 3 map updated), leaving the file as a crash there would.
    crash_after: AtomicU8,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("path", &self.path)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The mutable part of an open volume.
struct KeyState {
    header: VolumeHeader,
    /// Which header slot holds `header` (the other is written next).
    slot: usize,
    /// XTS keys by generation id.
    keys: Vec<(u8, XtsKey)>,
}

/// The journal record: which extent, for which generation, and a checksum over both and the
/// extent's new ciphertext.
fn journal_record(extent: u64, generation: u8, data: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(JOURNAL_RECORD as usize);
    record.extend_from_slice(JOURNAL_MAGIC);
    record.push(1);
    record.push(generation);
    record.extend_from_slice(&extent.to_be_bytes());
    record.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&record);
    ctx.update(data);
    record.extend_from_slice(ctx.finish().as_ref());
    record.resize(JOURNAL_RECORD as usize, 0);
    record
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
        let generation = new_generation(keys, key_id, &uuid, 0)?;
        let header = VolumeHeader {
            sequence: 1,
            uuid,
            name: name.to_owned(),
            size,
            sector_size: SECTOR_SIZE as u32,
            extent_size: EXTENT_SIZE,
            generations: vec![generation],
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

    /// Opens a volume file, unwrapping its data keys and finishing a re-encryption a crash
    /// interrupted. The file is locked: one process at a time.
    pub fn open(path: &Path, keys: &Arc<dyn KeyProvider>) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(format!("opening {}", path.display())))?;
        file.try_lock().map_err(|_| {
            VolumeError::Invalid(format!(
                "volume {} is in use by another process (a running `volume serve` or `serve --nbd-listen`?)",
                path.display()
            ))
        })?;
        let (header, slot) = read_slots(path, &file)?;
        let mut map = vec![0u8; header.extents() as usize];
        file.read_exact_at(&mut map, MAP_OFFSET)
            .map_err(io(format!("reading the extent map of {}", path.display())))?;
        let mut xts_keys = Vec::new();
        for generation in &header.generations {
            let wrapped = base64::engine::general_purpose::STANDARD
                .decode(&generation.wrapped_dek)
                .map_err(|e| VolumeError::Invalid(format!("{}: bad wrapped key: {e}", path.display())))?;
            match keys.unwrap_data_key(&wrapped, &key_aad(&header.uuid, generation.id)) {
                Ok(dek) => xts_keys.push((generation.id, xts_key(dek.expose(), &header.uuid, generation.id)?)),
                // A generation no extent uses (a header copy from before a drop, say) need
                // not open: nothing is encrypted under it.
                Err(e) if generation.id != header.current_generation() && !map.contains(&generation.id) => {
                    tracing::warn!(volume = %path.display(), generation = generation.id, key_version = %generation.key_version_id, error = %e, "skipping a data-key generation no extent uses");
                }
                Err(e) => return Err(e.into()),
            }
        }
        let volume = Volume {
            path: path.to_owned(),
            file,
            size: header.size,
            extents: header.extents(),
            data_offset: header.data_offset(),
            journal_offset: header.journal_offset(),
            uuid: header.uuid.clone(),
            state: RwLock::new(KeyState {
                header,
                slot,
                keys: xts_keys,
            }),
            map: map.into_iter().map(AtomicU8::new).collect(),
            locks: (0..LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
            journal: Mutex::new(()),
            contexts: Mutex::new(Vec::new()),
            crash_after: AtomicU8::new(0),
        };
        volume.replay_journal()?;
        if let Some(e) = (0..volume.extents).find(|e| volume.key(volume.generation_of(*e)).is_err()) {
            return Err(VolumeError::Invalid(format!(
                "{}: extent {e} names generation {}, which the header does not have",
                path.display(),
                volume.generation_of(e)
            )));
        }
        Ok(volume)
    }

    /// The header as it is now.
    pub fn header(&self) -> VolumeHeader {
        self.state().header.clone()
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, KeyState> {
        self.state.read().expect("volume key state poisoned")
    }

    /// The generation new data is written with.
    pub fn current_generation(&self) -> u8 {
        self.state().header.current_generation()
    }

    /// The current generation: the one new data is written with.
    fn last_generation(&self) -> Generation {
        self.state()
            .header
            .generations
            .last()
            .cloned()
            .expect("a volume has a generation")
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The generation encrypting `extent`.
    pub fn generation_of(&self, extent: u64) -> u8 {
        self.map[extent as usize].load(Ordering::Acquire)
    }

    /// Extents per generation id.
    pub fn extents_per_generation(&self) -> std::collections::BTreeMap<u8, u64> {
        let mut out = std::collections::BTreeMap::new();
        for g in &self.state().header.generations {
            out.insert(g.id, 0);
        }
        for e in 0..self.extents {
            *out.entry(self.generation_of(e)).or_default() += 1;
        }
        out
    }

    fn key(&self, generation: u8) -> Result<XtsKey> {
        self.state()
            .keys
            .iter()
            .find(|(id, _)| *id == generation)
            .map(|(_, k)| k.clone())
            .ok_or_else(|| VolumeError::Invalid(format!("generation {generation} has no key")))
    }

    /// An XTS context for `generation`, from the pool or new; give it back with
    /// [`Volume::give_back`].
    fn xts(&self, generation: u8) -> Result<Xts> {
        let mut pool = self.contexts.lock().expect("xts pool poisoned");
        if let Some(i) = pool.iter().rposition(|(g, _)| *g == generation) {
            return Ok(pool.swap_remove(i).1);
        }
        drop(pool);
        Ok(Xts::new(&self.key(generation)?)?)
    }

    /// Returns a context taken with [`Volume::xts`] (dropped if its generation is gone).
    fn give_back(&self, generation: u8, xts: Xts) {
        /// Contexts kept: a few per thread that serves the volume.
        const KEEP: usize = 64;
        // The pool's lock first: a drop of the generation either removed its key already
        // (seen here) or clears the pool after this.
        let mut pool = self.contexts.lock().expect("xts pool poisoned");
        let known = self.state().keys.iter().any(|(id, _)| *id == generation);
        if known && pool.len() < KEEP {
            pool.push((generation, xts));
        }
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(VolumeError::OutOfRange {
                offset,
                len,
                size: self.size,
            });
        }
        Ok(())
    }

    fn stripe(&self, extent: u64) -> &RwLock<()> {
        &self.locks[(extent % LOCK_STRIPES as u64) as usize]
    }

    /// Reads and decrypts whole sectors `[first, first + n)` of one extent into `out`, with
    /// `generation`'s key; holes stay zeros.
    fn read_sectors(&self, first: u64, out: &mut [u8], generation: u8) -> Result<()> {
        let at = self.data_offset + first * SECTOR;
        self.file
            .read_exact_at(out, at)
            .map_err(|e| io(format!("reading {}", self.path.display()))(e))?;
        let mut xts = self.xts(generation)?;
        let done = out
            .chunks_exact_mut(SECTOR_SIZE)
            .enumerate()
            .filter(|(_, sector)| sector.iter().any(|b| *b != 0))
            .try_for_each(|(i, sector)| xts.decrypt_sectors(first + i as u64, sector));
        self.give_back(generation, xts);
        Ok(done?)
    }

    /// Splits `[offset, offset + len)` at extent boundaries: (extent, offset, length).
    fn per_extent(&self, offset: u64, len: u64) -> impl Iterator<Item = (u64, u64, u64)> {
        let end = offset + len;
        let mut at = offset;
        std::iter::from_fn(move || {
            (at < end).then(|| {
                let extent = at / EXTENT_SIZE;
                let stop = ((extent + 1) * EXTENT_SIZE).min(end);
                let piece = (extent, at, stop - at);
                at = stop;
                piece
            })
        })
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let mut done = 0usize;
        for (extent, at, len) in self.per_extent(offset, buf.len() as u64) {
            let _shared = self.stripe(extent).read().expect("extent lock poisoned");
            let generation = self.generation_of(extent);
            let out = &mut buf[done..done + len as usize];
            let first = at / SECTOR;
            let skip = (at - first * SECTOR) as usize;
            if skip == 0 && out.len().is_multiple_of(SECTOR_SIZE) {
                self.read_sectors(first, out, generation)?;
            } else {
                let last = (at + len - 1) / SECTOR;
                let mut sectors = vec![0u8; ((last - first + 1) * SECTOR) as usize];
                self.read_sectors(first, &mut sectors, generation)?;
                out.copy_from_slice(&sectors[skip..skip + out.len()]);
            }
            done += len as usize;
        }
        Ok(())
    }

    /// Encrypts and writes `data` at `offset`. Partial sectors are read, modified and written
    /// back; an extent still on an older generation is re-encrypted whole under the current
    /// one, through the journal (lazy re-encryption after a rotation).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.write(offset, Payload::Shared(data))
    }

    /// As [`Volume::write_at`], encrypting sector-aligned parts of `data` in place (it holds
    /// ciphertext afterwards): saves a buffer and a copy per request on the NBD path.
    pub fn write_at_in_place(&self, offset: u64, data: &mut [u8]) -> Result<()> {
        self.write(offset, Payload::Scratch(data))
    }

    /// Which parts of `[offset, offset + len)` are holes (never written or discarded: they
    /// read as zeros and hold no space) and which hold data, in order: (length, is a hole).
    /// Whole sectors, from the file's own allocation (SEEK_DATA / SEEK_HOLE).
    pub fn allocation(&self, offset: u64, len: u64) -> Result<Vec<(u64, bool)>> {
        use rustix::fs::{seek, SeekFrom};
        self.check_range(offset, len)?;
        let failed = |e: rustix::io::Errno| io(format!("mapping {}", self.path.display()))(e.into());
        let end = self.data_offset + offset + len;
        let mut at = self.data_offset + offset;
        let mut out: Vec<(u64, bool)> = Vec::new();
        while at < end {
            // The next data at or after `at` (ENXIO: none before the end of the file).
            let data = match seek(&self.file, SeekFrom::Data(at)) {
                Ok(d) => d.min(end),
                Err(rustix::io::Errno::NXIO) => end,
                Err(e) => return Err(failed(e)),
            };
            let (next, hole) = if data > at {
                (data, true)
            } else {
                let hole = seek(&self.file, SeekFrom::Hole(at)).map_err(failed)?;
                (hole.min(end), false)
            };
            match out.last_mut() {
                Some((n, h)) if *h == hole => *n += next - at,
                _ => out.push((next - at, hole)),
            }
            at = next;
        }
        Ok(out)
    }

    /// Makes `[offset, offset + len)` read as zeros and gives its space back: whole sectors
    /// become holes (punched; a hole reads as zeros whatever the extent's generation), partial
    /// sectors at the edges are written as encrypted zeros. What NBD TRIM and WRITE_ZEROES
    /// (without NO_HOLE) do. Durable, as writes are, after [`Volume::flush`].
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.check_range(offset, len)?;
        let end = offset + len;
        let head_end = offset.next_multiple_of(SECTOR).min(end);
        if head_end > offset {
            self.write_at(offset, &vec![0u8; (head_end - offset) as usize])?;
        }
        if head_end == end {
            return Ok(());
        }
        let middle_end = end / SECTOR * SECTOR;
        if middle_end > head_end {
            for (extent, at, piece) in self.per_extent(head_end, middle_end - head_end) {
                // Under the extent's lock: a lazy re-encryption of the extent never runs
                // across the punch.
                let _exclusive = self.stripe(extent).write().expect("extent lock poisoned");
                rustix::fs::fallocate(
                    &self.file,
                    rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                    self.data_offset + at,
                    piece,
                )
                .map_err(|e| io(format!("punching a hole in {}", self.path.display()))(e.into()))?;
            }
        }
        if end > middle_end {
            self.write_at(middle_end, &vec![0u8; (end - middle_end) as usize])?;
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: Payload<'_>) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        let current = self.current_generation();
        let mut rest = data;
        for (extent, at, len) in self.per_extent(offset, rest.len() as u64) {
            let (piece, after) = rest.split_at(len as usize);
            rest = after;
            let _exclusive = self.stripe(extent).write().expect("extent lock poisoned");
            if self.generation_of(extent) == current {
                self.write_in_extent(at, piece, current)?;
            } else {
                self.reencrypt_extent(extent, Some((at, piece.as_slice())))?;
            }
        }
        Ok(())
    }

    /// Writes within one extent that is on `generation` (its lock held).
    fn write_in_extent(&self, at: u64, data: Payload<'_>, generation: u8) -> Result<()> {
        let first = at / SECTOR;
        let last = (at + data.len() as u64 - 1) / SECTOR;
        let skip = (at - first * SECTOR) as usize;
        let aligned = skip == 0 && data.len().is_multiple_of(SECTOR_SIZE);
        let mut own;
        let sectors: &mut [u8] = match data {
            Payload::Scratch(data) if aligned => data,
            data => {
                own = vec![0u8; ((last - first + 1) * SECTOR) as usize];
                if !aligned {
                    // Only the edge sectors need their old contents.
                    self.read_sectors(first, &mut own[..SECTOR_SIZE], generation)?;
                    if last > first {
                        let tail = own.len() - SECTOR_SIZE;
                        self.read_sectors(last, &mut own[tail..], generation)?;
                    }
                }
                own[skip..skip + data.len()].copy_from_slice(data.as_slice());
                &mut own
            }
        };
        let mut xts = self.xts(generation)?;
        let encrypted = xts.encrypt_sectors(first, sectors);
        self.give_back(generation, xts);
        encrypted?;
        self.file
            .write_all_at(sectors, self.data_offset + first * SECTOR)
            .map_err(|e| io(format!("writing {}", self.path.display()))(e))
    }

    fn injected(&self, step: u8) -> Result<()> {
        if self.crash_after.load(Ordering::Relaxed) == step {
            return Err(VolumeError::Invalid(format!("injected crash after step {step}")));
        }
        Ok(())
    }

    /// Fails the next re-encryption after `step` (1: journal written, 2: extent written in
    /// place, 3: map updated), leaving the file as a crash at that point would. For
    /// fault-injection tests.
    #[doc(hidden)]
    pub fn inject_crash_after(&self, step: u8) {
        self.crash_after.store(step, Ordering::Relaxed);
    }

    /// Re-encrypts one extent (its lock held) under the current generation, with `patch`
    /// (an offset in the volume and bytes) applied. Crash-safe: the new ciphertext goes to
    /// the journal first (fdatasync), then in place (fdatasync), then the map (fdatasync);
    /// opening a volume replays a valid journal.
    fn reencrypt_extent(&self, extent: u64, patch: Option<(u64, &[u8])>) -> Result<()> {
        let _journal = self.journal.lock().expect("journal lock poisoned");
        let old = self.generation_of(extent);
        let current = self.current_generation();
        let start = extent * EXTENT_SIZE;
        let len = EXTENT_SIZE.min(self.size - start) as usize;
        let first = start / SECTOR;
        let mut plain = vec![0u8; len];
        self.read_sectors(first, &mut plain, old)?;
        // Holes stay holes unless written now.
        let mut keep = vec![false; len / SECTOR_SIZE];
        for (i, sector) in plain.chunks_exact(SECTOR_SIZE).enumerate() {
            keep[i] = sector.iter().any(|b| *b != 0);
        }
        if let Some((at, data)) = patch {
            let o = (at - start) as usize;
            plain[o..o + data.len()].copy_from_slice(data);
            for k in &mut keep[o / SECTOR_SIZE..(o + data.len()).div_ceil(SECTOR_SIZE)] {
                *k = true;
            }
        }
        let mut xts = Xts::new(&self.key(current)?)?;
        for (i, sector) in plain.chunks_exact_mut(SECTOR_SIZE).enumerate() {
            if keep[i] {
                xts.encrypt_sectors(first + i as u64, sector)?;
            } else {
                sector.fill(0);
            }
        }
        let sync = |what: &str| {
            self.file
                .sync_data()
                .map_err(io(format!("{what} of {}", self.path.display())))
        };
        let journal = self.journal_offset;
        let write = |bytes: &[u8], at: u64, what: &str| {
            self.file
                .write_all_at(bytes, at)
                .map_err(io(format!("{what} of {}", self.path.display())))
        };
        write(&plain, journal + JOURNAL_RECORD, "writing the journal")?;
        write(&journal_record(extent, current, &plain), journal, "writing the journal")?;
        sync("syncing the journal")?;
        self.injected(1)?;
        // In place, only the sectors holding data: holes are zeros on disk already, and
        // stay unallocated.
        let mut i = 0;
        while i < keep.len() {
            if !keep[i] {
                i += 1;
                continue;
            }
            let run = keep[i..].iter().take_while(|k| **k).count();
            let bytes = &plain[i * SECTOR_SIZE..(i + run) * SECTOR_SIZE];
            write(
                bytes,
                self.data_offset + start + (i * SECTOR_SIZE) as u64,
                "re-encrypting an extent",
            )?;
            i += run;
        }
        sync("syncing an extent")?;
        self.injected(2)?;
        self.set_generation(extent, current)?;
        sync("syncing the extent map")?;
        self.injected(3)?;
        write(&[0u8; JOURNAL_RECORD as usize], journal, "clearing the journal")
    }

    fn set_generation(&self, extent: u64, generation: u8) -> Result<()> {
        self.file
            .write_all_at(&[generation], MAP_OFFSET + extent)
            .map_err(io(format!("updating the extent map of {}", self.path.display())))?;
        self.map[extent as usize].store(generation, Ordering::Release);
        Ok(())
    }

    /// Finishes a re-encryption that a crash interrupted: a valid journal record is written
    /// in place again and its map entry set (idempotent); an invalid one is ignored.
    fn replay_journal(&self) -> Result<()> {
        let journal = self.journal_offset;
        let mut record = vec![0u8; JOURNAL_RECORD as usize];
        self.file
            .read_exact_at(&mut record, journal)
            .map_err(io(format!("reading the journal of {}", self.path.display())))?;
        if &record[..4] != JOURNAL_MAGIC || record[4] != 1 {
            return Ok(());
        }
        let generation = record[5];
        let extent = u64::from_be_bytes(record[6..14].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(record[14..18].try_into().expect("4 bytes")) as usize;
        if extent >= self.extents || len as u64 > EXTENT_SIZE || self.key(generation).is_err() {
            return Ok(());
        }
        let mut data = vec![0u8; len];
        self.file
            .read_exact_at(&mut data, journal + JOURNAL_RECORD)
            .map_err(io(format!("reading the journal of {}", self.path.display())))?;
        if journal_record(extent, generation, &data) != record {
            return Ok(()); // torn: the extent and map were not touched yet
        }
        tracing::info!(volume = %self.path.display(), extent, generation, "finishing an interrupted re-encryption");
        let io_err = io(format!("replaying the journal of {}", self.path.display()));
        (|| {
            self.file.write_all_at(&data, self.data_offset + extent * EXTENT_SIZE)?;
            self.file.write_all_at(&[generation], MAP_OFFSET + extent)?;
            self.file.sync_data()?;
            self.file.write_all_at(&[0u8; JOURNAL_RECORD as usize], journal)?;
            self.file.sync_data()
        })()
        .map_err(io_err)?;
        self.map[extent as usize].store(generation, Ordering::Release);
        Ok(())
    }

    /// Writes `header` to the slot not holding the current one and syncs, then to the other
    /// slot too and syncs again (state locked). A crash during the first write leaves the old
    /// header in the other slot; during the second, the new one in the first. Afterwards both
    /// copies are the same, so no stale copy can name a generation that was dropped (nor keep
    /// its wrapped key), and a damaged copy has an identical twin.
    fn write_header(&self, state: &mut KeyState, header: VolumeHeader) -> Result<()> {
        let other = 1 - state.slot;
        let bytes = header.encode().map_err(|source| VolumeError::Header {
            path: self.path.clone(),
            source,
        })?;
        for slot in [other, state.slot] {
            self.file
                .write_all_at(&bytes, slot as u64 * SLOT_LEN)
                .and_then(|()| self.file.sync_data())
                .map_err(io(format!("writing the header of {}", self.path.display())))?;
        }
        state.header = header;
        state.slot = other;
        Ok(())
    }

    /// Adds a data-key generation wrapped by the current version of the volume's master key.
    /// New writes use it at once; each extent moves to it on its next write (or with
    /// [`Volume::reencrypt_next`]). Returns the new generation's id.
    pub fn rotate(&self, keys: &Arc<dyn KeyProvider>) -> Result<u8> {
        let last = self.last_generation();
        let id = last
            .id
            .checked_add(1)
            .ok_or_else(|| VolumeError::Invalid("255 generations: run `volume reencrypt` first".into()))?;
        let generation = new_generation(keys, &last.key_id, &self.uuid, id)?;
        let dek = keys.unwrap_data_key(
            &base64::engine::general_purpose::STANDARD
                .decode(&generation.wrapped_dek)
                .map_err(|e| VolumeError::Invalid(e.to_string()))?,
            &key_aad(&self.uuid, id),
        )?;
        let key = xts_key(dek.expose(), &self.uuid, id)?;
        let mut state = self.state.write().expect("volume key state poisoned");
        if state.header.current_generation() != last.id {
            return Err(VolumeError::Invalid("the volume was rotated meanwhile".into()));
        }
        let mut header = state.header.clone();
        header.sequence += 1;
        header.generations.push(generation);
        // The key first: writers that see the new generation must find its key.
        state.keys.push((id, key));
        if let Err(e) = self.write_header(&mut state, header) {
            state.keys.pop();
            return Err(e);
        }
        Ok(id)
    }

    /// Rotates when the volume's master key has a newer primary version than the one wrapping
    /// the current generation (the key was rotated in the KMS): returns the new generation.
    pub fn rotate_if_key_rotated(&self, keys: &Arc<dyn KeyProvider>) -> Result<Option<u8>> {
        let last = self.last_generation();
        if keys.primary_version(&last.key_id)? == last.key_version_id {
            return Ok(None);
        }
        self.rotate(keys).map(Some)
    }

    /// Re-encrypts every extent not on the current generation, extent by extent (each under
    /// its lock: readers and writers go on), at most `max_mib_per_sec` MiB per second (0: no
    /// limit), then flushes. `after_each` is called after every extent; returning false stops
    /// the sweep there (the finished extents stay done). Returns the extents re-encrypted and
    /// whether the sweep was stopped.
    pub fn reencrypt_all(&self, max_mib_per_sec: u64, mut after_each: impl FnMut(u64) -> bool) -> Result<(u64, bool)> {
        let started = std::time::Instant::now();
        let (mut from, mut done) = (0, 0u64);
        let mut stopped = false;
        while let Some(extent) = self.reencrypt_next(from)? {
            from = extent + 1;
            done += 1;
            if !after_each(done) {
                stopped = true;
                break;
            }
            if max_mib_per_sec > 0 {
                // Extents are 1 MiB: done MiB should take done / rate seconds.
                let due = std::time::Duration::from_secs_f64(done as f64 / max_mib_per_sec as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        self.flush()?;
        Ok((done, stopped))
    }

    /// Re-encrypts the first extent at or after `from` that is not on the current generation;
    /// returns its index, or `None` when every extent is current.
    pub fn reencrypt_next(&self, from: u64) -> Result<Option<u64>> {
        let current = self.current_generation();
        let Some(extent) = (from..self.extents).find(|e| self.generation_of(*e) != current) else {
            return Ok(None);
        };
        let _exclusive = self.stripe(extent).write().expect("extent lock poisoned");
        if self.generation_of(extent) != current {
            self.reencrypt_extent(extent, None)?;
        }
        Ok(Some(extent))
    }

    /// Drops generations no extent uses any more (never the current one) from the header;
    /// returns their ids and master key versions.
    pub fn drop_unused_generations(&self) -> Result<Vec<Generation>> {
        let used = self.extents_per_generation();
        let mut state = self.state.write().expect("volume key state poisoned");
        let current = state.header.current_generation();
        let (keep, dropped): (Vec<_>, Vec<_>) = state
            .header
            .generations
            .iter()
            .cloned()
            .partition(|g| g.id == current || used.get(&g.id).copied().unwrap_or(0) > 0);
        if dropped.is_empty() {
            return Ok(dropped);
        }
        let mut header = state.header.clone();
        header.sequence += 1;
        header.generations = keep;
        self.write_header(&mut state, header)?;
        state.keys.retain(|(id, _)| dropped.iter().all(|g| g.id != *id));
        drop(state);
        self.contexts
            .lock()
            .expect("xts pool poisoned")
            .retain(|(id, _)| dropped.iter().all(|g| g.id != *id));
        Ok(dropped)
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
}

/// A new generation `id`: a data key from the KMS, wrapped by `key_id`'s current version.
fn new_generation(keys: &Arc<dyn KeyProvider>, key_id: &Ocid, uuid: &str, id: u8) -> Result<Generation> {
    let data_key = keys.generate_data_key(key_id, &key_aad(uuid, id))?;
    Ok(Generation {
        id,
        key_id: data_key.key_id,
        key_version_id: data_key.key_version_id,
        wrapped_dek: base64::engine::general_purpose::STANDARD.encode(&data_key.wrapped),
    })
}

/// Reads the newest valid header of a volume file.
pub fn read_header(path: &Path) -> Result<VolumeHeader> {
    let file = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    read_slots(path, &file).map(|(h, _)| h)
}

/// The newest valid header of an open volume file and the slot holding it.
fn read_slots(path: &Path, file: &File) -> Result<(VolumeHeader, usize)> {
    let mut slots = vec![0u8; 2 * SLOT_LEN as usize];
    let n = read_up_to(file, &mut slots, 0).map_err(io(format!("reading {}", path.display())))?;
    slots.truncate(n);
    let (a, b) = slots.split_at((SLOT_LEN as usize).min(slots.len()));
    let newest = VolumeHeader::newest(a, b).map_err(|source| VolumeError::Header {
        path: path.to_owned(),
        source,
    })?;
    let other = if newest.1 == 0 { b } else { a };
    if VolumeHeader::parse(other).map_or(true, |h| h.sequence != newest.0.sequence) {
        tracing::warn!(volume = %path.display(), "a header copy is damaged or stale; `sealstore volume check --repair` rewrites it");
    }
    Ok(newest)
}

/// The extent generation map of a volume file (read without keys).
pub(crate) fn read_map(path: &Path, header: &VolumeHeader) -> Result<Vec<u8>> {
    let mut map = vec![0u8; header.extents() as usize];
    let file = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    file.read_exact_at(&mut map, MAP_OFFSET)
        .map_err(io(format!("reading the extent map of {}", path.display())))?;
    Ok(map)
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

/// Checks a volume file without keys: both header copies (a damaged or stale copy is an
/// error, unless `repair` rewrites it from the newest valid one — the volume must not be in
/// use then), the expected file length, and the extent map. Returns what was found, for
/// `volume check`.
pub fn check(path: &Path, repair: bool) -> Result<String> {
    let copies = check_header_copies(path, repair)?;
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
    let map = read_map(path, &header)?;
    let known: Vec<u8> = header.generations.iter().map(|g| g.id).collect();
    if let Some(bad) = map.iter().position(|g| !known.contains(g)) {
        return Err(VolumeError::Invalid(format!(
            "{}: extent {bad} names generation {}, which the header does not have",
            path.display(),
            map[bad]
        )));
    }
    Ok(format!(
        "header sequence {}, {copies}, {} generation(s), {} extent(s), file {} bytes: consistent",
        header.sequence,
        header.generations.len(),
        header.extents(),
        len
    ))
}

/// Both header slots: what is wrong with either (damaged, or stale: an older sequence than
/// the other), and with `repair` the bad one rewritten from the good one.
fn check_header_copies(path: &Path, repair: bool) -> Result<String> {
    let file = OpenOptions::new()
        .read(true)
        .write(repair)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    let mut slots = vec![0u8; 2 * SLOT_LEN as usize];
    let n = read_up_to(&file, &mut slots, 0).map_err(io(format!("reading {}", path.display())))?;
    slots.truncate(n);
    let (a, b) = slots.split_at((SLOT_LEN as usize).min(slots.len()));
    let (_, good) = VolumeHeader::newest(a, b).map_err(|source| VolumeError::Header {
        path: path.to_owned(),
        source,
    })?;
    let parsed = [VolumeHeader::parse(a), VolumeHeader::parse(b)];
    let name = |slot: usize| if slot == 0 { "A" } else { "B" };
    let bad = 1 - good;
    let newest = parsed[good].as_ref().expect("newest is valid").sequence;
    let problem = match &parsed[bad] {
        Err(e) => Some(format!("header copy {} is damaged ({e})", name(bad))),
        Ok(h) if h.sequence != newest => Some(format!(
            "header copy {} is stale (sequence {}, the newest is {newest})",
            name(bad),
            h.sequence
        )),
        Ok(_) => None,
    };
    match problem {
        None => Ok("both header copies valid and the same".into()),
        Some(problem) if !repair => Err(VolumeError::Invalid(format!(
            "{}: {problem}; `sealstore volume check NAME --repair` rewrites it from copy {}",
            path.display(),
            name(good)
        ))),
        Some(problem) => {
            file.try_lock().map_err(|_| {
                VolumeError::Invalid(format!(
                    "volume {} is in use by another process: stop it to repair",
                    path.display()
                ))
            })?;
            let good_bytes = if good == 0 { a } else { b };
            file.write_all_at(good_bytes, bad as u64 * SLOT_LEN)
                .and_then(|()| file.sync_data())
                .map_err(io(format!("repairing the header of {}", path.display())))?;
            Ok(format!("{problem}: repaired from copy {}", name(good)))
        }
    }
}

/// Data to write: borrowed, or lent as scratch space that may be encrypted in place.
enum Payload<'a> {
    Shared(&'a [u8]),
    Scratch(&'a mut [u8]),
}

impl<'a> Payload<'a> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Shared(d) => d,
            Payload::Scratch(d) => d,
        }
    }

    fn split_at(self, mid: usize) -> (Payload<'a>, Payload<'a>) {
        match self {
            Payload::Shared(d) => {
                let (a, b) = d.split_at(mid);
                (Payload::Shared(a), Payload::Shared(b))
            }
            Payload::Scratch(d) => {
                let (a, b) = d.split_at_mut(mid);
                (Payload::Scratch(a), Payload::Scratch(b))
            }
        }
    }
}
