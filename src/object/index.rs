//! The object metadata index: bucket/key → plaintext size, ETag, content type, user
//! metadata, the master key version (or customer key check) that wraps the object's data
//! key, and time; buckets with their default encryption; multipart uploads in progress.
//!
//! Kept in its own namespace of the metadata store (`objects.redb` in the data directory, or
//! a shared PostgreSQL database) so that listing
//! never reads object headers, and so the key-version inventory ("how many objects does each
//! version still protect") is a scan of small records. The objects themselves are the
//! truth: `sealstore index rebuild` recreates the index from them.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use kms_core::Ocid;
use sealstore_meta::{between, Durability, Engine, Location, Namespace, Table, WriteTxn, ALL};
use serde::{Deserialize, Serialize};

pub(crate) use super::encryption::BucketEncryption;
pub use super::encryption::{Encryption, UploadEncryption};
use super::error::IndexError;

/// `"{bucket}\0{key}"` → JSON [`ObjectEntry`].
const OBJECTS: Table = Table::str_to_bytes("objects");

/// Sweep name → last object key done (`"{bucket}\0{key}"` form is not needed: one bucket per sweep).
const CHECKPOINTS: Table = Table::str_to_str("sweep_checkpoints");

/// Upload id → JSON [`UploadRecord`].
const UPLOADS: Table = Table::str_to_bytes("multipart_uploads");
/// `"{upload id}\0{part number:05}"` → JSON [`PartRecord`].
const UPLOAD_PARTS: Table = Table::str_to_bytes("multipart_parts");

/// Facts about the index itself: `"objectLayout"` → the layout version every entry without
/// a layout of its own was written in ([`Layout`]).
const META: Table = Table::str_to_str("meta");

/// Bucket name → creation time (RFC 3339).
const BUCKETS: Table = Table::str_to_str("buckets");
/// bucket name → JSON [`StoredBucketEncryption`], for buckets with a configuration of their own.
const BUCKET_ENCRYPTION: Table = Table::str_to_bytes("bucket_encryption");

/// The index file name in the data directory.
pub(crate) const INDEX_FILE: &str = "objects.redb";

/// The index's namespace of the metadata store.
pub(crate) const NAMESPACE: Namespace = Namespace {
    name: "objects",
    file: INDEX_FILE,
    tables: &[
        OBJECTS,
        CHECKPOINTS,
        BUCKETS,
        BUCKET_ENCRYPTION,
        UPLOADS,
        UPLOAD_PARTS,
        META,
    ],
    private: false,
};

/// A bucket's default encryption as the `bucket_encryption` table stores it (docs/FORMATS.md,
/// "Object index: bucket default encryption"): `{"algorithm":"AES256"}` for the service's
/// key, and `{"algorithm":"aws:kms","keyId":…}` (an OCID or `null`) for a master key. The
/// tags are the S3 names the first versions stored; the form is fixed, so that every index,
/// older or newer, reads the same.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm")]
enum StoredBucketEncryption {
    /// [`BucketEncryption::ServiceKey`].
    #[serde(rename = "AES256")]
    ServiceKey,
    /// [`BucketEncryption::Kms`].
    #[serde(rename = "aws:kms", rename_all = "camelCase")]
    Kms { key_id: Option<Ocid> },
}

impl From<&BucketEncryption> for StoredBucketEncryption {
    fn from(e: &BucketEncryption) -> Self {
        match e {
            BucketEncryption::ServiceKey => StoredBucketEncryption::ServiceKey,
            BucketEncryption::Kms { key_id } => StoredBucketEncryption::Kms { key_id: key_id.clone() },
        }
    }
}

impl From<StoredBucketEncryption> for BucketEncryption {
    fn from(e: StoredBucketEncryption) -> Self {
        match e {
            StoredBucketEncryption::ServiceKey => BucketEncryption::ServiceKey,
            StoredBucketEncryption::Kms { key_id } => BucketEncryption::Kms { key_id },
        }
    }
}

/// Where an object's ciphertext is, in the backend (docs/FORMATS.md, "Object layout").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Layout {
    /// Layout 1 (before layout 2): `<bucket>/<object_store path of the key>`, sealed under
    /// that path as the key. Read, rewritten into layout 2, or deleted; never written.
    Legacy,
    /// Layout 2: `_buckets/<bucket>/objects/<encoded key>` (`object::layout`).
    #[default]
    Current,
}

impl From<Layout> for u8 {
    fn from(l: Layout) -> u8 {
        match l {
            Layout::Legacy => 1,
            Layout::Current => 2,
        }
    }
}

impl TryFrom<u8> for Layout {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(Layout::Legacy),
            2 => Ok(Layout::Current),
            other => Err(format!("unknown object layout {other}")),
        }
    }
}

/// Entries written before layouts were recorded are in layout 1.
fn legacy_layout() -> Layout {
    Layout::Legacy
}

