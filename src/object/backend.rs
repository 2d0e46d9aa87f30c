//! Where ciphertext is kept: the local filesystem under the data directory, or any
//! S3-compatible store (AWS S3, MinIO, Ceph RGW, SeaweedFS) for users who outgrow one machine.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, UploadPart,
};

/// Opens the backend named by `url`:
///
/// - `file:///path` or a plain path: a directory on this machine;
/// - `s3://bucket[/prefix]`: an S3 bucket, configured from the usual `AWS_*` environment
///   variables (`AWS_ENDPOINT` for non-AWS servers, `AWS_ALLOW_HTTP=true` for plain HTTP,
///   `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`) and overridden by `options`.
pub fn open_backend(url: &str, options: &[(&str, &str)]) -> object_store::Result<Arc<dyn ObjectStore>> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (k, v) in options {
            builder = builder.with_config(k.parse()?, *v);
        }
        let s3: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
        return Ok(if prefix.is_empty() {
            s3
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix.trim_end_matches('/')))
        });
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    std::fs::create_dir_all(path).map_err(|e| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    })?;
    // Deletes take the directories they empty with them.
    Ok(Arc::new(DurableLocal {
        inner: Arc::new(LocalFileSystem::new_with_prefix(path)?.with_automatic_cleanup(true)),
    }))
}

/// A local directory whose writes are durable when they return: after object_store's
/// `LocalFileSystem` has written a file and renamed it into place, its data is synced
/// (`fdatasync`) and so is the directory that names it, so that an acknowledged PUT survives
/// a power cut, not only a crash of the process (on a journaling filesystem such as ext4 or
/// XFS, the directory's sync also commits the creation of any directory above it). An S3
/// backend's answer to a PUT is its own durability; this is the local counterpart.
#[derive(Debug)]
pub struct DurableLocal {
    inner: Arc<LocalFileSystem>,
}

impl fmt::Display for DurableLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DurableLocal({})", self.inner)
    }
}

/// Syncs the file at `location` of `store` and the directory holding it.
async fn sync_file(store: &LocalFileSystem, location: &Path) -> object_store::Result<()> {
    let path = store.path_to_filesystem(location)?;
    let synced = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::File::open(&path)?.sync_data()?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()));
    synced.and_then(|s| s).map_err(|e| object_store::Error::Generic {
        store: "DurableLocal",
        source: Box::new(e),
    })
}

#[async_trait]
impl ObjectStore for DurableLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let put = self.inner.put_opts(location, payload, opts).await?;
        sync_file(&self.inner, location).await?;
        Ok(put)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(DurableUpload {
            inner: self.inner.put_multipart_opts(location, opts).await?,
            store: self.inner.clone(),
            location: location.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_range(&self, location: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        self.inner.get_range(location, range).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await?;
        sync_file(&self.inner, to).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.rename(from, to).await?;
        sync_file(&self.inner, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await?;
        sync_file(&self.inner, to).await
    }
}

/// A local multipart upload that syncs the completed file (see [`DurableLocal`]).
#[derive(Debug)]
struct DurableUpload {
    inner: Box<dyn MultipartUpload>,
    store: Arc<LocalFileSystem>,
    location: Path,
}

#[async_trait]
impl MultipartUpload for DurableUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let done = self.inner.complete().await?;
        sync_file(&self.store, &self.location).await?;
        Ok(done)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

/// The directory a backend URL names, when it is one on this machine.
pub fn local_directory(url: &str) -> Option<std::path::PathBuf> {
    (!url.starts_with("s3://")).then(|| std::path::PathBuf::from(url.strip_prefix("file://").unwrap_or(url)))
}
