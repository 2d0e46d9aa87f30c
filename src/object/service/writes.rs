//! Writes: put (streamed, with its MD5 and an optional condition), copy and delete.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use object_store::path::Path;
use object_store::{Attribute, Attributes, MultipartUpload, PutMultipartOptions, PutOptions, PutPayload};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::reads::OpenObject;
use super::{delete_quietly, BucketStore, ObjectService, Result};
use crate::object::encryption::{Encryption, EncryptionRequest};
use crate::object::error::IndexError;
use crate::object::error::ObjectError;
use crate::object::index::{ContentHeaders, Layout, ObjectEntry, ObjectIndex};
use crate::object::layout;
use crate::object::store::{WrappedBy, MULTIPART_PART_BYTES};

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
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 1024 {
        return Err(ObjectError::KeyTooLong(key.len()));
    }
    Ok(())
}

/// Bodies up to this size are buffered and stored with a single put.
pub(crate) const SINGLE_PUT_MAX: usize = 1 << 20;

impl ObjectService {
    /// Runs `f` on the index from a blocking thread: commits wait on the disk (and on the
    /// durability barrier before them), and concurrent writers' entries gather meanwhile to be
    /// committed together (see `ObjectIndex::put_if_bucket`).
    pub(super) async fn on_index<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ObjectIndex) -> std::result::Result<T, IndexError> + Send + 'static,
    {
        let index = self.index.clone();
        let done = tokio::task::spawn_blocking(move || f(&index)).await.map_err(stopped)?;
        Ok(done?)
    }

    /// Streams `body` into `location` of `store` as one encrypted object, computing its MD5;
    /// when `expected_md5` does not match, nothing is published. Bodies up to
    /// [`SINGLE_PUT_MAX`] are stored with one put (one write of the backend); larger ones
    /// stream through a multipart upload. Returns the size, the MD5 and what wraps the
    /// object's data key.
    pub(super) async fn write_stream<S, E>(
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
                    size += chunk.len() as u64;
                    buffered.push(chunk);
                }
                None => {
                    // The whole body is here: checked before anything is written.
                    let mut md5 = Md5::new();
                    buffered.iter().for_each(|chunk| md5.update(chunk));
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
        let mut parts = PartPipeline::new(upload);
        for chunk in buffered {
            parts.write(chunk).await?;
        }
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    parts.abort().await;
                    return Err(e.into());
                }
            };
            size += chunk.len() as u64;
            parts.write(chunk).await?;
        }
        let (mut upload, md5) = parts.finish().await?;
        let digest = match check(md5) {
            Ok(d) => d,
            Err(e) => {
                // Nothing was published: the previous object (if any) stays as it was.
                PartPipeline::abort_upload(&mut upload).await;
                return Err(e);
            }
        };
        upload.complete().await?;
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
    pub(super) async fn put_with_etag<S, E>(
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
        let resolved = self.resolve(bucket, &params.encryption).await?;
        self.require_bucket(bucket)?;
        let store = self.object_store(bucket, key).sealed_with(resolved.sealing);
        // Held from the condition's check through the store's write to the index's, so the
        // condition holds for what is replaced and the index describes the stored object.
        let _lock = self.lock_key(bucket, key).await?;
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
        let stored = {
            let (bucket, key, entry) = (bucket.to_owned(), key.to_owned(), entry.clone());
            self.on_index(move |index| index.put_if_bucket(&bucket, &key, &entry))
                .await?
        };
        if !stored {
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
        let _lock = self.lock_key(bucket, key).await?;
        let Some(entry) = self.index.get(bucket, key)? else {
            return Ok(());
        };
        self.index.remove(bucket, key)?;
        let (store, location) = self.locate(bucket, key, &entry);
        delete_quietly(&store, &location).await;
        Ok(())
    }
}

/// Parts of a large body being written at once: each is sealed, then written in the
/// background while the next one is gathered and the MD5 runs. With 8 MiB parts an upload
/// holds about 40 MiB at most: the part being gathered, the one the upload keeps back to end
/// the object, one sealed part being written and the parts queued for and in the MD5 (tested:
/// a 1 GiB PUT within 64 MiB of a tiny one's peak RSS).
const PARTS_IN_FLIGHT: usize = 1;
/// Parts queued for the MD5 thread: the body waits when hashing falls this far behind.
const PARTS_QUEUED_FOR_MD5: usize = 1;