/// The standard HTTP headers S3 stores with an object and returns on GET and HEAD (besides
/// `Content-Type`, kept on its own since the first version of the index).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentHeaders {
    /// `Cache-Control`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// `Content-Disposition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    /// `Content-Encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    /// `Content-Language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// `Expires`, as the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// What the index knows about one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectEntry {
    /// Plaintext size in bytes.
    pub size: u64,
    /// Hex MD5 of the plaintext (S3's ETag for single-part uploads).
    pub etag: String,
    /// Content type given at upload.
    pub content_type: Option<String>,
    /// `x-amz-meta-*` pairs.
    #[serde(default)]
    pub user_metadata: BTreeMap<String, String>,
    /// What wraps the data key.
    #[serde(flatten)]
    pub encryption: Encryption,
    /// When the object was last written.
    pub last_modified: DateTime<Utc>,
    /// Standard headers stored with the object.
    #[serde(default, flatten)]
    pub headers: ContentHeaders,
    /// Plaintext sizes of the parts a multipart upload was completed from, in order (empty
    /// for objects written in one piece): what `?partNumber=N` reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<u64>,
    /// Where the ciphertext is.
    #[serde(default = "legacy_layout")]
    pub layout: Layout,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRecord {
    /// Bucket.
    pub bucket: String,
    /// Key the object will have.
    pub key: String,
    /// Content type for the object.
    pub content_type: Option<String>,
    /// User metadata for the object.
    #[serde(default)]
    pub user_metadata: BTreeMap<String, String>,
    /// Standard headers for the object.
    #[serde(default, flatten)]
    pub headers: ContentHeaders,
    /// When the upload was created.
    pub initiated: DateTime<Utc>,
    /// How the parts and the object are encrypted (`None` in records written before
    /// uploads chose: the service's default key).
    #[serde(default)]
    pub encryption: Option<UploadEncryption>,
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartRecord {
    /// Plaintext size.
    pub size: u64,
    /// Hex MD5 of the part's plaintext.
    pub etag: String,
    /// When it was uploaded.
    pub last_modified: DateTime<Utc>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Objects, in key order.
    pub objects: Vec<(String, ObjectEntry)>,
    /// Common prefixes (with `delimiter`), in order.
    pub common_prefixes: Vec<String>,
    /// Where the next page starts (exclusive), when there is one.
    pub next_start_after: Option<String>,
}

/// What [`ObjectIndex::delete_bucket_and_uploads`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BucketDeletion {
    /// The bucket is gone, with these uploads in progress (whose parts are to be deleted).
    Deleted {
        /// Upload ids.
        uploads: Vec<String>,
    },
    /// The bucket holds objects: nothing changed.
    NotEmpty,
    /// There is no such bucket.
    NoSuchBucket,
}

/// Objects and bytes protected by one master key version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryLine {
    /// The master key the version belongs to.
    pub key_id: Ocid,
    /// Objects.
    pub objects: u64,
    /// Plaintext bytes.
    pub bytes: u64,
}

/// The object index.
#[derive(Debug)]
pub struct ObjectIndex {
    engine: Arc<dyn Engine>,
    /// Object entries waiting to be committed together (see [`ObjectIndex::put_if_bucket`]).
    group: GroupCommit,
}

/// Group commit of object entries: writers queue their entry, and one of them (the leader,
/// who holds `leader`) commits everything queued in one transaction, one fsync, then tells
/// each writer of the batch how its entry fared. Each entry is durable before its writer
/// returns, as with a commit of its own; while a leader waits on the disk, the entries of the
/// next batch gather.
#[derive(Debug, Default)]
struct GroupCommit {
    queue: Mutex<Vec<PendingEntry>>,
    leader: Mutex<()>,
}

/// One writer's entry waiting for a group commit, and where it hears the outcome: whether
/// the bucket existed (and the entry was stored), or why the commit failed.
#[derive(Debug)]
struct PendingEntry {
    bucket: String,
    row: String,
    value: Vec<u8>,
    outcome: Arc<Mutex<Option<Result<bool, String>>>>,
}

/// The lock, even if a thread panicked holding it (what it guards stays consistent: a queue,
/// outcomes written whole).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The keys `"{owner}\0…"` of a table: a bucket's objects, an upload's parts.
fn rows_of(owner: &str) -> (String, String) {
    (format!("{owner}\0"), format!("{owner}\u{1}"))
}

/// Removes the rows `"{owner}\0…"` of a table (a bucket's objects, an upload's parts); returns
/// how many there were.
fn remove_rows_of(txn: &dyn WriteTxn, table: Table, owner: &str) -> Result<u64, IndexError> {
    let (start, end) = rows_of(owner);
    let mut keys = Vec::new();
    txn.scan(table, between(start.as_bytes(), end.as_bytes()), &mut |k, _| {
        keys.push(k.to_vec());
        Ok(ControlFlow::Continue(()))
    })?;
    for k in &keys {
        txn.remove(table, k)?;
    }
    Ok(keys.len() as u64)
}

