//! Buckets of encrypted objects: the layer the S3 API, the CLI and the admin protocol use.
//! Each bucket is an [`EncryptedStore`] over its own prefix of the backend — by default a
//! directory in the data directory (`<data-dir>/objects/<bucket>/`), or any S3-compatible
//! store (`--object-backend s3://…`). Buckets are registered, and every write recorded, in
//! the [`ObjectIndex`], which serves listings and the key-version inventory.
//!
//! One file per job: `buckets.rs` (create, delete, list, default encryption), `writes.rs`
//! (put, copy, delete, conditional writes), `reads.rs` (open and get), `multipart.rs`
//! (uploads and their parts), `keys.rs` (which master key a write uses, whether one can be
//! used, what each version protects) and `rebuild.rs` (index rebuild and the upgrade to
//! layout 2). This file holds the [`ObjectService`] itself and what they share.

use std::sync::Arc;

use crate::key_service::KeyService;
use futures::{StreamExt, TryStreamExt};
use kms_core::{KeyProvider, Ocid};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

use super::error::ObjectError;
use super::index::{Layout, ObjectEntry, ObjectIndex};
use super::layout;
use super::locks::{KeyGuard, KeyLocks};
use super::store::{EncryptedStore, Naming, Sealing};

mod buckets;
mod keys;
mod multipart;
mod reads;
mod rebuild;
mod writes;

pub(crate) use buckets::check_bucket_name;
pub(crate) use keys::InventoryRow;
pub(crate) use reads::OpenObject;
pub(crate) use writes::check_key;
pub use writes::PutParams;
pub(crate) use writes::WriteCondition;

/// Directory under the data directory holding one folder per bucket (the default backend).
pub(crate) const OBJECTS_DIR: &str = "objects";

/// The encrypted store of one bucket.
pub(crate) type BucketStore = EncryptedStore<PrefixStore<Arc<dyn ObjectStore>>>;

/// Result alias.
pub(crate) type Result<T, E = ObjectError> = std::result::Result<T, E>;

/// The key a write will use, and how the object will be recorded.
struct Resolved {
    sealing: Sealing,
    sse_kms: bool,
}

/// Buckets of encrypted objects.
#[derive(Debug)]
pub struct ObjectService {
    backend: Arc<dyn ObjectStore>,
    /// The backend's directory, when it is one on this machine (for temporary files).
    local_root: Option<std::path::PathBuf>,
    keys: Arc<dyn KeyProvider>,
    /// The same provider for this service's own async key checks (it decides where they run).
    key_service: KeyService,
    index: Arc<ObjectIndex>,
    key_id: Ocid,
    locks: KeyLocks,
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
            key_service: KeyService::new(keys.clone()),
            backend,
            local_root,
            keys,
            locks: KeyLocks::for_index(&index),
            index,
            key_id,
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

    /// Takes the write lock of one object (see [`KeyLocks`]); writers here take it
    /// themselves, the sweep through this.
    pub async fn lock_key(&self, bucket: &str, key: &str) -> Result<KeyGuard<'_>> {
        Ok(self.locks.lock(bucket, key).await?)
    }

    /// The backend, where every bucket's folders are.
    pub fn backend(&self) -> &Arc<dyn ObjectStore> {
        &self.backend
    }

    /// The backend's directory, when it is one on this machine.
    pub(crate) fn local_root(&self) -> Option<&std::path::Path> {
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
    pub(crate) fn locate(&self, bucket: &str, key: &str, entry: &ObjectEntry) -> (BucketStore, Path) {
        match entry.layout {
            Layout::Current => (self.object_store(bucket, key), layout::object_location(key)),
            Layout::Legacy => (self.legacy_store(bucket), Path::from(key)),
        }
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
