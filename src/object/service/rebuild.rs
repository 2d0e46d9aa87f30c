//! The index from the objects: `rebuild_index` (from what the backend holds) and the
//! upgrade of an index written before layout 2.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use md5::{Digest, Md5};
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStore};

use super::{check_bucket_name, BucketStore, ObjectService, Result};
use crate::object::encryption::Encryption;
use crate::object::index::{ContentHeaders, Layout, ObjectEntry};
use crate::object::layout;
use crate::object::store::WrappedBy;

/// Where layout 1 kept the parts of multipart uploads inside a bucket's folder.
const LEGACY_UPLOADS_PREFIX: &str = ".sealstore-uploads";

impl ObjectService {
    /// Brings an index written before layout 2 up to it (docs/FORMATS.md, "Object layout"):
    /// its objects stay where they are, in layout 1, and are read there until rewritten or
    /// deleted. Keys that layout 1 stored in one file (`a//b` and `a/b`) kept only the last
    /// one written: the others' entries, which named those bytes, are removed. Uploads in
    /// progress are aborted (their parts are layout 1's; clients upload them again).
    pub(super) fn upgrade_layout(&self) -> Result<()> {
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