/// A key or value the index wrote as UTF-8.
fn utf8<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, IndexError> {
    std::str::from_utf8(bytes).map_err(|_| IndexError::Corrupt(what))
}

fn row_key(bucket: &str, key: &str) -> String {
    format!("{bucket}\0{key}")
}

/// A string greater than every string that starts with `prefix`: its last character moved
/// one up (prefixes end with a delimiter, in practice '/'). Should that character have no
/// successor, U+10FFFF is appended instead; the few keys that could still follow are read
/// again and skipped as already rolled up.
fn past_prefix(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    match chars.pop() {
        Some(last) => match char::from_u32(last as u32 + 1) {
            Some(next) => {
                chars.push(next);
                chars.into_iter().collect()
            }
            None => format!("{prefix}\u{10FFFF}"),
        },
        None => String::from("\u{10FFFF}"),
    }
}

impl ObjectIndex {
    /// Opens (creating) `objects.redb` in `data_dir`.
    pub fn open(data_dir: &std::path::Path) -> Result<ObjectIndex, IndexError> {
        Self::open_at(&Location::Dir(data_dir.to_owned()))
    }

    /// Opens (creating) the index at `location`: `objects.redb` in a data directory, or the
    /// index's namespace of a shared database.
    pub fn open_at(location: &Location) -> Result<ObjectIndex, IndexError> {
        Ok(ObjectIndex {
            engine: location.open(&NAMESPACE)?,
            group: GroupCommit::default(),
        })
    }

    /// Whether other servers share this index (then writers also lock keys fleet-wide).
    pub(crate) fn is_shared(&self) -> bool {
        self.engine.is_shared()
    }

    /// Takes the fleet-wide lock `name` in the index's engine (`None` when not shared);
    /// blocks.
    pub(crate) fn fleet_lock(&self, name: &str) -> Result<Option<sealstore_meta::LockGuard>, IndexError> {
        Ok(self.engine.lock(&format!("object\0{name}"))?)
    }

    /// Takes or renews the lease `name` of the index for `holder` (see
    /// [`sealstore_meta::Engine::lease`]).
    pub(crate) fn lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool, IndexError> {
        Ok(self.engine.lease(name, holder, ttl)?)
    }

