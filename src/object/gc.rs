//! Garbage collection: removes from the backend what nothing refers to — files of deleted
//! objects and buckets whose deletion was interrupted, parts of uploads that were aborted or
//! completed, objects written by a PUT that died before its index entry, layout-1 files
//! replaced by layout-2 ones, and, on a local directory, the temporary files of writes
//! killed half-way and the directories that deletes emptied. docs/FORMATS.md ("Object
//! layout") says what is whose.
//!
//! Only what is older than a threshold is removed, and an object's file only while its
//! key's write lock is held and the index still has no entry for it, so a write in flight
//! never loses its file.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectMeta;

use super::index::Layout;
use super::layout;
use super::service::{ObjectService, Result};

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Files deleted.
    pub files: u64,
    /// Their bytes (ciphertext).
    pub bytes: u64,
    /// Empty directories removed (local directories only).
    pub directories: u64,
}

impl GcReport {
    fn add(&mut self, meta: &ObjectMeta) {
        self.files += 1;
        self.bytes += meta.size;
    }
}

/// Removes what nothing refers to and is older than `older_than`.
pub async fn collect_garbage(service: &ObjectService, older_than: DateTime<Utc>) -> Result<GcReport> {
    let mut report = GcReport::default();
    collect_current(service, older_than, &mut report).await?;
    collect_legacy(service, older_than, &mut report).await?;
    if let Some(root) = service.local_root().map(std::path::Path::to_path_buf) {
        let cutoff = SystemTime::from(older_than);
        let local = tokio::task::spawn_blocking(move || sweep_directory(&root, &root, cutoff))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        report.files += local.files;
        report.bytes += local.bytes;
        report.directories += local.directories;
    }
    Ok(report)
}

/// Layout 2: `_buckets/<bucket>/…`.
async fn collect_current(service: &ObjectService, older_than: DateTime<Utc>, report: &mut GcReport) -> Result<()> {
    let backend = service.backend();
    // The bucket of the last listed file (listings come folder by folder): whether it
    // exists, and the hashed names of its long keys, computed again when the bucket changes.
    let mut listed_bucket: Option<(String, bool)> = None;
    let mut hashed: Option<(String, HashSet<Path>)> = None;
    let mut listed = backend.list(Some(&Path::from(layout::BUCKETS_ROOT)));
    while let Some(meta) = listed.try_next().await? {
        if meta.last_modified >= older_than {
            continue;
        }
        let mut parts = meta.location.parts().skip(1);
        let Some(bucket) = parts.next().map(|p| p.as_ref().to_owned()) else {
            continue;
        };
        let within = Path::from_iter(parts);
        if listed_bucket.as_ref().is_none_or(|(b, _)| *b != bucket) {
            listed_bucket = Some((bucket.clone(), service.index().bucket_exists(&bucket)?));
        }
        let exists = listed_bucket.as_ref().is_some_and(|(_, exists)| *exists);
        if exists {
            if let Some(key) = layout::key_of(&within) {
                // Decided, and deleted, while no write of the key can run.
                let _lock = service.lock_key(&bucket, &key).await?;
                let live = service
                    .index()
                    .get(&bucket, &key)?
                    .is_some_and(|e| e.layout == Layout::Current);
                if !live {
                    remove(service, &meta, report).await?;
                }
                continue;
            }
            if layout::is_hashed(&within) {
                if hashed.as_ref().is_none_or(|(b, _)| *b != bucket) {
                    hashed = Some((bucket.clone(), hashed_names(service, &bucket)?));
                }
                // Written before the threshold and still without an entry: nobody's (the
                // entry of a write follows its file within moments).
                if !hashed.as_ref().is_some_and(|(_, names)| names.contains(&within)) {
                    remove(service, &meta, report).await?;
                }
                continue;
            }
            if let Some(upload_id) = layout::upload_of(&within) {
                let live = service.index().upload(&upload_id)?.is_some_and(|u| u.bucket == bucket);
                if !live {
                    remove(service, &meta, report).await?;
                }
                continue;
            }
        }
        remove(service, &meta, report).await?;
    }
    Ok(())
}

/// The hashed names of a bucket's layout-2 objects with long keys.
fn hashed_names(service: &ObjectService, bucket: &str) -> Result<HashSet<Path>> {
    let mut names = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = service.index().list(bucket, "", None, after.as_deref(), 1000)?;
        for (key, entry) in &page.objects {
            let location = layout::object_location(key);
            if entry.layout == Layout::Current && layout::is_hashed(&location) {
                names.insert(location);
            }
        }
        match page.next_start_after {
            Some(next) => after = Some(next),
            None => return Ok(names),
        }
    }
}

