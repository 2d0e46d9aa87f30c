//! Buckets of encrypted objects: the layer the CLI (and later the S3 API) use. Each bucket is
//! an [`EncryptedStore`] over its own prefix of the backend — by default a directory in the
//! data directory (`<data-dir>/objects/<bucket>/`), or any S3-compatible store
//! (`--object-backend s3://…`). Buckets are registered, and every write recorded, in the
//! [`ObjectIndex`], which serves listings and the key-version inventory.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt, TryStreamExt};
use kms_core::{KeyProvider, KmsError, Ocid};
use md5::{Digest, Md5};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, GetResult, ObjectStore, PutMultipartOptions, PutOptions,
    WriteMultipart,
};
use thiserror::Error;

use super::customer_key::CustomerKey;
use super::encryption::{DefaultEncryption, Encryption, EncryptionRequest, UploadEncryption};
use super::error::EncryptedStoreError;
use super::format::ObjectIdentity;
use super::index::{
    BucketDeletion, ContentHeaders, IndexError, Layout, ObjectEntry, ObjectIndex, PartRecord, UploadRecord,
};
use super::layout;
use super::locks::{KeyGuard, KeyLocks};
use super::store::{EncryptedStore, Naming, Sealing, WrappedBy};

/// Directory under the data directory holding one folder per bucket (the default backend).
pub const OBJECTS_DIR: &str = "objects";

/// The encrypted store of one bucket.
pub type BucketStore = EncryptedStore<PrefixStore<Arc<dyn ObjectStore>>>;