    /// A durable write transaction.
    fn write(&self) -> Result<Box<dyn WriteTxn + '_>, IndexError> {
        Ok(self.engine.write(Durability::Immediate)?)
    }

    /// The object layout recorded for the index (`None`: written before layouts were).
    pub fn layout_version(&self) -> Result<Option<u8>, IndexError> {
        let v = self.engine.get_one(META, b"objectLayout")?;
        v.map(|v| {
            utf8(&v, "corrupt layout version")?
                .parse()
                .map_err(|_| IndexError::Corrupt("corrupt layout version"))
        })
        .transpose()
    }

    /// Records the index's object layout.
    pub(crate) fn set_layout_version(&self, version: u8) -> Result<(), IndexError> {
        let txn = self.write()?;
        txn.insert(META, b"objectLayout", version.to_string().as_bytes())?;
        txn.commit()?;
        Ok(())
    }

    /// Every object of every bucket, in (bucket, key) order: for one-off passes over the
    /// whole index (layout upgrades).
    pub(crate) fn all_objects(&self) -> Result<Vec<(String, String, ObjectEntry)>, IndexError> {
        let txn = self.engine.read()?;
        let mut out = Vec::new();
        for (k, v) in sealstore_meta::collect(&*txn, OBJECTS, ALL)? {
            let (bucket, key) = utf8(&k, "corrupt object row")?
                .split_once('\0')
                .ok_or(IndexError::Corrupt("corrupt object row"))?;
            out.push((bucket.to_owned(), key.to_owned(), serde_json::from_slice(&v)?));
        }
        Ok(out)
    }

    /// Forgets a bucket that holds no object, together with its uploads in progress and
    /// their parts, in one transaction (so no object can be recorded in it meanwhile).
    pub(crate) fn delete_bucket_and_uploads(&self, name: &str) -> Result<BucketDeletion, IndexError> {
        let txn = self.write()?;
        let (start, end) = rows_of(name);
        let mut any = false;
        txn.scan(OBJECTS, between(start.as_bytes(), end.as_bytes()), &mut |_, _| {
            any = true;
            Ok(ControlFlow::Break(()))
        })?;
        if any {
            return Ok(BucketDeletion::NotEmpty);
        }
        if !txn.remove(BUCKETS, name.as_bytes())? {
            return Ok(BucketDeletion::NoSuchBucket);
        }
        txn.remove(BUCKET_ENCRYPTION, name.as_bytes())?;
        let mut uploads = Vec::new();
        for (k, v) in sealstore_meta::collect(&*txn, UPLOADS, ALL)? {
            let record: UploadRecord = serde_json::from_slice(&v)?;
            if record.bucket == name {
                uploads.push(utf8(&k, "corrupt upload id")?.to_owned());
            }
        }
        for id in &uploads {
            txn.remove(UPLOADS, id.as_bytes())?;
            remove_rows_of(&*txn, UPLOAD_PARTS, id)?;
        }
        txn.commit()?;
        Ok(BucketDeletion::Deleted { uploads })
    }

    /// Records (or replaces) an object, if its bucket still exists (false, and nothing
    /// recorded, when it does not: the bucket was deleted while the object was written).
    /// Durable when it returns. Blocks on the disk and on other writers: concurrent calls are
    /// committed together, many entries to one transaction and one fsync (call it from a
    /// blocking thread, so that they can gather).
    pub(crate) fn put_if_bucket(&self, bucket: &str, key: &str, entry: &ObjectEntry) -> Result<bool, IndexError> {
        let outcome = Arc::new(Mutex::new(None));
        lock(&self.group.queue).push(PendingEntry {
            bucket: bucket.to_owned(),
            row: row_key(bucket, key),
            value: serde_json::to_vec(entry)?,
            outcome: outcome.clone(),
        });
        let _leader = lock(&self.group.leader);
        // A leader before us may have committed our entry with its batch.
        if let Some(done) = lock(&outcome).take() {
            return done.map_err(IndexError::GroupCommit);
        }
        let batch = std::mem::take(&mut *lock(&self.group.queue));
        let committed = self.commit_entries(&batch);
        let mut own = None;
        for (i, pending) in batch.iter().enumerate() {
            if Arc::ptr_eq(&pending.outcome, &outcome) {
                own = Some(i);
            } else {
                *lock(&pending.outcome) = Some(match &committed {
                    Ok(stored) => Ok(stored[i]),
                    Err(e) => Err(e.to_string()),
                });
            }
        }
        match (committed, own) {
            (Ok(stored), Some(i)) => Ok(stored[i]),
            (Err(e), Some(_)) => Err(e),
            // Not queued any more, yet no outcome: the leader that took it panicked.
            (_, None) => Err(IndexError::GroupCommit(
                "the commit of this entry's batch was interrupted".into(),
            )),
        }
    }

    /// Stores each entry whose bucket exists, all in one transaction; says which were stored.
    fn commit_entries(&self, batch: &[PendingEntry]) -> Result<Vec<bool>, IndexError> {
        let txn = self.write()?;
        let mut stored = Vec::with_capacity(batch.len());
        for pending in batch {
            let exists = txn.get(BUCKETS, pending.bucket.as_bytes())?.is_some();
            if exists {
                txn.insert(OBJECTS, pending.row.as_bytes(), &pending.value)?;
            }
            stored.push(exists);
        }
        txn.commit()?;
        Ok(stored)
    }

    /// Registers a bucket; false when it already exists.
    pub fn create_bucket(&self, name: &str) -> Result<bool, IndexError> {
        let txn = self.write()?;
        if txn.get(BUCKETS, name.as_bytes())?.is_some() {
            return Ok(false);
        }
        txn.insert(BUCKETS, name.as_bytes(), Utc::now().to_rfc3339().as_bytes())?;
        txn.commit()?;
        Ok(true)
    }

    /// A bucket's default encryption (SSE-S3 unless configured otherwise).
    pub(crate) fn bucket_encryption(&self, name: &str) -> Result<BucketEncryption, IndexError> {
        match self.engine.get_one(BUCKET_ENCRYPTION, name.as_bytes())? {
            Some(v) => Ok(serde_json::from_slice::<StoredBucketEncryption>(&v)?.into()),
            None => Ok(BucketEncryption::default()),
        }
    }

    /// Sets (`Some`) or resets to SSE-S3 (`None`) a bucket's default encryption.
    pub(crate) fn set_bucket_encryption(
        &self,
        name: &str,
        config: Option<&BucketEncryption>,
    ) -> Result<(), IndexError> {
        let txn = self.write()?;
        match config {
            Some(c) => txn.insert(
                BUCKET_ENCRYPTION,
                name.as_bytes(),
                &serde_json::to_vec(&StoredBucketEncryption::from(c))?,
            )?,
            None => {
                txn.remove(BUCKET_ENCRYPTION, name.as_bytes())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Buckets with their creation times, by name.
    pub fn buckets(&self) -> Result<Vec<(String, DateTime<Utc>)>, IndexError> {
        let txn = self.engine.read()?;
        let mut out = Vec::new();
        for (k, v) in sealstore_meta::collect(&*txn, BUCKETS, ALL)? {
            let created = DateTime::parse_from_rfc3339(utf8(&v, "corrupt bucket creation time")?)
                .map_err(|_| IndexError::Corrupt("corrupt bucket creation time"))?
                .with_timezone(&Utc);
            out.push((utf8(&k, "corrupt bucket name")?.to_owned(), created));
        }
        Ok(out)
    }

    /// Whether a bucket exists.
    pub(crate) fn bucket_exists(&self, name: &str) -> Result<bool, IndexError> {
        Ok(self.engine.get_one(BUCKETS, name.as_bytes())?.is_some())
    }

    /// Records a new multipart upload.
    pub fn put_upload(&self, upload_id: &str, record: &UploadRecord) -> Result<(), IndexError> {
        let txn = self.write()?;
        txn.insert(UPLOADS, upload_id.as_bytes(), &serde_json::to_vec(record)?)?;
        txn.commit()?;
        Ok(())
    }

    /// A multipart upload in progress.
    pub fn upload(&self, upload_id: &str) -> Result<Option<UploadRecord>, IndexError> {
        let v = self.engine.get_one(UPLOADS, upload_id.as_bytes())?;
        Ok(v.map(|v| serde_json::from_slice(&v)).transpose()?)
    }

    /// Uploads in progress in `bucket`, by key then id.
    pub fn uploads(&self, bucket: &str) -> Result<Vec<(String, UploadRecord)>, IndexError> {
        let txn = self.engine.read()?;
        let mut out = Vec::new();
        for (k, v) in sealstore_meta::collect(&*txn, UPLOADS, ALL)? {
            let record: UploadRecord = serde_json::from_slice(&v)?;
            if record.bucket == bucket {
                out.push((utf8(&k, "corrupt upload id")?.to_owned(), record));
            }
        }
        out.sort_by(|a, b| (&a.1.key, &a.0).cmp(&(&b.1.key, &b.0)));
        Ok(out)
    }

    /// Records an uploaded part (replacing an earlier upload of the same number), if the
    /// upload is still in progress (false, and nothing recorded, when it is not).
    pub fn put_part(&self, upload_id: &str, part_number: u32, record: &PartRecord) -> Result<bool, IndexError> {
        let txn = self.write()?;
        if txn.get(UPLOADS, upload_id.as_bytes())?.is_none() {
            return Ok(false);
        }
        let key = format!("{upload_id}\0{part_number:05}");
        txn.insert(UPLOAD_PARTS, key.as_bytes(), &serde_json::to_vec(record)?)?;
        txn.commit()?;
        Ok(true)
    }

    /// The parts of an upload, by number.
    pub fn parts(&self, upload_id: &str) -> Result<Vec<(u32, PartRecord)>, IndexError> {
        let txn = self.engine.read()?;
        let (start, end) = rows_of(upload_id);
        let mut out = Vec::new();
        for (k, v) in sealstore_meta::collect(&*txn, UPLOAD_PARTS, between(start.as_bytes(), end.as_bytes()))? {
            let number = utf8(&k[upload_id.len() + 1..], "corrupt part number")?
                .parse()
                .map_err(|_| IndexError::Corrupt("corrupt part number"))?;
            out.push((number, serde_json::from_slice(&v)?));
        }
        Ok(out)
    }

    /// Forgets an upload and its parts.
    pub(crate) fn remove_upload(&self, upload_id: &str) -> Result<(), IndexError> {
        let txn = self.write()?;
        remove_rows_of(&*txn, UPLOAD_PARTS, upload_id)?;
        txn.remove(UPLOADS, upload_id.as_bytes())?;
        txn.commit()?;
        Ok(())
    }

    /// Records (or replaces) an object.
    pub fn put(&self, bucket: &str, key: &str, entry: &ObjectEntry) -> Result<(), IndexError> {
        let txn = self.write()?;
        txn.insert(OBJECTS, row_key(bucket, key).as_bytes(), &serde_json::to_vec(entry)?)?;
        txn.commit()?;
        Ok(())
    }

    /// Records many objects in one transaction (bulk loads, index rebuilds).
    pub fn put_many<'a>(
        &self,
        bucket: &str,
        entries: impl IntoIterator<Item = (&'a str, &'a ObjectEntry)>,
    ) -> Result<(), IndexError> {
        let txn = self.write()?;
        for (key, entry) in entries {
            txn.insert(OBJECTS, row_key(bucket, key).as_bytes(), &serde_json::to_vec(entry)?)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Records an object and, in the same transaction, that sweep `sweep` has done it: a crash
    /// leaves both or neither.
    pub(crate) fn put_with_checkpoint(
        &self,
        bucket: &str,
        key: &str,
        entry: &ObjectEntry,
        sweep: &str,
    ) -> Result<(), IndexError> {
        let txn = self.write()?;
        txn.insert(OBJECTS, row_key(bucket, key).as_bytes(), &serde_json::to_vec(entry)?)?;
        txn.insert(CHECKPOINTS, sweep.as_bytes(), key.as_bytes())?;
        txn.commit()?;
        Ok(())
    }

    /// Moves sweep `sweep`'s checkpoint past `key` (an object it had nothing to do for).
    pub(crate) fn set_checkpoint(&self, sweep: &str, key: &str) -> Result<(), IndexError> {
        let txn = self.write()?;
        txn.insert(CHECKPOINTS, sweep.as_bytes(), key.as_bytes())?;
        txn.commit()?;
        Ok(())
    }

    /// The last key sweep `sweep` finished, if it was interrupted.
    pub(crate) fn checkpoint(&self, sweep: &str) -> Result<Option<String>, IndexError> {
        let v = self.engine.get_one(CHECKPOINTS, sweep.as_bytes())?;
        v.map(|v| Ok(utf8(&v, "corrupt sweep checkpoint")?.to_owned()))
            .transpose()
    }

    /// Forgets sweep `sweep`'s checkpoint (it finished).
    pub(crate) fn clear_checkpoint(&self, sweep: &str) -> Result<(), IndexError> {
        let txn = self.write()?;
        txn.remove(CHECKPOINTS, sweep.as_bytes())?;
        txn.commit()?;
        Ok(())
    }

    /// Forgets an object.
    pub fn remove(&self, bucket: &str, key: &str) -> Result<(), IndexError> {
        let txn = self.write()?;
        txn.remove(OBJECTS, row_key(bucket, key).as_bytes())?;
        txn.commit()?;
        Ok(())
    }

    /// Forgets every object of a bucket (before a rebuild).
    pub(crate) fn clear_bucket(&self, bucket: &str) -> Result<u64, IndexError> {
        let txn = self.write()?;
        let removed = remove_rows_of(&*txn, OBJECTS, bucket)?;
        txn.commit()?;
        Ok(removed)
    }

    /// One object.
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<ObjectEntry>, IndexError> {
        let v = self.engine.get_one(OBJECTS, row_key(bucket, key).as_bytes())?;
        Ok(v.map(|v| serde_json::from_slice(&v)).transpose()?)
    }

    /// Lists `bucket` in key order: keys starting with `prefix`, after `start_after`, at most
    /// `max_keys` entries (objects plus common prefixes); with a `delimiter`, keys that contain
    /// it after the prefix are rolled up into common prefixes, as S3 does.
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, IndexError> {
        let txn = self.engine.read()?;
        let bucket_start = row_key(bucket, prefix);
        let start = match start_after {
            Some(after) if row_key(bucket, after) >= bucket_start => row_key(bucket, after),
            _ => bucket_start.clone(),
        };
        let end = format!("{bucket}\u{1}");
        let mut page = ListPage::default();
        let mut last_emitted: Option<String> = None;
        let mut from = start;
        let mut failed: Option<IndexError> = None;
        // Each pass walks the range until it rolls up a common prefix, then jumps past every
        // key under that prefix instead of reading them one by one.
        loop {
            let mut jump_to: Option<String> = None;
            let mut done = false;
            txn.scan(OBJECTS, between(from.as_bytes(), end.as_bytes()), &mut |k, v| {
                let Ok(row) = std::str::from_utf8(k) else {
                    failed = Some(IndexError::Corrupt("corrupt object row"));
                    return Ok(ControlFlow::Break(()));
                };
                let key = &row[bucket.len() + 1..];
                if !key.starts_with(prefix) {
                    done = true;
                    return Ok(ControlFlow::Break(()));
                }
                if Some(key) == start_after {
                    return Ok(ControlFlow::Continue(()));
                }
                let rolled_up = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
                    key[prefix.len()..]
                        .find(d)
                        .map(|at| key[..prefix.len() + at + d.len()].to_owned())
                });
                if let Some(common) = &rolled_up {
                    // Listed already (on an earlier page, or just now): skip its keys.
                    if last_emitted.as_ref() == Some(common)
                        || start_after.is_some_and(|after| common.as_str() <= after)
                    {
                        jump_to = Some(row_key(bucket, &past_prefix(common)));
                        return Ok(ControlFlow::Break(()));
                    }
                }
                if page.objects.len() + page.common_prefixes.len() == max_keys {
                    page.next_start_after = last_emitted.clone();
                    done = true;
                    return Ok(ControlFlow::Break(()));
                }
                match rolled_up {
                    Some(common) => {
                        jump_to = Some(row_key(bucket, &past_prefix(&common)));
                        last_emitted = Some(common.clone());
                        page.common_prefixes.push(common);
                        Ok(ControlFlow::Break(()))
                    }
                    None => match serde_json::from_slice(v) {
                        Ok(entry) => {
                            last_emitted = Some(key.to_owned());
                            page.objects.push((key.to_owned(), entry));
                            Ok(ControlFlow::Continue(()))
                        }
                        Err(e) => {
                            failed = Some(e.into());
                            Ok(ControlFlow::Break(()))
                        }
                    },
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            match jump_to {
                Some(next) if !done => from = next,
                _ => break,
            }
        }
        Ok(page)
    }

    /// Objects and bytes per master key version, over every bucket.
    pub fn inventory(&self) -> Result<BTreeMap<Ocid, InventoryLine>, IndexError> {
        let txn = self.engine.read()?;
        let mut out: BTreeMap<Ocid, InventoryLine> = BTreeMap::new();
        let mut failed: Option<IndexError> = None;
        txn.scan(OBJECTS, ALL, &mut |_, v| {
            let entry: ObjectEntry = match serde_json::from_slice(v) {
                Ok(entry) => entry,
                Err(e) => {
                    failed = Some(e.into());
                    return Ok(ControlFlow::Break(()));
                }
            };
            // Objects under customer keys depend on no master key.
            if let Encryption::Kms {
                key_id, key_version_id, ..
            } = entry.encryption
            {
                let line = out.entry(key_version_id).or_insert(InventoryLine {
                    key_id,
                    objects: 0,
                    bytes: 0,
                });
                line.objects += 1;
                line.bytes += entry.size;
            }
            Ok(ControlFlow::Continue(()))
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

impl kms_core::DataInventory for ObjectIndex {
    fn objects_protected_by(&self, key_version: &Ocid) -> kms_core::Result<u64> {
        self.inventory()
            .map(|inv| inv.get(key_version).map_or(0, |l| l.objects))
            .map_err(|e| kms_core::KmsError::Store(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: &str) -> ObjectEntry {
        ObjectEntry {
            size: 10,
            etag: "e".into(),
            content_type: None,
            user_metadata: BTreeMap::new(),
            encryption: Encryption::Kms {
                key_id: Ocid::parse(kms_core::ResourceType::Key, "ocid1.key.oc1.x.k").unwrap(),
                key_version_id: Ocid::parse(kms_core::ResourceType::KeyVersion, version).unwrap(),
                sse_kms: false,
            },
            last_modified: Utc::now(),
            headers: ContentHeaders::default(),
            parts: Vec::new(),
            layout: Layout::Current,
        }
    }

    /// Writers from many threads at once: every entry whose bucket exists is stored (and read
    /// back after the index is reopened: each was durable when its writer returned), the
    /// others are refused, whichever batch carried them.
    #[test]
    fn concurrent_puts_are_committed_in_groups_each_with_its_outcome() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Arc::new(ObjectIndex::open(dir.path()).unwrap());
            assert!(index.create_bucket("here").unwrap());
            let threads: Vec<_> = (0..16)
                .map(|t| {
                    let index = index.clone();
                    std::thread::spawn(move || {
                        for n in 0..20 {
                            let bucket = if (t + n) % 5 == 0 { "gone" } else { "here" };
                            let stored = index
                                .put_if_bucket(bucket, &format!("{t}/{n}"), &entry("ocid1.keyversion.oc1.x.v1"))
                                .unwrap();
                            assert_eq!(stored, bucket == "here", "{bucket} {t}/{n}");
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        let index = ObjectIndex::open(dir.path()).unwrap();
        for t in 0..16 {
            for n in 0..20 {
                let found = index.get("here", &format!("{t}/{n}")).unwrap();
                assert_eq!(found.is_some(), (t + n) % 5 != 0, "{t}/{n}");
                assert!(index.get("gone", &format!("{t}/{n}")).unwrap().is_none());
            }
        }
    }

    #[test]
    fn entries_without_a_layout_are_legacy() {
        let mut json = serde_json::to_value(entry("ocid1.keyversion.oc1.x.v1")).unwrap();
        assert_eq!(json["layout"], 2);
        json.as_object_mut().unwrap().remove("layout");
        let old: ObjectEntry = serde_json::from_value(json).unwrap();
        assert_eq!(old.layout, Layout::Legacy);
    }

    /// Bucket default encryption as the index has stored it from the start (with S3's names
    /// as tags): an index written so opens and means the same, and writes it the same way.
    #[test]
    fn bucket_encryption_reads_and_writes_the_stored_form() {
        let key = "ocid1.key.oc1.x.k";
        let stored: [(&str, String, BucketEncryption); 3] = [
            (
                "sse-s3",
                r#"{"algorithm":"AES256"}"#.into(),
                BucketEncryption::ServiceKey,
            ),
            (
                "sse-kms",
                format!(r#"{{"algorithm":"aws:kms","keyId":"{key}"}}"#),
                BucketEncryption::Kms {
                    key_id: Some(Ocid::parse(kms_core::ResourceType::Key, key).unwrap()),
                },
            ),
            (
                "sse-kms-default",
                r#"{"algorithm":"aws:kms","keyId":null}"#.into(),
                BucketEncryption::Kms { key_id: None },
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        {
            // An index database as earlier versions wrote it, record by record.
            let db = redb::Database::create(dir.path().join(INDEX_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut buckets = txn
                    .open_table(redb::TableDefinition::<&str, &str>::new(BUCKETS.name()))
                    .unwrap();
                let mut encryption = txn
                    .open_table(redb::TableDefinition::<&str, &[u8]>::new(BUCKET_ENCRYPTION.name()))
                    .unwrap();
                for (bucket, json, _) in &stored {
                    buckets.insert(*bucket, "2025-01-01T00:00:00+00:00").unwrap();
                    encryption.insert(*bucket, json.as_bytes()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let index = ObjectIndex::open(dir.path()).unwrap();
        for (bucket, json, meaning) in &stored {
            assert_eq!(&index.bucket_encryption(bucket).unwrap(), meaning, "{bucket}");
            index.set_bucket_encryption(bucket, Some(meaning)).unwrap();
            let written = index
                .engine
                .read()
                .unwrap()
                .get(BUCKET_ENCRYPTION, bucket.as_bytes())
                .unwrap()
                .unwrap();
            assert_eq!(std::str::from_utf8(&written).unwrap(), json, "{bucket}");
        }
        assert_eq!(index.bucket_encryption("other").unwrap(), BucketEncryption::ServiceKey);
    }

    fn names(page: &ListPage) -> (Vec<&str>, Vec<&str>) {
        (
            page.objects.iter().map(|(k, _)| k.as_str()).collect(),
            page.common_prefixes.iter().map(String::as_str).collect(),
        )
    }

    #[test]
    fn list_prefix_delimiter_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let index = ObjectIndex::open(dir.path()).unwrap();
        for k in ["a.txt", "dir/1", "dir/2", "dir/sub/3", "e", "f/x"] {
            index.put("b", k, &entry("ocid1.keyversion.oc1.x.v1")).unwrap();
        }
        index
            .put("bb", "other-bucket", &entry("ocid1.keyversion.oc1.x.v1"))
            .unwrap();

        let all = index.list("b", "", None, None, 1000).unwrap();
        assert_eq!(names(&all).0, ["a.txt", "dir/1", "dir/2", "dir/sub/3", "e", "f/x"]);
        let top = index.list("b", "", Some("/"), None, 1000).unwrap();
        assert_eq!(names(&top), (vec!["a.txt", "e"], vec!["dir/", "f/"]));
        let dir_level = index.list("b", "dir/", Some("/"), None, 1000).unwrap();
        assert_eq!(names(&dir_level), (vec!["dir/1", "dir/2"], vec!["dir/sub/"]));

        // Pages of two, with delimiter: a.txt, dir/ | e, f/
        let p1 = index.list("b", "", Some("/"), None, 2).unwrap();
        assert_eq!(names(&p1), (vec!["a.txt"], vec!["dir/"]));
        let after = p1.next_start_after.clone().unwrap();
        assert_eq!(after, "dir/");
        let p2 = index.list("b", "", Some("/"), Some(&after), 2).unwrap();
        assert_eq!(names(&p2), (vec!["e"], vec!["f/"]));
        assert_eq!(p2.next_start_after, None);

        // Pages of two without delimiter cover everything once.
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = index.list("b", "", None, after.as_deref(), 2).unwrap();
            seen.extend(page.objects.iter().map(|(k, _)| k.clone()));
            match page.next_start_after {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ["a.txt", "dir/1", "dir/2", "dir/sub/3", "e", "f/x"]);
    }

    #[test]
    fn delimiter_listing_jumps_past_prefixes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let index = ObjectIndex::open(dir.path()).unwrap();
        let keys = [
            "dir.a",
            "dir/1",
            "dir/2",
            "dir/3/x",
            "dir0",
            "dirZ",
            "e/\u{10FFFF}",
            "e/\u{10FFFF}z",
            "f",
        ];
        for k in keys {
            index.put("b", k, &entry("ocid1.keyversion.oc1.x.v1")).unwrap();
        }
        let page = index.list("b", "", Some("/"), None, 1000).unwrap();
        assert_eq!(names(&page), (vec!["dir.a", "dir0", "dirZ", "f"], vec!["dir/", "e/"]));
        let under = index.list("b", "dir/", Some("/"), None, 1000).unwrap();
        assert_eq!(names(&under), (vec!["dir/1", "dir/2"], vec!["dir/3/"]));
        // One entry per page still walks everything exactly once.
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = index.list("b", "", Some("/"), after.as_deref(), 1).unwrap();
            seen.extend(page.objects.iter().map(|(k, _)| k.clone()));
            seen.extend(page.common_prefixes.iter().cloned());
            match page.next_start_after {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ["dir.a", "dir/", "dir0", "dirZ", "e/", "f"]);
    }

    #[test]
    fn inventory_counts_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let index = ObjectIndex::open(dir.path()).unwrap();
        index.put("b", "1", &entry("ocid1.keyversion.oc1.x.v1")).unwrap();
        index.put("b", "2", &entry("ocid1.keyversion.oc1.x.v1")).unwrap();
        index.put("c", "3", &entry("ocid1.keyversion.oc1.x.v2")).unwrap();
        let inv = index.inventory().unwrap();
        let v1 = Ocid::parse(kms_core::ResourceType::KeyVersion, "ocid1.keyversion.oc1.x.v1").unwrap();
        let k = Ocid::parse(kms_core::ResourceType::Key, "ocid1.key.oc1.x.k").unwrap();
        assert_eq!(
            inv[&v1],
            InventoryLine {
                key_id: k,
                objects: 2,
                bytes: 20
            }
        );
        index.remove("b", "1").unwrap();
        assert_eq!(index.inventory().unwrap()[&v1].objects, 1);
        assert_eq!(index.clear_bucket("b").unwrap(), 1);
        assert!(!index.inventory().unwrap().contains_key(&v1));
    }
}