/// A large body on its way into a multipart upload: the body's pieces are gathered into
/// parts of [`MULTIPART_PART_BYTES`] (the one copy of the plaintext; the upload seals them
/// without another), each part is handed to the upload and written in the background, at
/// most [`PARTS_IN_FLIGHT`] at once, and its MD5 is computed on a blocking thread of its own,
/// beside the sealing and the writes, over the same bytes.
struct PartPipeline {
    upload: Box<dyn MultipartUpload>,
    gathering: BytesMut,
    writes: JoinSet<object_store::Result<()>>,
    md5_parts: Option<mpsc::Sender<Bytes>>,
    md5: JoinHandle<Md5>,
}

impl PartPipeline {
    fn new(upload: Box<dyn MultipartUpload>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(PARTS_QUEUED_FOR_MD5);
        let md5 = tokio::task::spawn_blocking(move || {
            let mut md5 = Md5::new();
            while let Some(part) = rx.blocking_recv() {
                md5.update(&part);
            }
            md5
        });
        PartPipeline {
            upload,
            gathering: BytesMut::with_capacity(MULTIPART_PART_BYTES),
            writes: JoinSet::new(),
            md5_parts: Some(tx),
            md5,
        }
    }

    async fn write(&mut self, mut chunk: Bytes) -> Result<()> {
        while !chunk.is_empty() {
            let room = MULTIPART_PART_BYTES - self.gathering.len();
            let take = room.min(chunk.len());
            self.gathering.extend_from_slice(&chunk.split_to(take));
            if self.gathering.len() == MULTIPART_PART_BYTES {
                let part = std::mem::replace(&mut self.gathering, BytesMut::with_capacity(MULTIPART_PART_BYTES));
                if let Err(e) = self.send(part.freeze()).await {
                    self.abort().await;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Hands one part to the MD5 thread and to the upload, once fewer than
    /// [`PARTS_IN_FLIGHT`] writes are running.
    async fn send(&mut self, part: Bytes) -> Result<()> {
        while self.writes.len() >= PARTS_IN_FLIGHT {
            Self::joined(self.writes.join_next().await)?;
        }
        if let Some(tx) = &self.md5_parts {
            // The receiver lives until the sender is dropped.
            let _ = tx.send(part.clone()).await;
        }
        let write = self.upload.put_part(PutPayload::from(part));
        self.writes.spawn(write);
        Ok(())
    }

    fn joined(joined: Option<std::result::Result<object_store::Result<()>, tokio::task::JoinError>>) -> Result<()> {
        match joined {
            None => Ok(()),
            Some(Ok(written)) => Ok(written?),
            Some(Err(e)) => Err(stopped(e)),
        }
    }

    /// Sends what is gathered, waits for every write and the MD5; the upload is then ready
    /// to complete (or to abort, should the MD5 not be the one expected).
    async fn finish(mut self) -> Result<(Box<dyn MultipartUpload>, Md5)> {
        let rest = std::mem::take(&mut self.gathering);
        if !rest.is_empty() {
            if let Err(e) = self.send(rest.freeze()).await {
                self.abort().await;
                return Err(e);
            }
        }
        while let Some(joined) = self.writes.join_next().await {
            if let Err(e) = Self::joined(Some(joined)) {
                self.abort().await;
                return Err(e);
            }
        }
        self.md5_parts = None;
        let md5 = (&mut self.md5).await.map_err(stopped)?;
        Ok((self.upload, md5))
    }

    /// Stops the writes and removes what was uploaded; the object is not published.
    async fn abort(&mut self) {
        self.writes.abort_all();
        while self.writes.join_next().await.is_some() {}
        self.md5_parts = None;
        Self::abort_upload(&mut self.upload).await;
    }

    async fn abort_upload(upload: &mut Box<dyn MultipartUpload>) {
        if let Err(e) = upload.abort().await {
            tracing::warn!(error = %e, "could not remove an aborted upload's parts");
        }
    }
}

/// The error of a task on the blocking pool that panicked or was cancelled.
fn stopped(e: tokio::task::JoinError) -> ObjectError {
    ObjectError::Io(std::io::Error::other(e.to_string()))
}