/// Errors of the object service.
#[derive(Debug, Error)]
pub enum ObjectError {
    /// The bucket name breaks S3's naming rules.
    #[error("invalid bucket name '{0}': use 3–63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit")]
    InvalidBucketName(String),
    /// No such bucket.
    #[error("bucket '{0}' does not exist")]
    NoSuchBucket(String),
    /// The bucket already exists.
    #[error("bucket '{0}' already exists")]
    BucketExists(String),
    /// The bucket still holds objects.
    #[error("bucket '{0}' is not empty")]
    BucketNotEmpty(String),
    /// No such object.
    #[error("object '{key}' not found in bucket '{bucket}'")]
    NoSuchKey {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// A conditional write's condition does not hold (`If-Match`, `If-None-Match`).
    #[error("{0}")]
    PreconditionFailed(String),
    /// The key is empty or longer than S3's 1024 bytes.
    #[error("object keys are 1 to 1024 bytes of UTF-8; this one is {0} bytes")]
    KeyTooLong(usize),
    /// The encrypted store failed: damage found while reading, a refused data key, the
    /// backend (see [`EncryptedStoreError`]).
    #[error(transparent)]
    Store(#[from] EncryptedStoreError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Key management refused or failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// Filesystem error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The body's MD5 differs from the one the client announced.
    #[error("the body does not match its Content-MD5")]
    BadDigest,
    /// The body does not match the checksum the client announced (`x-amz-checksum-*`).
    #[error("{0}")]
    BadChecksum(String),
    /// No such multipart upload.
    #[error("multipart upload {0} does not exist (completed, aborted, or never created)")]
    NoSuchUpload(String),
    /// The part list of a completion is wrong.
    #[error("{0}")]
    InvalidPart(String),
    /// A part other than the last is below 5 MiB.
    #[error("part {0} is smaller than the 5 MiB minimum for all parts but the last")]
    EntityTooSmall(u32),
    /// The uploaded body could not be read to its end.
    #[error("reading the request body failed: {0}")]
    Body(String),
    /// A master key named for encryption does not exist.
    #[error("master key '{0}' does not exist")]
    KmsKeyNotFound(String),
    /// A master key cannot be used now (disabled, pending deletion, in a vault being deleted).
    #[error("{0}")]
    KmsKeyUnusable(kms_core::Denial),
    /// Reading is refused because the object's master key (or key version) cannot be used.
    #[error("access denied: {0}")]
    KeyAccessDenied(String),
    /// The object is encrypted with a customer-provided key and the request gave none.
    #[error("object '{0}' is encrypted with a customer-provided key (SSE-C); the request must supply that key")]
    CustomerKeyRequired(String),
    /// The customer-provided key is not the object's.
    #[error("the customer-provided key does not match the one object '{0}' was encrypted with")]
    CustomerKeyMismatch(String),
    /// A customer-provided key was given for an object not encrypted with one.
    #[error("object '{0}' is not encrypted with a customer-provided key; the SSE-C parameters do not apply to it")]
    CustomerKeyNotApplicable(String),
}

/// Result alias.
pub type Result<T, E = ObjectError> = std::result::Result<T, E>;

/// What a writer says about an object besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct PutParams {
    /// Content type.
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`).
    pub user_metadata: BTreeMap<String, String>,
    /// MD5 the client says the body has (`Content-MD5`); on a mismatch nothing is stored.
    pub expected_md5: Option<Vec<u8>>,
    /// Which key protects the object.
    pub encryption: EncryptionRequest,
    /// Standard headers to store with the object.
    pub headers: ContentHeaders,
    /// Write only if this holds for the object the key names now.
    pub condition: Option<WriteCondition>,
}

/// The condition of a conditional write, checked against the current object while no other
/// write of the key can run, so that of concurrent conditional writers exactly one wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// `If-None-Match: *`: only if the key names no object.
    IfNoneMatch,
    /// `If-Match`: only if the key names an object whose ETag is this (`None`: `*`, any).
    IfMatch(Option<String>),
}

impl WriteCondition {
    /// Fails unless the condition holds for `current`, the object `key` names now.
    fn check(&self, bucket: &str, key: &str, current: Option<&ObjectEntry>) -> Result<()> {
        match (self, current) {
            (WriteCondition::IfNoneMatch, None) => Ok(()),
            (WriteCondition::IfNoneMatch, Some(_)) => Err(ObjectError::PreconditionFailed(format!(
                "'{key}' already exists (If-None-Match: *)"
            ))),
            (WriteCondition::IfMatch(_), None) => Err(ObjectError::NoSuchKey {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            }),
            (WriteCondition::IfMatch(Some(etag)), Some(entry)) if etag.trim_matches('"') != entry.etag => Err(
                ObjectError::PreconditionFailed(format!("the ETag of '{key}' is not {etag} (If-Match)")),
            ),
            (WriteCondition::IfMatch(_), Some(_)) => Ok(()),
        }
    }
}

/// Fails unless `key` is a valid S3 key: 1 to 1024 bytes.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 1024 {
        return Err(ObjectError::KeyTooLong(key.len()));
    }
    Ok(())
}

/// The key a write will use, and how the object will be recorded.
struct Resolved {
    sealing: Sealing,
    sse_kms: bool,
}

/// One line of the key-version inventory: what a master key version still protects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryRow {
    /// The key owning the version (absent when the version is unknown to key management).
    pub key_id: Option<Ocid>,
    /// The key version.
    pub key_version_id: Ocid,
    /// Whether it is its key's current version.
    pub current: bool,
    /// Objects it protects.
    pub objects: u64,
    /// Their plaintext bytes.
    pub bytes: u64,
}

/// An object that a request may read (see [`ObjectService::open_for_read`]).
#[derive(Debug)]
pub struct OpenObject {
    bucket: String,
    key: String,
    /// What the index holds for it.
    pub entry: ObjectEntry,
    /// The store to read it through (with the customer key, for SSE-C objects).
    store: BucketStore,
    /// Where it is in that store.
    location: Path,
}

impl OpenObject {
    /// Reads the object (all of it, or `range` of its plaintext).
    pub async fn read(&self, range: Option<GetRange>) -> Result<GetResult> {
        self.store
            .read(
                &self.location,
                GetOptions {
                    range,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| match e {
                EncryptedStoreError::Backend(object_store::Error::NotFound { .. }) => ObjectError::NoSuchKey {
                    bucket: self.bucket.clone(),
                    key: self.key.clone(),
                },
                other => other.into(),
            })
    }
}

/// Where layout 1 kept the parts of multipart uploads inside a bucket's folder.
const LEGACY_UPLOADS_PREFIX: &str = ".sealstore-uploads";

/// Bodies up to this size are buffered and stored with a single put.
pub const SINGLE_PUT_MAX: usize = 1 << 20;

impl From<object_store::Error> for ObjectError {
    fn from(e: object_store::Error) -> Self {
        // What an EncryptedStore said through the ObjectStore trait, typed again.
        ObjectError::Store(e.into())
    }
}

/// Smallest part S3 accepts, except for the last one.
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// Buckets of encrypted objects.
#[derive(Debug)]
pub struct ObjectService {
    backend: Arc<dyn ObjectStore>,
    /// The backend's directory, when it is one on this machine (for temporary files).
    local_root: Option<std::path::PathBuf>,
    keys: Arc<dyn KeyProvider>,
    index: Arc<ObjectIndex>,
    key_id: Ocid,
    locks: KeyLocks,
}

/// Checks a bucket name against S3's rules (the subset that matters for a path component).
pub fn check_bucket_name(name: &str) -> Result<()> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ObjectError::InvalidBucketName(name.to_owned()))
    }
}

impl ObjectService {
    /// Buckets on `backend` (see [`crate::object::backend::open_backend`]; `None` means
    /// `<data_dir>/objects`), with data keys from `keys`; objects that name no master key
    /// (SSE-S3) are encrypted under `key_id`.
    pub fn open(
        data_dir: &std::path::Path,
        backend: Option<Arc<dyn ObjectStore>>,
        keys: Arc<dyn KeyProvider>,
        key_id: Ocid,
        index: Arc<ObjectIndex>,
    ) -> Result<Self> {
        let (backend, local_root) = match backend {
            Some(b) => (b, None),
            None => {
                let root = data_dir.join(OBJECTS_DIR);
                (
                    super::backend::open_backend(root.to_str().unwrap_or(OBJECTS_DIR), &[])?,
                    Some(root),
                )
            }
        };
        let service = ObjectService {
            backend,
            local_root,
            keys,
            index,
            key_id,
            locks: KeyLocks::default(),
        };
        service.upgrade_layout()?;
        Ok(service)
    }

    /// As [`ObjectService::open`] on a backend that is a directory of this machine (where
    /// temporary files of interrupted writes are found and removed).
    pub fn with_local_root(mut self, root: std::path::PathBuf) -> Self {
        self.local_root = Some(root);
        self
    }

    /// Brings an index written before layout 2 up to it (docs/FORMATS.md, "Object layout"):
    /// its objects stay where they are, in layout 1, and are read there until rewritten or
    /// deleted. Keys that layout 1 stored in one file (`a//b` and `a/b`) kept only the last
    /// one written: the others' entries, which named those bytes, are removed. Uploads in
    /// progress are aborted (their parts are layout 1's; clients upload them again).
    fn upgrade_layout(&self) -> Result<()> {
        if self.index.layout_version()?.is_some() {
            return Ok(());
        }
        let mut by_file: BTreeMap<(String, String), Vec<(String, ObjectEntry)>> = BTreeMap::new();
        for (bucket, key, entry) in self.index.all_objects()? {
            if entry.layout == Layout::Legacy {
                let file = Path::from(key.as_str()).to_string();
                by_file.entry((bucket, file)).or_default().push((key, entry));
            }
        }
        for ((bucket, file), mut sharing) in by_file {
            if sharing.len() < 2 {
                continue;
            }
            sharing.sort_by_key(|(_, e)| e.last_modified);
            let (kept, _) = sharing.pop().expect("two or more");
            for (key, _) in sharing {
                tracing::warn!(
                    bucket, key, kept, file,
                    "layout upgrade: this key shared its file with a key written later; its entry is removed (its bytes were already overwritten)"
                );
                self.index.remove(&bucket, &key)?;
            }
        }
        for (bucket, _) in self.index.buckets()? {
            for (upload_id, upload) in self.index.uploads(&bucket)? {
                tracing::warn!(
                    bucket,
                    key = upload.key,
                    upload_id,
                    "layout upgrade: multipart upload in progress aborted; upload it again"
                );
                self.index.remove_upload(&upload_id)?;
            }
        }
        self.index.set_layout_version(2)?;
        Ok(())
    }

    /// Takes the write lock of one object (see [`KeyLocks`]); writers here take it
    /// themselves, the sweep through this.
    pub async fn lock_key(&self, bucket: &str, key: &str) -> KeyGuard<'_> {
        self.locks.lock(bucket, key).await
    }