/// Layout 1: `<bucket>/…` keeps only the files of entries still in layout 1.
async fn collect_legacy(service: &ObjectService, older_than: DateTime<Utc>, report: &mut GcReport) -> Result<()> {
    let backend = service.backend();
    let top = backend.list_with_delimiter(None).await?;
    let folders: Vec<Path> = top
        .common_prefixes
        .into_iter()
        .filter(|p| p.as_ref() != layout::BUCKETS_ROOT)
        .collect();
    if folders.is_empty() {
        return Ok(());
    }
    // Layout-1 entries are only ever removed, never added: a file none refers to now stays
    // unreferenced.
    let mut referenced: HashSet<String> = HashSet::new();
    for (bucket, key, entry) in service.index().all_objects()? {
        if entry.layout == Layout::Legacy {
            referenced.insert(format!("{bucket}/{}", Path::from(key.as_str())));
        }
    }
    for folder in folders {
        let mut listed = backend.list(Some(&folder));
        while let Some(meta) = listed.try_next().await? {
            if meta.last_modified < older_than && !referenced.contains(meta.location.as_ref()) {
                remove(service, &meta, report).await?;
            }
        }
    }
    Ok(())
}

async fn remove(service: &ObjectService, meta: &ObjectMeta, report: &mut GcReport) -> Result<()> {
    match service.backend().delete(&meta.location).await {
        Ok(()) => {
            tracing::debug!(location = %meta.location, bytes = meta.size, "garbage removed");
            report.add(meta);
            Ok(())
        }
        Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether a local file name is a temporary file of object_store's local backend: the
/// final name, `#` and digits (a write in progress, or killed).
fn is_temporary(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes temporary files older than `cutoff` under `dir`, and the directories left
/// empty (never `root` itself).
fn sweep_directory(root: &std::path::Path, dir: &std::path::Path, cutoff: SystemTime) -> std::io::Result<GcReport> {
    let mut report = GcReport::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            let below = sweep_directory(root, &path, cutoff)?;
            report.files += below.files;
            report.bytes += below.bytes;
            report.directories += below.directories;
        } else if kind.is_file() && entry.file_name().to_str().is_some_and(is_temporary) {
            let meta = entry.metadata()?;
            if meta.modified()? < cutoff {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::debug!(path = %path.display(), "temporary file of an interrupted write removed");
                        report.files += 1;
                        report.bytes += meta.len();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    // Fails, harmlessly, when something is (or was just) put in it.
    if dir != root && std::fs::remove_dir(dir).is_ok() {
        report.directories += 1;
    }
    Ok(report)
}

/// Runs [`collect_garbage`] now and then every `every`. The first pass, at start, removes
/// everything unreferenced from before the start when the backend is a local directory
/// (which one process owns: the index's lock says so), and what is older than `grace`
/// otherwise (a shared store may have writes of other processes in flight); later passes
/// remove what is older than `grace`.
pub(crate) async fn run_periodically(service: std::sync::Arc<ObjectService>, every: Duration, grace: Duration) {
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::hours(1));
    let mut threshold = if service.local_root().is_some() {
        Utc::now()
    } else {
        Utc::now() - grace
    };
    // One server of a fleet collects; should it stop, another takes over within two passes.
    let lease = std::sync::Arc::new(std::sync::Mutex::new(crate::fleet::Lease::new(
        "gc",
        every * 2,
        service.index().is_shared(),
    )));
    loop {
        let holder = service.clone();
        let held =
            crate::fleet::held_off_thread(&lease, move |name, member, ttl| holder.index().lease(name, member, ttl))
                .await;
        if !held {
            tokio::time::sleep(every).await;
            threshold = Utc::now() - grace;
            continue;
        }
        match collect_garbage(&service, threshold).await {
            Ok(r) if r.files > 0 || r.directories > 0 => tracing::info!(
                files = r.files,
                bytes = r.bytes,
                directories = r.directories,
                "garbage collection removed unreferenced data"
            ),
            Ok(_) => tracing::debug!("garbage collection found nothing to remove"),
            Err(e) => tracing::warn!(error = %e, "garbage collection failed; it runs again later"),
        }
        tokio::time::sleep(every).await;
        threshold = Utc::now() - grace;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names() {
        assert!(is_temporary("photos!2Fa.jpg!#1"));
        assert!(is_temporary("x#123"));
        assert!(!is_temporary("x#"));
        assert!(!is_temporary("x#1a"));
        assert!(!is_temporary("photos!"));
    }

    #[test]
    fn sweeps_temporary_files_and_empty_directories() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("_buckets/b/objects/aaa");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::create_dir_all(root.path().join("_buckets/b/uploads/u1")).unwrap();
        std::fs::write(deep.join("x!#3"), b"partial").unwrap();
        std::fs::write(root.path().join("_buckets/b/objects/keep!"), b"object").unwrap();
        let future = SystemTime::now() + Duration::from_secs(60);
        let r = sweep_directory(root.path(), root.path(), future).unwrap();
        assert_eq!((r.files, r.bytes), (1, 7));
        assert!(!root.path().join("_buckets/b/uploads").exists());
        assert!(!deep.exists());
        assert!(root.path().join("_buckets/b/objects/keep!").exists());
        // Nothing older than the cutoff: nothing removed.
        std::fs::write(root.path().join("_buckets/b/objects/y!#1"), b"new").unwrap();
        let past = SystemTime::now() - Duration::from_secs(60);
        assert_eq!(sweep_directory(root.path(), root.path(), past).unwrap().files, 0);
    }
}
