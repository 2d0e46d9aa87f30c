//! Where ciphertext is kept: the local filesystem under the data directory, or any
//! S3-compatible store (AWS S3, MinIO, Ceph RGW, SeaweedFS) for users who outgrow one machine.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;

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
    Ok(Arc::new(
        LocalFileSystem::new_with_prefix(path)?.with_automatic_cleanup(true),
    ))
}

/// The directory a backend URL names, when it is one on this machine.
pub fn local_directory(url: &str) -> Option<std::path::PathBuf> {
    (!url.starts_with("s3://")).then(|| std::path::PathBuf::from(url.strip_prefix("file://").unwrap_or(url)))
}