    /// The backend, where every bucket's folders are.
    pub fn backend(&self) -> &Arc<dyn ObjectStore> {
        &self.backend
    }

    /// The backend's directory, when it is one on this machine.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    /// The index.
    pub fn index(&self) -> &ObjectIndex {
        &self.index
    }

    /// Where data keys come from.
    pub fn keys(&self) -> &Arc<dyn KeyProvider> {
        &self.keys
    }

    /// The encrypted store of an existing bucket: its folder in layout 2, where objects are
    /// at [`layout::object_location`] and upload parts at [`layout::part_location`].
    pub fn bucket(&self, name: &str) -> Result<BucketStore> {
        self.require_bucket(name)?;
        Ok(self.store_in(layout::bucket_root(name), name, Naming::BucketLayout))
    }

    /// Fails unless `name` is a valid bucket name and the bucket exists.
    pub fn require_bucket(&self, name: &str) -> Result<()> {
        check_bucket_name(name)?;
        if !self.index.bucket_exists(name)? {
            return Err(ObjectError::NoSuchBucket(name.to_owned()));
        }
        Ok(())
    }

    /// An encrypted store over folder `root` of the backend, naming what it seals in
    /// `bucket` as `naming` says.
    fn store_in(&self, root: Path, bucket: &str, naming: Naming) -> BucketStore {
        let inner = PrefixStore::new(self.backend.clone(), root);
        EncryptedStore::new(inner, self.keys.clone(), self.key_id.clone(), bucket).with_naming(naming)
    }

    /// The store one object of a bucket is written and read through (layout 2).
    fn object_store(&self, bucket: &str, key: &str) -> BucketStore {
        self.store_in(layout::bucket_root(bucket), bucket, Naming::Key(key.into()))
    }

    /// A bucket's folder of layout 1, where objects written before layout 2 may still be.
    fn legacy_store(&self, name: &str) -> BucketStore {
        self.store_in(Path::from(name), name, Naming::Paths)
    }

    /// The store and location of the object `entry` describes.
    pub fn locate(&self, bucket: &str, key: &str, entry: &ObjectEntry) -> (BucketStore, Path) {
        match entry.layout {
            Layout::Current => (self.object_store(bucket, key), layout::object_location(key)),
            Layout::Legacy => (self.legacy_store(bucket), Path::from(key)),
        }
    }

    /// The master key behind `id`: a key OCID, or `alias/NAME` for the key whose display
    /// name is NAME. Whether it exists and can be used is decided once, where it is used
    /// (when a write resolves its key, or a bucket's default encryption is set).
    pub fn resolve_kms_key(&self, id: &str) -> Result<Ocid> {
        let key_id = match id.strip_prefix("alias/") {
            Some(name) => {
                let mut keys = self.keys.keys_named(name)?.into_iter();
                match (keys.next(), keys.next()) {
                    (Some(k), None) => k,
                    (Some(_), Some(_)) => {
                        return Err(ObjectError::KmsKeyNotFound(format!(
                            "{id} (several keys have that name; use the key's OCID)"
                        )))
                    }
                    (None, _) => return Err(ObjectError::KmsKeyNotFound(id.to_owned())),
                }
            }
            None => {
                Ocid::parse(kms_core::ResourceType::Key, id).map_err(|_| ObjectError::KmsKeyNotFound(id.to_owned()))?
            }
        };
        Ok(key_id)
    }

