//! Buckets: create, delete and list them, and their default encryption.

use object_store::path::Path;

use super::{delete_prefix, ObjectService, Result};
use crate::object::encryption::BucketEncryption;
use crate::object::error::ObjectError;
use crate::object::index::BucketDeletion;
use crate::object::layout;

/// Fails unless `name` can name a bucket: 3–63 lower-case letters, digits, '.' and '-',
/// starting and ending with a letter or digit, without '..'. The faces (S3, the CLI, the admin
/// protocol) share the buckets, so every name is one that S3 can address (S3 requests are
/// held to S3's own naming rules by s3s, as it routes them, before they get here); each is
/// also one path component of the layout, apart from its `_buckets` root.
pub(crate) fn check_bucket_name(name: &str) -> Result<()> {
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
    /// A bucket's default encryption.
    pub(crate) fn bucket_encryption(&self, bucket: &str) -> Result<BucketEncryption> {
        self.require_bucket(bucket)?;
        Ok(self.index.bucket_encryption(bucket)?)
    }

    /// Sets a bucket's default encryption (`None`: back to SSE-S3). A named master key must
    /// exist and be usable.
    pub(crate) async fn set_bucket_encryption(&self, bucket: &str, config: Option<BucketEncryption>) -> Result<()> {
        self.require_bucket(bucket)?;
        if let Some(BucketEncryption::Kms { key_id: Some(key_id) }) = &config {
            self.check_kms_key(key_id).await?;
        }
        Ok(self.index.set_bucket_encryption(bucket, config.as_ref())?)
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
    /// [`crate::object::gc::collect_garbage`] removes, and never shows, since nothing in the index
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
}