    /// Fails unless `key_id` exists and can be used now, saying why.
    fn check_kms_key(&self, key_id: &Ocid) -> Result<()> {
        match self.keys.key_status(key_id) {
            Ok(status) => match status.unusable {
                None => Ok(()),
                Some(denial) => Err(ObjectError::KmsKeyUnusable(denial)),
            },
            Err(KmsError::NotFound { .. }) => Err(ObjectError::KmsKeyNotFound(key_id.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Fails with [`ObjectError::KeyAccessDenied`] unless the object's master key and key
    /// version can decrypt now.
    fn check_key_for_read(&self, key_id: &Ocid, key_version_id: &Ocid) -> Result<()> {
        self.check_kms_key(key_id).map_err(|e| match e {
            ObjectError::KmsKeyUnusable(denial) => ObjectError::KeyAccessDenied(denial.message),
            ObjectError::KmsKeyNotFound(k) => ObjectError::KeyAccessDenied(format!("master key {k} does not exist")),
            other => other,
        })?;
        match self.keys.key_version_state(key_id, key_version_id) {
            Ok(kms_core::KeyVersionState::Enabled) => Ok(()),
            Ok(state) => Err(ObjectError::KeyAccessDenied(format!(
                "key version {key_version_id} is {state:?}; enable it to read data it protects"
            ))),
            Err(KmsError::NotFound { .. }) => Err(ObjectError::KeyAccessDenied(format!(
                "key version {key_version_id} does not exist"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Which key a write to `bucket` uses for `request`.
    fn resolve(&self, bucket: &str, request: &EncryptionRequest) -> Result<Resolved> {
        let kms = |key_id: Option<&Ocid>, sse_kms: bool| -> Result<Resolved> {
            let key_id = key_id.unwrap_or(&self.key_id).clone();
            self.check_kms_key(&key_id)?;
            Ok(Resolved {
                sealing: Sealing::Kms(key_id),
                sse_kms,
            })
        };
        match request {
            EncryptionRequest::BucketDefault => match self.index.bucket_encryption(bucket)? {
                DefaultEncryption::ServiceKey => kms(None, false),
                DefaultEncryption::Kms { key_id } => kms(key_id.as_ref(), true),
            },
            EncryptionRequest::ServiceKey => kms(None, false),
            EncryptionRequest::Kms(Some(key_id)) => kms(Some(key_id), true),
            EncryptionRequest::Kms(None) => match self.index.bucket_encryption(bucket)? {
                DefaultEncryption::Kms { key_id } => kms(key_id.as_ref(), true),
                DefaultEncryption::ServiceKey => kms(None, true),
            },
            EncryptionRequest::Customer(key) => Ok(Resolved {
                sealing: Sealing::Customer(key.clone()),
                sse_kms: false,
            }),
        }
    }

    /// A bucket's default encryption.
    pub fn bucket_encryption(&self, bucket: &str) -> Result<DefaultEncryption> {
        self.require_bucket(bucket)?;
        Ok(self.index.bucket_encryption(bucket)?)
    }

    /// Sets a bucket's default encryption (`None`: back to SSE-S3). A named master key must
    /// exist and be usable.
    pub fn set_bucket_encryption(&self, bucket: &str, config: Option<DefaultEncryption>) -> Result<()> {
        self.require_bucket(bucket)?;
        if let Some(DefaultEncryption::Kms { key_id: Some(key_id) }) = &config {
            self.check_kms_key(key_id)?;
        }
        Ok(self.index.set_bucket_encryption(bucket, config.as_ref())?)
    }

    /// An object that `customer_key` may read: checks that a customer key is given exactly
    /// when the object needs one, that it is the right one, and that a master key protecting
    /// the object can be used. Callers check conditions on its entry, then read it once.
    pub fn open_for_read(
        &self,
        bucket: &str,
        key: &str,
        customer_key: Option<&Arc<CustomerKey>>,
    ) -> Result<OpenObject> {
        self.require_bucket(bucket)?;
        let entry = self.index.get(bucket, key)?.ok_or_else(|| ObjectError::NoSuchKey {
            bucket: bucket.into(),
            key: key.into(),
        })?;
        let (store, location) = self.locate(bucket, key, &entry);
        let store = match (&entry.encryption, customer_key) {
            (Encryption::Customer { customer_key_check }, Some(ck)) => {
                let stored = data_encoding::HEXLOWER
                    .decode(customer_key_check.as_bytes())
                    .unwrap_or_default();
                let identity = match entry.layout {
                    Layout::Current => ObjectIdentity::unversioned(bucket, key),
                    Layout::Legacy => ObjectIdentity::unversioned(bucket, location.as_ref()),
                };
                if !ck.matches(&stored, &identity) {
                    return Err(ObjectError::CustomerKeyMismatch(key.to_owned()));
                }
                store.sealed_with(Sealing::Customer(ck.clone()))
            }
            (Encryption::Customer { .. }, None) => return Err(ObjectError::CustomerKeyRequired(key.to_owned())),
            (Encryption::Kms { .. }, Some(_)) => return Err(ObjectError::CustomerKeyNotApplicable(key.to_owned())),
            (
                Encryption::Kms {
                    key_id, key_version_id, ..
                },
                None,
            ) => {
                self.check_key_for_read(key_id, key_version_id)?;
                store
            }
        };
        Ok(OpenObject {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            entry,
            store,
            location,
        })
    }

    /// Objects and bytes per master key version, with each version's key and whether it is
    /// the current one (old versions are what `reencrypt` moves objects off).
    pub fn inventory(&self) -> Result<Vec<InventoryRow>> {
        let mut current = std::collections::HashMap::new();
        let mut rows = Vec::new();
        for (version, line) in self.index.inventory()? {
            if !current.contains_key(&line.key_id) {
                let status = match self.keys.key_status(&line.key_id) {
                    Ok(status) => Some(status.current_key_version),
                    Err(KmsError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                };
                current.insert(line.key_id.clone(), status);
            }
            let key_current = &current[&line.key_id];
            rows.push(InventoryRow {
                current: key_current.as_ref() == Some(&version),
                key_id: key_current.as_ref().map(|_| line.key_id),
                key_version_id: version,
                objects: line.objects,
                bytes: line.bytes,
            });
        }
        Ok(rows)
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        check_bucket_name(name)?;
        if self.index.create_bucket(name)? {
            Ok(())
        } else {
            Err(ObjectError::BucketExists(name.to_owned()))
        }
    }

    /// Removes a bucket that holds no object. Its multipart uploads in progress are aborted
    /// with it (as S3 does) and everything under its folders is deleted, so a bucket created
    /// again with the name starts empty; what a crash leaves behind here is garbage that
    /// [`super::gc::collect_garbage`] removes, and never shows, since nothing in the index
    /// refers to it.
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        check_bucket_name(name)?;
        match self.index.delete_bucket_and_uploads(name)? {
            BucketDeletion::NoSuchBucket => return Err(ObjectError::NoSuchBucket(name.to_owned())),
            BucketDeletion::NotEmpty => return Err(ObjectError::BucketNotEmpty(name.to_owned())),
            BucketDeletion::Deleted { uploads } => {
                if !uploads.is_empty() {
                    tracing::info!(
                        bucket = name,
                        uploads = uploads.len(),
                        "bucket deleted with its uploads in progress"
                    );
                }
            }
        }
        delete_prefix(&self.backend, &layout::bucket_root(name)).await?;
        delete_prefix(&self.backend, &Path::from(name)).await?;
        Ok(())
    }

    /// Bucket names, sorted.
    pub fn list_buckets(&self) -> Result<Vec<String>> {
        Ok(self.index.buckets()?.into_iter().map(|(name, _)| name).collect())
    }

    /// Bucket names found in the backend itself (its top-level prefixes): what an index
    /// rebuild starts from when the index is gone.
    pub async fn discover_buckets(&self) -> Result<Vec<String>> {
        let current = self
            .backend
            .list_with_delimiter(Some(&Path::from(layout::BUCKETS_ROOT)))
            .await?;
        let legacy = self.backend.list_with_delimiter(None).await?;
        let mut names: Vec<String> = current
            .common_prefixes
            .iter()
            .chain(&legacy.common_prefixes)
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|n| check_bucket_name(n).is_ok())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Streams `body` into `location` of `store` as one encrypted object, computing its MD5;
    /// when `expected_md5` does not match, nothing is published. Bodies up to
    /// [`SINGLE_PUT_MAX`] are stored with one put (one write of the backend); larger ones
    /// stream through a multipart upload. Returns the size, the MD5 and what wraps the
    /// object's data key.
    async fn write_stream<S, E>(
        store: &BucketStore,
        location: &Path,
        body: S,
        attributes: Attributes,
        expected_md5: Option<&[u8]>,
    ) -> Result<(u64, [u8; 16], WrappedBy)>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        ObjectError: From<E>,
    {
        let mut md5 = Md5::new();
        let mut size = 0u64;
        let mut body = body;
        let mut buffered = Vec::new();
        let check = |md5: Md5| -> Result<[u8; 16]> {
            let digest: [u8; 16] = md5.finalize().into();
            if expected_md5.is_some_and(|expected| expected != digest.as_slice()) {
                return Err(ObjectError::BadDigest);
            }
            Ok(digest)
        };
        while size <= SINGLE_PUT_MAX as u64 {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    md5.update(&chunk);
                    size += chunk.len() as u64;
                    buffered.push(chunk);
                }
                None => {
                    // The whole body is here: checked before anything is written.
                    let digest = check(md5)?;
                    let opts = PutOptions {
                        attributes,
                        ..Default::default()
                    };
                    let (_, wrapped_by) = store
                        .put_reporting(location, buffered.into_iter().collect(), opts)
                        .await?;
                    return Ok((size, digest, wrapped_by));
                }
            }
        }
        let (upload, wrapped_by) = store
            .put_multipart_reporting(
                location,
                PutMultipartOptions {
                    attributes,
                    ..Default::default()
                },
            )
            .await?;
        let mut writer = WriteMultipart::new(upload);
        for chunk in buffered {
            writer.put(chunk);
        }
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    writer.abort().await?;
                    return Err(e.into());
                }
            };
            md5.update(&chunk);
            size += chunk.len() as u64;
            writer.wait_for_capacity(2).await?;
            writer.put(chunk);
        }
        let digest = match check(md5) {
            Ok(d) => d,
            Err(e) => {
                // Nothing was published: the previous object (if any) stays as it was.
                writer.abort().await?;
                return Err(e);
            }
        };
        writer.finish().await?;
        Ok((size, digest, wrapped_by))
    }

    /// Stores an object from a stream of plaintext, replacing any object of that key
    /// atomically; returns what the index now holds for it.
    pub async fn put<S, E>(&self, bucket: &str, key: &str, body: S, params: PutParams) -> Result<ObjectEntry>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        ObjectError: From<E>,
    {
        self.put_with_etag(bucket, key, body, params, None).await
    }

    /// Writes an object; `multipart` is the ETag and part sizes of a completed multipart
    /// upload, whose body this is.
    async fn put_with_etag<S, E>(
        &self,
        bucket: &str,
        key: &str,
        body: S,
        params: PutParams,
        multipart: Option<(String, Vec<u64>)>,
    ) -> Result<ObjectEntry>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        ObjectError: From<E>,
    {
        check_key(key)?;
        let resolved = self.resolve(bucket, &params.encryption)?;
        self.require_bucket(bucket)?;
        let store = self.object_store(bucket, key).sealed_with(resolved.sealing);
        // Held from the condition's check through the store's write to the index's, so the
        // condition holds for what is replaced and the index describes the stored object.
        let _lock = self.locks.lock(bucket, key).await;
        let previous = self.index.get(bucket, key)?;
        if let Some(condition) = &params.condition {
            condition.check(bucket, key, previous.as_ref())?;
        }
        let location = layout::object_location(key);
        let mut attributes = Attributes::new();
        if let Some(ct) = &params.content_type {
            attributes.insert(Attribute::ContentType, ct.clone().into());
        }
        let h = &params.headers;
        for (attribute, value) in [
            (Attribute::CacheControl, &h.cache_control),
            (Attribute::ContentDisposition, &h.content_disposition),
            (Attribute::ContentEncoding, &h.content_encoding),
            (Attribute::ContentLanguage, &h.content_language),
        ] {
            if let Some(v) = value {
                attributes.insert(attribute, v.clone().into());
            }
        }
        for (k, v) in &params.user_metadata {
            attributes.insert(Attribute::Metadata(k.clone().into()), v.clone().into());
        }
        let (size, digest, wrapped_by) =
            Self::write_stream(&store, &location, body, attributes, params.expected_md5.as_deref()).await?;
        let encryption = Encryption::recorded(wrapped_by, resolved.sse_kms);
        let (etag, parts) = match multipart {
            Some((etag, parts)) => (etag, parts),
            None => (data_encoding::HEXLOWER.encode(&digest), Vec::new()),
        };
        let entry = ObjectEntry {
            size,
            etag,
            content_type: params.content_type,
            user_metadata: params.user_metadata,
            encryption,
            last_modified: Utc::now(),
            headers: params.headers,
            parts,
            layout: Layout::Current,
        };
        if !self.index.put_if_bucket(bucket, key, &entry)? {
            // The bucket was deleted meanwhile: the object goes with it.
            delete_quietly(&store, &location).await;
            return Err(ObjectError::NoSuchBucket(bucket.to_owned()));
        }
        if let Some(old) = previous.filter(|p| p.layout == Layout::Legacy) {
            let (old_store, old_location) = self.locate(bucket, key, &old);
            delete_quietly(&old_store, &old_location).await;
        }
        Ok(entry)
    }

    // ----- multipart uploads -----

    fn upload_for(&self, upload_id: &str, bucket: &str, key: &str) -> Result<UploadRecord> {
        match self.index.upload(upload_id)? {
            Some(u) if u.bucket == bucket && u.key == key => Ok(u),
            _ => Err(ObjectError::NoSuchUpload(upload_id.to_owned())),
        }
    }

    /// The store an upload's parts and object are written (and its parts read) through;
    /// `customer_key` must be the upload's key when it has one, and absent otherwise.
    fn upload_store(
        &self,
        upload: &UploadRecord,
        customer_key: Option<&Arc<CustomerKey>>,
    ) -> Result<(BucketStore, Resolved)> {
        let store = self.bucket(&upload.bucket)?;
        let resolved = match (&upload.encryption, customer_key) {
            (Some(UploadEncryption::Customer { customer_key_check }), Some(ck)) => {
                let stored = data_encoding::HEXLOWER
                    .decode(customer_key_check.as_bytes())
                    .unwrap_or_default();
                if !ck.matches(&stored, &ObjectIdentity::unversioned(&upload.bucket, &upload.key)) {
                    return Err(ObjectError::CustomerKeyMismatch(upload.key.clone()));
                }
                Resolved {
                    sealing: Sealing::Customer(ck.clone()),
                    sse_kms: false,
                }
            }
            (Some(UploadEncryption::Customer { .. }), None) => {
                return Err(ObjectError::CustomerKeyRequired(upload.key.clone()))
            }
            (_, Some(_)) => return Err(ObjectError::CustomerKeyNotApplicable(upload.key.clone())),
            (Some(UploadEncryption::Kms { key_id, sse_kms }), None) => {
                self.check_kms_key(key_id)?;
                Resolved {
                    sealing: Sealing::Kms(key_id.clone()),
                    sse_kms: *sse_kms,
                }
            }
            (None, None) => Resolved {
                sealing: Sealing::Kms(self.key_id.clone()),
                sse_kms: false,
            },
        };
        Ok((store.sealed_with(resolved.sealing.clone()), resolved))
    }

    /// Starts a multipart upload; returns its id and how it will be encrypted (fixed now, as
    /// `params.encryption` and the bucket's default say).
    pub fn create_upload(&self, bucket: &str, key: &str, params: PutParams) -> Result<(String, UploadEncryption)> {
        check_key(key)?;
        self.require_bucket(bucket)?;
        let encryption = match self.resolve(bucket, &params.encryption)? {
            Resolved {
                sealing: Sealing::Kms(key_id),
                sse_kms,
            } => UploadEncryption::Kms { key_id, sse_kms },
            Resolved {
                sealing: Sealing::Customer(ck),
                ..
            } => UploadEncryption::Customer {
                customer_key_check: data_encoding::HEXLOWER
                    .encode(&ck.key_check(&ObjectIdentity::unversioned(bucket, key))),
            },
        };
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| ObjectError::Body("random source failed".into()))?;
        let upload_id = data_encoding::HEXLOWER.encode(&id);
        let record = UploadRecord {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            content_type: params.content_type,
            user_metadata: params.user_metadata,
            headers: params.headers,
            initiated: Utc::now(),
            encryption: Some(encryption.clone()),
        };
        self.index.put_upload(&upload_id, &record)?;
        Ok((upload_id, encryption))
    }

    /// An upload in progress, as created.
    pub fn upload(&self, (bucket, key, upload_id): (&str, &str, &str)) -> Result<UploadRecord> {
        self.upload_for(upload_id, bucket, key)
    }

    /// Stores one part (encrypted, as an object of its own until completion, with the
    /// upload's key: `customer_key` for SSE-C uploads); returns its hex MD5.
    pub async fn put_part<S, E>(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        part_number: u32,
        body: S,
        expected_md5: Option<&[u8]>,
        customer_key: Option<&Arc<CustomerKey>>,
    ) -> Result<String>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        ObjectError: From<E>,
    {
        if !(1..=10_000).contains(&part_number) {
            return Err(ObjectError::InvalidPart(format!(
                "part number {part_number} is outside 1..=10000"
            )));
        }
        let upload = self.upload_for(upload_id, bucket, key)?;
        let (store, _) = self.upload_store(&upload, customer_key)?;
        let location = layout::part_location(upload_id, part_number);
        let (size, digest, _) = Self::write_stream(&store, &location, body, Attributes::new(), expected_md5).await?;
        let etag = data_encoding::HEXLOWER.encode(&digest);
        let record = PartRecord {
            size,
            etag: etag.clone(),
            last_modified: Utc::now(),
        };
        if !self.index.put_part(upload_id, part_number, &record)? {
            // Completed, aborted or deleted with its bucket while this part was written.
            delete_quietly(&store, &location).await;
            return Err(ObjectError::NoSuchUpload(upload_id.to_owned()));
        }
        Ok(etag)
    }

    /// Completes an upload from the listed parts (ascending numbers, matching ETags): their
    /// plaintext is streamed, in order, into the object, which is encrypted as one. The
    /// ETag is S3's: MD5 of the parts' MD5s, a dash and the part count. SSE-C uploads need
    /// their key here too, since the parts are decrypted to be joined.
    pub async fn complete_upload(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        parts: &[(u32, String)],
        customer_key: Option<&Arc<CustomerKey>>,
        condition: Option<WriteCondition>,
    ) -> Result<ObjectEntry> {
        let upload = self.upload_for(upload_id, bucket, key)?;
        let (store, resolved) = self.upload_store(&upload, customer_key)?;
        let stored: BTreeMap<u32, PartRecord> = self.index.parts(upload_id)?.into_iter().collect();
        if parts.is_empty() {
            return Err(ObjectError::InvalidPart(
                "a multipart upload needs at least one part".into(),
            ));
        }
        let mut combined = Md5::new();
        let mut sizes = Vec::with_capacity(parts.len());
        for (i, (number, etag)) in parts.iter().enumerate() {
            if i > 0 && *number <= parts[i - 1].0 {
                return Err(ObjectError::InvalidPart(
                    "parts must be listed in ascending order".into(),
                ));
            }
            let record = stored
                .get(number)
                .filter(|r| r.etag == etag.trim_matches('"'))
                .ok_or_else(|| ObjectError::InvalidPart(format!("part {number} was not uploaded with that ETag")))?;
            if i + 1 < parts.len() && record.size < MIN_PART_SIZE {
                return Err(ObjectError::EntityTooSmall(*number));
            }
            sizes.push(record.size);
            combined.update(
                data_encoding::HEXLOWER
                    .decode(record.etag.as_bytes())
                    .unwrap_or_default(),
            );
        }
        let etag = format!(
            "{}-{}",
            data_encoding::HEXLOWER.encode(&combined.finalize()),
            parts.len()
        );
        let store = Arc::new(store);
        let locations: Vec<Path> = parts
            .iter()
            .map(|(n, _)| layout::part_location(upload_id, *n))
            .collect();
        let parts_store = store.clone();
        // Boxed: a concrete, 'static stream type keeps the async-trait callers' futures Send.
        let body: futures::stream::BoxStream<'static, object_store::Result<Bytes>> = futures::stream::iter(locations)
            .then(move |location| {
                let store = parts_store.clone();
                async move { store.get(&location).await.map(|r| r.into_stream()) }
            })
            .try_flatten()
            .boxed();
        let params = PutParams {
            content_type: upload.content_type,
            user_metadata: upload.user_metadata,
            headers: upload.headers,
            condition,
            expected_md5: None,
            encryption: match resolved.sealing {
                Sealing::Customer(ck) => EncryptionRequest::Customer(ck),
                // The key chosen at creation, even if the bucket's default changed since.
                Sealing::Kms(key_id) if resolved.sse_kms => EncryptionRequest::Kms(Some(key_id)),
                Sealing::Kms(_) => EncryptionRequest::ServiceKey,
            },
        };
        let entry = self
            .put_with_etag(bucket, key, body, params, Some((etag, sizes)))
            .await?;
        self.discard_upload(bucket, upload_id).await?;
        Ok(entry)
    }

    /// Aborts an upload and deletes its parts.
    pub async fn abort_upload(&self, (bucket, key, upload_id): (&str, &str, &str)) -> Result<()> {
        self.upload_for(upload_id, bucket, key)?;
        self.require_bucket(bucket)?;
        self.discard_upload(bucket, upload_id).await
    }

    /// Forgets an upload, then deletes its folder: every part file, recorded or not (a part
    /// written while the upload ended is deleted by its writer, or by garbage collection).
    async fn discard_upload(&self, bucket: &str, upload_id: &str) -> Result<()> {
        self.index.remove_upload(upload_id)?;
        let (root, folder) = (layout::bucket_root(bucket), layout::upload_folder(upload_id));
        delete_prefix(&self.backend, &root.parts().chain(folder.parts()).collect()).await
    }

    /// The parts uploaded so far.
    pub fn list_parts(&self, (bucket, key, upload_id): (&str, &str, &str)) -> Result<Vec<(u32, PartRecord)>> {
        self.upload_for(upload_id, bucket, key)?;
        Ok(self.index.parts(upload_id)?)
    }

    /// Uploads in progress in a bucket.
    pub fn list_uploads(&self, bucket: &str) -> Result<Vec<(String, UploadRecord)>> {
        self.require_bucket(bucket)?;
        Ok(self.index.uploads(bucket)?)
    }

    /// Reads an object (all of it, or `range` of its plaintext); `customer_key` is needed
    /// exactly for objects encrypted with one (see [`ObjectService::open_for_read`]).
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<GetRange>,
        customer_key: Option<&Arc<CustomerKey>>,
    ) -> Result<(ObjectEntry, GetResult)> {
        let object = self.open_for_read(bucket, key, customer_key)?;
        let got = object.read(range).await?;
        Ok((object.entry, got))
    }

    /// Copies an opened object by decrypting it and encrypting it again under the
    /// destination's name and, as `params.encryption` says, the current master key version
    /// (so copying an object onto itself re-encrypts it, or moves it to another key).
    /// `keep_metadata` keeps the source's content type, standard headers and user metadata
    /// instead of those in `params`.
    pub async fn copy(
        &self,
        source: OpenObject,
        (dst_bucket, dst_key): (&str, &str),
        params: PutParams,
        keep_metadata: bool,
    ) -> Result<ObjectEntry> {
        self.require_bucket(dst_bucket)?;
        let got = source.read(None).await?;
        let params = if keep_metadata {
            PutParams {
                content_type: source.entry.content_type.clone(),
                user_metadata: source.entry.user_metadata.clone(),
                headers: source.entry.headers.clone(),
                ..params
            }
        } else {
            params
        };
        self.put(dst_bucket, dst_key, got.into_stream(), params).await
    }

    /// Deletes an object: first its index entry (from then on it is gone for every
    /// reader), then its ciphertext (should that fail, garbage collection removes it).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.require_bucket(bucket)?;
        let _lock = self.locks.lock(bucket, key).await;
        let Some(entry) = self.index.get(bucket, key)? else {
            return Ok(());
        };
        self.index.remove(bucket, key)?;
        let (store, location) = self.locate(bucket, key, &entry);
        delete_quietly(&store, &location).await;
        Ok(())
    }

    /// Recreates a bucket's index entries from its objects (decrypting each to recompute its
    /// ETag). Objects under customer-provided keys cannot be decrypted here: they are indexed
    /// with their size and key check, without content type or user metadata, and with an
    /// ETag taken from the stored ciphertext's. `progress` is called after each object.
    pub async fn rebuild_index(&self, bucket: &str, mut progress: impl FnMut(&str, u64)) -> Result<u64> {
        check_bucket_name(bucket)?;
        self.index.create_bucket(bucket)?;
        let current = self.bucket(bucket)?;
        let legacy = self.legacy_store(bucket);
        self.index.clear_bucket(bucket)?;
        let listed: Vec<Path> = current
            .inner()
            .list(Some(&Path::from(layout::OBJECTS)))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        let mut found: Vec<(&BucketStore, Path, String, Layout)> = Vec::new();
        let mut current_keys = std::collections::HashSet::new();
        for location in listed {
            match layout::key_of(&location) {
                Some(key) => {
                    current_keys.insert(key.clone());
                    found.push((&current, location, key, Layout::Current));
                }
                // A key longer than a name can spell is known only to the index.
                None if layout::is_hashed(&location) => {
                    tracing::warn!(bucket, location = %location, "index rebuild: an object with a long key cannot be recovered without its key; left out")
                }
                None => {}
            }
        }
        // Layout 1 named objects by their path: a path that is not its own key's (a key
        // with characters object_store escapes) cannot be told apart, and is left out; so is
        // one whose key has a layout-2 object too (written since: the layout-1 file's
        // deletion was interrupted).
        let legacy_found: Vec<Path> = legacy
            .inner()
            .list(None)
            .map_ok(|m| m.location)
            .try_filter(|l| futures::future::ready(!l.as_ref().starts_with(LEGACY_UPLOADS_PREFIX)))
            .try_collect()
            .await?;
        for location in legacy_found {
            let key = location.as_ref().to_owned();
            if Path::from(key.as_str()) != location || current_keys.contains(&key) {
                tracing::warn!(bucket, location = %location, "index rebuild: layout-1 file left out");
                continue;
            }
            found.push((&legacy, location, key, Layout::Legacy));
        }
        let mut count = 0;
        for (store, location, key, layout) in found {
            let wrapped_by = store.wrapped_by(&location).await?;
            let stored = store.inner().head(&location).await?;
            let (size, etag, attributes) = if let WrappedBy::Customer { .. } = wrapped_by {
                let size = store.head(&location).await?.size;
                let etag = Md5::digest(stored.e_tag.unwrap_or_default().as_bytes());
                (size, data_encoding::HEXLOWER.encode(&etag), Attributes::new())
            } else {
                let got = store.get(&location).await?;
                let attributes = got.attributes.clone();
                let mut md5 = Md5::new();
                let mut size = 0u64;
                let mut stream = got.into_stream();
                while let Some(chunk) = stream.try_next().await? {
                    md5.update(&chunk);
                    size += chunk.len() as u64;
                }
                (size, data_encoding::HEXLOWER.encode(&md5.finalize()), attributes)
            };
            // The header does not say whether SSE-KMS was asked for: a key other than the
            // default one must have been named, so that is reported as SSE-KMS.
            let sse_kms = matches!(&wrapped_by, WrappedBy::Kms { key_id, .. } if *key_id != self.key_id);
            let user_metadata = attributes
                .iter()
                .filter_map(|(a, v)| match a {
                    Attribute::Metadata(k) => Some((k.to_string(), v.as_ref().to_owned())),
                    _ => None,
                })
                .collect();
            let header = |a: Attribute| attributes.get(&a).map(|v| v.as_ref().to_owned());
            let entry = ObjectEntry {
                size,
                etag,
                content_type: header(Attribute::ContentType),
                user_metadata,
                encryption: Encryption::recorded(wrapped_by, sse_kms),
                last_modified: stored.last_modified,
                headers: ContentHeaders {
                    cache_control: header(Attribute::CacheControl),
                    content_disposition: header(Attribute::ContentDisposition),
                    content_encoding: header(Attribute::ContentEncoding),
                    content_language: header(Attribute::ContentLanguage),
                    expires: None,
                },
                parts: Vec::new(),
                layout,
            };
            self.index.put(bucket, &key, &entry)?;
            count += 1;
            progress(&key, size);
        }
        Ok(count)
    }
}

/// Deletes everything under `prefix` of `store`.
pub(crate) async fn delete_prefix(store: &Arc<dyn ObjectStore>, prefix: &Path) -> Result<()> {
    let locations = store.list(Some(prefix)).map_ok(|m| m.location).boxed();
    store
        .delete_stream(locations)
        .try_for_each(|_| futures::future::ready(Ok(())))
        .await
        .or_else(|e| match e {
            object_store::Error::NotFound { .. } => Ok(()),
            e => Err(e),
        })?;
    Ok(())
}

/// Deletes what a write replaced or abandoned; a failure is logged and left to garbage
/// collection, since nothing refers to the file any more.
async fn delete_quietly(store: &BucketStore, location: &Path) {
    match store.delete(location).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => {
            tracing::warn!(location = %location, error = %e, "deleting an unreferenced file failed; garbage collection will")
        }
    }
}

impl From<std::convert::Infallible> for ObjectError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}
