//! [`EncryptedStore`]: an [`ObjectStore`] that encrypts every object it is given and stores
//! the ciphertext in another `ObjectStore` — a decorator in the style of object_store's own
//! `PrefixStore` and `LimitStore`, so anything written against object_store can use it.
//!
//! Each object gets a fresh data key from the [`KeyProvider`] (through the
//! [`KeyService`], which decides where each key call runs), wrapped by the store's master
//! key and bound to the object's identity (bucket name of this store, path, version `null`).
//! Reads work whatever master key version wrapped the object; every write — put, copy —
//! uses the current one, which is how re-encryption after a rotation happens lazily.
//! Writes are as atomic as the inner store's (LocalFileSystem and S3 both publish a whole
//! object or nothing).

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use kms_core::{KeyProvider, Ocid};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    UploadPart,
};
use serde::{Deserialize, Serialize};

use super::customer_key::{self, CustomerKey};
use super::error::{EncryptedStoreError, FormatProblem, IntegrityProblem};
use super::format::{FormatError, ObjectHeader, ObjectIdentity};
use crate::crypto::segment::{SegmentCipher, SegmentSize};
use crate::crypto::stream::{open_stream, seal_stream, SegmentRun, StreamError, DEFAULT_BATCH_SEGMENTS};
use crate::key_service::{KeyService, KeyServiceError};

/// The store's own methods fail with the typed error; its `ObjectStore` methods with
/// `object_store::Error`, which carries it (see [`super::error`]).
type Result<T, E = EncryptedStoreError> = std::result::Result<T, E>;
/// Bytes fetched to read a header in one request: headers are ~300 bytes plus metadata, and
/// the rest of the first request brings a default segment (64 KiB sealed) with them, so a
/// small object, or the start of a large one, is read in one request (the bytes are kept).
const HEADER_PROBE: u64 = 4096 + 65536;
/// Bytes fetched to read a header alone (a HEAD, a rewrap, a range that starts past the first
/// segment): a header with up to ~3.5 KiB of sealed metadata; a longer one takes another try.
const HEADER_ONLY: u64 = 4096;

/// What to ask the inner store for with the header.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// The whole object, header and body in one answer.
    Whole,
    /// The header and the segment after it (a read near the start).
    WithFirstSegment,
    /// The header alone.
    HeaderOnly,
}
/// Plaintext per multipart part: 8 MiB, above S3's 5 MiB minimum for every part but the last.
/// A writer that hands [`EncryptedStore::put_multipart_reporting`]'s upload parts of this size
/// (with the default segment size, a whole number of segments) has them sealed without a copy.
pub(crate) const MULTIPART_PART_BYTES: usize = 8 << 20;

/// Plaintext-side bound of the first read of a whole local object: the header and, for an
/// object up to a batch of segments, the whole of it, in one blocking call (as plain files
/// are read) instead of a header read and a body read.
const LOCAL_FIRST_READ: u64 = sealed_batch(SegmentSize::DEFAULT) as u64 + 4096;

/// Sealed bytes in a batch of [`DEFAULT_BATCH_SEGMENTS`] segments of `size`: what a local
/// file is read by, and what a stream opens at a time.
const fn sealed_batch(size: SegmentSize) -> usize {
    size.sealed_offset(DEFAULT_BATCH_SEGMENTS as u64) as usize
}

/// Reads `len` bytes of `file` at `at` on the blocking pool, into a buffer that is not
/// zeroed first; hands the file back for the next read.
async fn read_file_at(
    file: std::fs::File,
    path: std::path::PathBuf,
    at: u64,
    len: usize,
) -> Result<(std::fs::File, std::path::PathBuf, Bytes)> {
    let read = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let want = len - buf.len();
            let got = rustix::io::pread(
                &file,
                rustix::buffer::spare_capacity(&mut buf),
                at + (len - want) as u64,
            );
            match got {
                Ok(0) => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{}: ended {} bytes early", path.display(), want),
                    );
                    return Err(e);
                }
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            }
        }
        Ok((file, path, Bytes::from(buf)))
    })
    .await
    .map_err(EncryptedStoreError::internal("reading a file"))?;
    read.map_err(EncryptedStoreError::internal("reading a file"))
}

/// `range` of an open local file as a stream, `chunk` bytes per blocking call: object_store's
/// own stream reads 8 KiB per call, which made a large GET about six times slower than
/// reading the file (measured by `sealstore bench object`).
fn file_stream(
    file: std::fs::File,
    path: std::path::PathBuf,
    range: Range<u64>,
    chunk: usize,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    stream::try_unfold((file, path, range.start), move |(file, path, at)| async move {
        if at >= range.end {
            return Ok(None);
        }
        let len = (range.end - at).min(chunk as u64) as usize;
        let (file, path, bytes) = read_file_at(file, path, at, len).await?;
        Ok(Some((bytes, (file, path, at + len as u64))))
    })
    .boxed()
}

/// The body of an inner store's answer as a stream (a local file read as [`file_stream`] does).
fn body_stream(result: GetResult, chunk: usize) -> BoxStream<'static, object_store::Result<Bytes>> {
    match result.payload {
        GetResultPayload::File(file, path) => file_stream(file, path, result.range, chunk),
        GetResultPayload::Stream(s) => s,
    }
}

fn damaged(bucket: &str, key: &str, problem: IntegrityProblem) -> EncryptedStoreError {
    EncryptedStoreError::Integrity {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        problem,
    }
}

fn format(location: &Path, problem: FormatProblem) -> EncryptedStoreError {
    EncryptedStoreError::Format {
        location: location.to_string(),
        problem,
    }
}

fn key_error(location: &Path, action: &'static str) -> impl FnOnce(KeyServiceError) -> EncryptedStoreError {
    let location = location.to_string();
    move |e| match e {
        KeyServiceError::Key(source) => EncryptedStoreError::Key {
            location,
            action,
            source,
        },
        KeyServiceError::Interrupted { action, source } => EncryptedStoreError::internal(action)(source),
    }
}

fn customer_key_required(location: &Path, consequence: &'static str) -> EncryptedStoreError {
    EncryptedStoreError::CustomerKeyRequired {
        location: location.to_string(),
        consequence,
    }
}

/// Metadata sealed into every object: the attributes given at put time.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SealedMetadata {
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    #[serde(default)]
    user_metadata: std::collections::BTreeMap<String, String>,
}

impl SealedMetadata {
    fn from_attributes(attributes: &Attributes) -> Self {
        let mut m = SealedMetadata::default();
        for (attribute, value) in attributes {
            let v = Some(value.as_ref().to_owned());
            match attribute {
                Attribute::ContentType => m.content_type = v,
                Attribute::ContentEncoding => m.content_encoding = v,
                Attribute::ContentDisposition => m.content_disposition = v,
                Attribute::ContentLanguage => m.content_language = v,
                Attribute::CacheControl => m.cache_control = v,
                Attribute::Metadata(k) => {
                    m.user_metadata.insert(k.to_string(), value.as_ref().to_owned());
                }
                _ => {}
            }
        }
        m
    }

    fn to_attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        let mut set = |attr: Attribute, v: &Option<String>| {
            if let Some(v) = v {
                a.insert(attr, AttributeValue::from(v.clone()));
            }
        };
        set(Attribute::ContentType, &self.content_type);
        set(Attribute::ContentEncoding, &self.content_encoding);
        set(Attribute::ContentDisposition, &self.content_disposition);
        set(Attribute::ContentLanguage, &self.content_language);
        set(Attribute::CacheControl, &self.cache_control);
        for (k, v) in &self.user_metadata {
            a.insert(Attribute::Metadata(k.clone().into()), AttributeValue::from(v.clone()));
        }
        a
    }
}

/// What is shared between the store and the streams and uploads it hands out.
struct Shared<S> {
    inner: S,
    keys: KeyService,
    bucket: String,
    segment_size: SegmentSize,
    naming: Naming,
}

/// How a store names what it seals: the object identity (docs/FORMATS.md) bound into each
/// object's data key and segments, derived from its location in the inner store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// The location is the key (object_store users; sealstore's layout 1).
    Paths,
    /// sealstore's bucket layout (`docs/FORMATS.md`): locations are encoded S3 keys, or
    /// upload parts, which get identities no object can have.
    BucketLayout,
    /// Every object of the store is this key's (sealstore's bucket layout, for one object,
    /// whose name may be a hash of its key).
    Key(Arc<str>),
}

/// The key that wraps the data key of every object a store writes.
#[derive(Debug, Clone)]
pub enum Sealing {
    /// The current version of a KMS master key.
    Kms(Ocid),
    /// A customer-provided key (S3's SSE-C). Objects written with it can only be read
    /// through a store sealing with the same key.
    Customer(Arc<CustomerKey>),
}

impl fmt::Display for Sealing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sealing::Kms(key_id) => write!(f, "key {key_id}"),
            Sealing::Customer(_) => f.write_str("a customer-provided key"),
        }
    }
}

/// What protects a stored object, as its header says (no key is needed to read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrappedBy {
    /// A KMS master key version.
    Kms {
        /// Master key.
        key_id: Ocid,
        /// Version.
        key_version_id: Ocid,
    },
    /// A customer-provided key; the key check proves knowledge of it (see [`customer_key`]).
    Customer {
        /// HMAC of the object identity under the customer key.
        key_check: [u8; customer_key::KEY_CHECK_LEN],
    },
}

/// An [`ObjectStore`] encrypting into another.
///
/// Every object gets its own data key, wrapped by master key `key_id` of a [`KeyProvider`]
/// (an embedded [`kms_core::Kms`], or another sealstore's KMS API through
/// [`RemoteKms`](crate::remote::RemoteKms)); the ciphertext goes to the inner store
/// in segments, so ranged reads decrypt only the segments they touch. A damaged, truncated or
/// moved object is refused ([`EncryptedStoreError`]), never
/// returned altered.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use kms_core::{CreateKey, CreateVault, Kms, KmsConfig, Principal};
/// use object_store::{memory::InMemory, path::Path, ObjectStore};
/// use sealstore::object::EncryptedStore;
///
/// let dir = tempfile::tempdir()?;
/// let kms = Arc::new(Kms::open(KmsConfig::new(dir.path()))?);
/// let me = Principal::local_admin();
/// let vault = kms.create_vault(&me, CreateVault { display_name: "v".into(), ..Default::default() })?;
/// let key = kms.create_key(&me, CreateKey::new(vault.id, "objects"))?;
///
/// let plain: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
/// let store = EncryptedStore::new(plain.clone(), kms, key.id, "my-bucket");
/// let location = Path::from("hello.txt");
/// store.put(&location, "hello, world".into()).await?;
/// assert_eq!(store.get_range(&location, 7..12).await?, "world");
/// // Underneath: ciphertext.
/// let sealed = plain.get(&location).await?.bytes().await?;
/// assert!(!sealed.windows(5).any(|w| w == b"hello"));
/// # Ok(()) }
/// ```
///
/// `examples/encrypted_store.rs` (local files and S3) and
/// `examples/parquet_over_encrypted_store.rs` (the `parquet` crate reading through it) show
/// more.
pub struct EncryptedStore<S> {
    shared: Arc<Shared<S>>,
    sealing: Sealing,
}

impl<S> fmt::Debug for EncryptedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedStore")
            .field("bucket", &self.shared.bucket)
            .field("sealing", &self.sealing)
            .finish()
    }
}

impl<S: ObjectStore> fmt::Display for EncryptedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EncryptedStore({}, bucket {}, {})",
            self.shared.inner, self.shared.bucket, self.sealing
        )
    }
}

/// A parsed header with what it takes to open the object it starts.
struct Opened {
    header: ObjectHeader,
    header_len: u64,
    sealed_meta: ObjectMeta,
    /// The object's first bytes as read with the header (the header and what follows it).
    probe: Bytes,
    /// Where the bytes after `probe` come from.
    rest: Rest,
}

/// Where an opened object's bytes after its probe come from.
enum Rest {
    /// The inner store answered with the whole object: the rest of that same answer.
    Continues(BoxStream<'static, object_store::Result<Bytes>>),
    /// A local file, still open: any range of the very object whose header was read.
    File(std::fs::File, std::path::PathBuf),
    /// Only the probed range was fetched: the rest takes another request, conditional on the
    /// e-tag of the object whose header was read.
    Refetch,
}

impl<S: ObjectStore> EncryptedStore<S> {
    /// Encrypts into `inner` under master key `key_id`; `bucket` names this store in every
    /// object's identity (objects cannot be moved between buckets or names undetected).
    pub fn new(inner: S, keys: Arc<dyn KeyProvider>, key_id: Ocid, bucket: impl Into<String>) -> Self {
        Self::with_segment_size(inner, keys, key_id, bucket, SegmentSize::DEFAULT)
    }

    /// As [`EncryptedStore::new`] with another segment size for new objects.
    pub fn with_segment_size(
        inner: S,
        keys: Arc<dyn KeyProvider>,
        key_id: Ocid,
        bucket: impl Into<String>,
        segment_size: SegmentSize,
    ) -> Self {
        EncryptedStore {
            shared: Arc::new(Shared {
                inner,
                keys: KeyService::new(keys),
                bucket: bucket.into(),
                segment_size,
                naming: Naming::Paths,
            }),
            sealing: Sealing::Kms(key_id),
        }
    }

    /// The same new store naming its objects as `naming` says.
    pub fn with_naming(mut self, naming: Naming) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("with_naming is called on a new store")
            .naming = naming;
        self
    }

    /// The same store (same inner store and bucket) writing with another key: another KMS
    /// master key, or a customer-provided key, which reading such objects also needs.
    pub fn sealed_with(&self, sealing: Sealing) -> Self {
        EncryptedStore {
            shared: self.shared.clone(),
            sealing,
        }
    }

    /// The store holding the ciphertext.
    pub fn inner(&self) -> &S {
        &self.shared.inner
    }

    /// What wraps `location`'s data key, read from its header.
    pub async fn wrapped_by(&self, location: &Path) -> Result<WrappedBy> {
        let opened = self
            .shared
            .read_header(location, &GetOptions::default(), Probe::HeaderOnly)
            .await?;
        let wrapped = &opened.header.wrapped_dek;
        if customer_key::is_customer_wrapped(wrapped) {
            let key_check = customer_key::key_check_of(wrapped).ok_or_else(|| {
                format(
                    location,
                    FormatProblem::CustomerKey(customer_key::CustomerKeyError::Malformed),
                )
            })?;
            return Ok(WrappedBy::Customer { key_check });
        }
        let wrapped =
            kms_core::ciphertext::parse(wrapped).map_err(|e| format(location, FormatProblem::WrappedKey(e)))?;
        Ok(WrappedBy::Kms {
            key_id: wrapped.key_id,
            key_version_id: wrapped.key_version_id,
        })
    }

    /// Re-wraps `location`'s data key under the current version of its master key: the header
    /// is rewritten, the encrypted body is copied unchanged, and the result replaces the object
    /// atomically. Returns the version that wraps it now, or `None` when it already was the
    /// current one (nothing is written).
    pub async fn rewrap(&self, location: &Path) -> Result<Option<Ocid>> {
        let s = &self.shared;
        let opened = s
            .read_header(location, &GetOptions::default(), Probe::HeaderOnly)
            .await?;
        if customer_key::is_customer_wrapped(&opened.header.wrapped_dek) {
            return Err(customer_key_required(location, "only its owner can re-encrypt it"));
        }
        let old = kms_core::ciphertext::parse(&opened.header.wrapped_dek)
            .map_err(|e| format(location, FormatProblem::WrappedKey(e)))?;
        let primary = s
            .keys
            .primary_version(&old.key_id)
            .await
            .map_err(key_error(location, "cannot find the current version of its master key"))?;
        if primary == old.key_version_id {
            return Ok(None);
        }
        let (rewrapped, version) = s
            .keys
            .rewrap_data_key(&opened.header.wrapped_dek, &s.identity(location)?.to_bytes())
            .await
            .map_err(key_error(location, "cannot re-wrap the object's data key"))?;
        let header = ObjectHeader {
            wrapped_dek: rewrapped,
            ..opened.header.clone()
        };
        // The sealed body is copied as it is, a batch at a time: from the open local file, or
        // with one more request conditional on the e-tag of the header read.
        let batch = sealed_batch(opened.header.segment_size);
        let mut body = match opened.rest {
            Rest::File(file, path) => file_stream(file, path, opened.header_len..opened.sealed_meta.size, batch),
            Rest::Continues(_) | Rest::Refetch => {
                let body_opts = GetOptions {
                    if_match: opened.sealed_meta.e_tag.clone(),
                    range: Some(GetRange::Offset(opened.header_len)),
                    ..Default::default()
                };
                body_stream(s.inner.get_opts(location, body_opts).await?, batch)
            }
        };
        let mut upload = object_store::WriteMultipart::new(s.inner.put_multipart(location).await?);
        upload.write(&header.encode());
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => upload.put(bytes),
                Err(e) => {
                    upload.abort().await?;
                    return Err(e.into());
                }
            }
        }
        upload.finish().await?;
        Ok(Some(version))
    }

    /// [`ObjectStore::put_opts`], also saying what wraps the new object's data key (so that
    /// callers recording it need not read the header back).
    pub async fn put_reporting(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<(PutResult, WrappedBy)> {
        let s = &self.shared;
        let len = payload.content_length() as u64;
        let (header, cipher, wrapped_by) = s
            .new_object(location, Some(len), &opts.attributes, &self.sealing)
            .await?;

        let input = stream::iter(payload.into_iter().map(Ok::<_, std::io::Error>));
        let sealed: Vec<Bytes> = seal_stream(cipher, input, DEFAULT_BATCH_SEGMENTS)
            .try_collect()
            .await
            .map_err(EncryptedStoreError::internal("sealing the object"))?;
        let body = std::iter::once(Bytes::from(header.encode()))
            .chain(sealed)
            .collect::<PutPayload>();
        // Attributes are sealed inside the object; none are given to the inner store.
        let inner_opts = PutOptions {
            mode: opts.mode,
            tags: opts.tags,
            attributes: Attributes::new(),
            extensions: opts.extensions,
        };
        Ok((s.inner.put_opts(location, body, inner_opts).await?, wrapped_by))
    }

    /// [`ObjectStore::put_multipart_opts`], also saying what wraps the new object's data key.
    pub async fn put_multipart_reporting(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<(Box<dyn MultipartUpload>, WrappedBy)> {
        let s = &self.shared;
        let (header, cipher, wrapped_by) = s.new_object(location, None, &opts.attributes, &self.sealing).await?;
        let inner_opts = PutMultipartOptions {
            tags: opts.tags,
            attributes: Attributes::new(),
            extensions: opts.extensions,
        };
        let inner = s.inner.put_multipart_opts(location, inner_opts).await?;
        let upload: Box<dyn MultipartUpload> = Box::new(EncryptedUpload {
            inner,
            cipher,
            header: Some(header.encode()),
            pending: VecDeque::new(),
            pending_len: 0,
            next_segment: 0,
        });
        Ok((upload, wrapped_by))
    }

    /// [`ObjectStore::get_opts`] failing with the typed error (the body's stream still fails
    /// with `object_store::Error`, which carries it).
    pub async fn read(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let s = self.shared.clone();
        let probe = match &options.range {
            None => Probe::Whole,
            Some(GetRange::Bounded(r)) if r.start < HEADER_PROBE - HEADER_ONLY => Probe::WithFirstSegment,
            Some(GetRange::Offset(o)) if *o < HEADER_PROBE - HEADER_ONLY => Probe::WithFirstSegment,
            // A suffix, or a range further on: the segments before it would be read for nothing.
            Some(_) => Probe::HeaderOnly,
        };
        let opened = s.read_header(location, &options, probe).await?;
        let meta = s.plain_meta(&opened)?;
        let (cipher, attributes) = s.unwrap(location, &opened.header, &self.sealing).await?;
        let range = plain_range(&options.range, meta.size)?;
        let seg = opened.header.segment_size;
        let count = seg.segment_count(meta.size);
        let plain_seg = u64::from(seg.get());
        let (first, last) = if range.is_empty() {
            (0, 0)
        } else {
            (range.start / plain_seg, (range.end - 1) / plain_seg)
        };
        let sealed_start = opened.header_len + seg.sealed_offset(first);
        let sealed_end = (opened.header_len + seg.sealed_offset(last + 1)).min(opened.sealed_meta.size);
        let (opened_etag, opened_version) = (opened.sealed_meta.e_tag.clone(), opened.sealed_meta.version.clone());
        let batch = sealed_batch(seg);
        let Opened { probe, rest, .. } = opened;
        let probed = probe.len() as u64;
        let (from_probe, rest) = match rest {
            // All that is needed came with the header.
            _ if sealed_end <= probed => (Some(probe.slice(sealed_start as usize..sealed_end as usize)), None),
            // An open local file is read from the run's start in whole batches, so that no
            // batch is gathered from pieces (a copy); the probe's few bytes are read again.
            Rest::File(file, path) => (None, Some(file_stream(file, path, sealed_start..sealed_end, batch))),
            // What the header read brought along is not read again; the rest comes from the
            // very object whose header was read: the same answer, when it was asked for whole…
            Rest::Continues(body) => (Some(probe.slice(sealed_start as usize..)), Some(body)),
            // …or another request, conditional on its e-tag.
            Rest::Refetch => {
                let from = probed.max(sealed_start);
                let body_opts = GetOptions {
                    if_match: opened_etag,
                    version: opened_version,
                    range: Some(GetRange::Bounded(from..sealed_end)),
                    ..Default::default()
                };
                let head = (sealed_start < probed).then(|| probe.slice(sealed_start as usize..));
                (
                    head,
                    Some(body_stream(s.inner.get_opts(location, body_opts).await?, batch)),
                )
            }
        };
        // The probe's other handles are gone: a slice that is the only one left becomes a
        // batch without a copy.
        drop(probe);
        let body = stream::iter(from_probe.map(Ok))
            .chain(stream::iter(rest).flatten())
            .boxed();
        let run = SegmentRun {
            first,
            sealed_len: sealed_end - sealed_start,
            ends_object: last + 1 == count,
            skip: range.start - first * plain_seg,
            take: range.end - range.start,
        };
        let (bucket, key) = (s.bucket.clone(), s.key_of(location));
        let plain = open_stream(cipher, body, run, DEFAULT_BATCH_SEGMENTS)
            .map_err(move |e| {
                object_store::Error::from(match e {
                    StreamError::Segment(e) => damaged(&bucket, &key, IntegrityProblem::Segment(e)),
                    StreamError::ShortInput { got, expected } => {
                        damaged(&bucket, &key, IntegrityProblem::ShortBody { got, expected })
                    }
                    // The inner store's body failed: its error, as it was.
                    StreamError::Input(source) => match source.downcast::<object_store::Error>() {
                        Ok(inner) => EncryptedStoreError::from(*inner),
                        Err(source) => EncryptedStoreError::internal("reading the stored object")(source),
                    },
                })
            })
            .boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(plain),
            meta,
            range,
            attributes,
        })
    }
}

impl<S: ObjectStore> Shared<S> {
    fn identity(&self, location: &Path) -> Result<ObjectIdentity> {
        match &self.naming {
            Naming::Paths => Ok(ObjectIdentity::unversioned(self.bucket.clone(), location.as_ref())),
            Naming::Key(key) => Ok(ObjectIdentity::unversioned(self.bucket.clone(), key.as_ref())),
            Naming::BucketLayout => super::layout::identity_of(&self.bucket, location).ok_or_else(|| {
                format(
                    location,
                    FormatProblem::NotInLayout {
                        bucket: self.bucket.clone(),
                    },
                )
            }),
        }
    }

    /// The error for damage found in `location`.
    fn damaged(&self, location: &Path, problem: IntegrityProblem) -> EncryptedStoreError {
        damaged(&self.bucket, &self.key_of(location), problem)
    }

    /// The key of what is at `location`, as users know it (for messages).
    fn key_of(&self, location: &Path) -> String {
        self.identity(location)
            .ok()
            .filter(|i| !i.key.is_empty())
            .map_or_else(|| location.to_string(), |i| i.key)
    }

    /// A new header for `location` with a fresh DEK wrapped as `sealing` says; returns it
    /// with the object's segment cipher.
    async fn new_object(
        &self,
        location: &Path,
        plain_len: Option<u64>,
        attributes: &Attributes,
        sealing: &Sealing,
    ) -> Result<(ObjectHeader, Arc<SegmentCipher>, WrappedBy)> {
        let identity = self.identity(location)?;
        let (dek, wrapped, wrapped_by) = match sealing {
            Sealing::Kms(key_id) => {
                let data_key = self
                    .keys
                    .generate_data_key(key_id, &identity.to_bytes())
                    .await
                    .map_err(key_error(location, "cannot get a data key"))?;
                let dek = data_key.plaintext.ok_or_else(|| {
                    EncryptedStoreError::internal("getting a data key")("key provider returned no plaintext data key")
                })?;
                let wrapped_by = WrappedBy::Kms {
                    key_id: data_key.key_id,
                    key_version_id: data_key.key_version_id,
                };
                (dek, data_key.wrapped, wrapped_by)
            }
            Sealing::Customer(key) => {
                let dek = kms_core::Dek::generate().map_err(EncryptedStoreError::internal("generating a data key"))?;
                let wrapped = key
                    .wrap(&dek, &identity)
                    .map_err(EncryptedStoreError::internal("wrapping a data key with a customer key"))?;
                let wrapped_by = WrappedBy::Customer {
                    key_check: key.key_check(&identity),
                };
                (dek, wrapped, wrapped_by)
            }
        };
        let mut header = ObjectHeader::new(self.segment_size, plain_len, wrapped);
        let metadata = serde_json::to_vec(&SealedMetadata::from_attributes(attributes))
            .map_err(EncryptedStoreError::internal("encoding the object's metadata"))?;
        header.seal_metadata(dek.expose(), &identity, &metadata);
        let cipher = Arc::new(header.cipher(dek.expose(), &identity));
        Ok((header, cipher, wrapped_by))
    }

    /// Reads and parses the header of `location`. With [`Probe::Whole`] the object is asked for
    /// whole and the rest of that one answer is kept for the body (one request instead of
    /// two); otherwise only a probe of its first bytes is fetched, as `asked` says. A local
    /// file stays open either way, so that any of its bytes can follow without another
    /// request.
    async fn read_header(&self, location: &Path, options: &GetOptions, asked: Probe) -> Result<Opened> {
        let whole = matches!(asked, Probe::Whole);
        let mut probe = match asked {
            Probe::Whole | Probe::WithFirstSegment => HEADER_PROBE,
            Probe::HeaderOnly => HEADER_ONLY,
        };
        loop {
            let opts = GetOptions {
                if_match: options.if_match.clone(),
                if_none_match: options.if_none_match.clone(),
                if_modified_since: options.if_modified_since,
                if_unmodified_since: options.if_unmodified_since,
                version: options.version.clone(),
                range: (!whole).then_some(GetRange::Bounded(0..probe)),
                ..Default::default()
            };
            let result = self.inner.get_opts(location, opts).await?;
            // Some stores (object_store's PrefixStore) report the location with their prefix;
            // callers asked for `location`, so that is the one reported back.
            let sealed_meta = ObjectMeta {
                location: location.clone(),
                ..result.meta.clone()
            };
            let size = sealed_meta.size;
            let opened = |header, len: usize, probe, rest| Opened {
                header,
                header_len: len as u64,
                sealed_meta: sealed_meta.clone(),
                probe,
                rest,
            };
            match result.payload {
                GetResultPayload::File(mut file, mut path) => {
                    // A whole object that fits in a batch comes in this one read; of a larger
                    // one only the probe, since its body is then read in whole batches.
                    let mut len = if whole && size <= LOCAL_FIRST_READ {
                        size
                    } else {
                        probe.min(size)
                    };
                    loop {
                        let (f, p, bytes) = read_file_at(file, path, 0, len as usize).await?;
                        (file, path) = (f, p);
                        match ObjectHeader::parse(&bytes) {
                            Ok((header, header_len)) => {
                                return Ok(opened(header, header_len, bytes, Rest::File(file, path)))
                            }
                            Err(FormatError::Truncated) if len < size => len = (len * 4).min(size),
                            Err(e) => return Err(self.damaged(location, IntegrityProblem::Header(e))),
                        }
                    }
                }
                GetResultPayload::Stream(mut body) if whole => {
                    let mut gathered = bytes::BytesMut::new();
                    loop {
                        match ObjectHeader::parse(&gathered) {
                            Ok((header, header_len)) => {
                                return Ok(opened(header, header_len, gathered.freeze(), Rest::Continues(body)))
                            }
                            Err(FormatError::Truncated) => match body.next().await {
                                Some(chunk) => gathered.extend_from_slice(&chunk?),
                                None => {
                                    let e = FormatError::Truncated;
                                    return Err(self.damaged(location, IntegrityProblem::Header(e)));
                                }
                            },
                            Err(e) => return Err(self.damaged(location, IntegrityProblem::Header(e))),
                        }
                    }
                }
                GetResultPayload::Stream(_) => {
                    let bytes = result.bytes().await?;
                    match ObjectHeader::parse(&bytes) {
                        Ok((header, len)) => return Ok(opened(header, len, bytes, Rest::Refetch)),
                        Err(FormatError::Truncated) if (bytes.len() as u64) == probe && probe < size => {
                            probe = (probe * 4).min(size);
                        }
                        Err(e) => return Err(self.damaged(location, IntegrityProblem::Header(e))),
                    }
                }
            }
        }
    }

    /// Unwraps the object's DEK (with the customer key in `sealing` when the object was
    /// written with one); returns its segment cipher and its opened metadata.
    async fn unwrap(
        &self,
        location: &Path,
        header: &ObjectHeader,
        sealing: &Sealing,
    ) -> Result<(Arc<SegmentCipher>, Attributes)> {
        let identity = self.identity(location)?;
        let dek = if customer_key::is_customer_wrapped(&header.wrapped_dek) {
            let Sealing::Customer(key) = sealing else {
                return Err(customer_key_required(location, "this request did not supply it"));
            };
            // The key check matched before this store was opened: a key that does not unwrap
            // means the wrapped key was altered.
            key.unwrap(&header.wrapped_dek, &identity)
                .map_err(|e| self.damaged(location, IntegrityProblem::CustomerDataKey(e)))?
        } else {
            self.keys
                .unwrap_data_key(&header.wrapped_dek, &identity.to_bytes())
                .await
                .map_err(|e| match e {
                    KeyServiceError::Key(source @ kms_core::KmsError::InvalidCiphertext(_)) => {
                        self.damaged(location, IntegrityProblem::DataKey(source))
                    }
                    e => key_error(location, "cannot unwrap the object's data key")(e),
                })?
        };
        let metadata = header
            .open_metadata(dek.expose(), &identity)
            .map_err(|e| self.damaged(location, IntegrityProblem::Metadata(e)))?;
        let attributes = if metadata.is_empty() {
            Attributes::new()
        } else {
            serde_json::from_slice::<SealedMetadata>(&metadata)
                .map_err(|e| format(location, FormatProblem::Metadata(e)))?
                .to_attributes()
        };
        Ok((Arc::new(header.cipher(dek.expose(), &identity)), attributes))
    }

    fn plain_meta(&self, opened: &Opened) -> Result<ObjectMeta> {
        let location = &opened.sealed_meta.location;
        let size = opened.header.plain_len_of(opened.sealed_meta.size).map_err(|e| {
            self.damaged(
                location,
                IntegrityProblem::Length(format!("its stored length does not fit its header: {e}")),
            )
        })?;
        if let Some(declared) = opened.header.plain_len {
            if declared != size {
                return Err(self.damaged(
                    location,
                    IntegrityProblem::Length(format!(
                        "it is {size} bytes but its header says {declared}: it was truncated or extended"
                    )),
                ));
            }
        }
        Ok(ObjectMeta {
            size,
            ..opened.sealed_meta.clone()
        })
    }

    async fn head(&self, location: &Path) -> Result<ObjectMeta> {
        let opened = self
            .read_header(location, &GetOptions::default(), Probe::HeaderOnly)
            .await?;
        self.plain_meta(&opened)
    }
}

/// The plaintext byte range a request asks for, in an object of `len` bytes.
fn plain_range(range: &Option<GetRange>, len: u64) -> Result<Range<u64>> {
    match range {
        None => Ok(0..len),
        Some(r) => r.as_range(len).map_err(|e| EncryptedStoreError::Range(Box::new(e))),
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for EncryptedStore<S> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Ok(self.put_reporting(location, payload, opts).await?.0)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(self.put_multipart_reporting(location, opts).await?.0)
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        Ok(self.read(location, options).await?)
    }

    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        Ok(self.shared.head(location).await?)
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.shared.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let s = self.shared.clone();
        self.shared
            .inner
            .list(prefix)
            .map(move |meta| {
                let s = s.clone();
                async move { Ok(s.head(&meta?.location).await?) }
            })
            .buffered(8)
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let listed = self.shared.inner.list_with_delimiter(prefix).await?;
        let objects = stream::iter(listed.objects)
            .map(|meta| async move {
                self.shared
                    .head(&meta.location)
                    .await
                    .map_err(object_store::Error::from)
            })
            .buffered(8)
            .try_collect()
            .await?;
        Ok(ListResult {
            common_prefixes: listed.common_prefixes,
            objects,
        })
    }

    /// Copies by decrypting and re-encrypting: the new object is bound to its new name and
    /// wrapped by the current master key version.
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        let source = self.get(from).await?;
        let attributes = source.attributes.clone();
        let mut upload = self
            .put_multipart_opts(
                to,
                PutMultipartOptions {
                    attributes,
                    ..Default::default()
                },
            )
            .await?;
        let mut body = source.into_stream();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => upload.put_part(bytes.into()).await?,
                Err(e) => {
                    let _ = upload.abort().await;
                    return Err(e);
                }
            }
        }
        upload.complete().await.map(drop)
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        let source = self.get(from).await?;
        let attributes = source.attributes.clone();
        let bytes = source.bytes().await?;
        let opts = PutOptions {
            mode: PutMode::Create,
            attributes,
            ..Default::default()
        };
        self.put_opts(to, bytes.into(), opts).await.map(drop)
    }
}

/// A multipart upload that seals as it goes: plaintext parts of any size are cut into
/// batches of whole segments, each sealed and handed to the inner upload as one part. The
/// tail is held back until `complete`, where it becomes the object's last segment. Pending
/// plaintext is kept in the pieces it came in: a batch that lies within one piece is sealed
/// from it directly, only one that spans pieces is gathered (copied) first.
struct EncryptedUpload {
    inner: Box<dyn MultipartUpload>,
    cipher: Arc<SegmentCipher>,
    /// The encoded header, until it goes out in front of the first part.
    header: Option<Vec<u8>>,
    pending: VecDeque<Bytes>,
    pending_len: usize,
    next_segment: u64,
}

impl fmt::Debug for EncryptedUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedUpload")
            .field("next_segment", &self.next_segment)
            .field("pending_len", &self.pending_len)
            .finish()
    }
}

impl EncryptedUpload {
    /// Plaintext sealed into one inner part: [`MULTIPART_PART_BYTES`] in whole segments.
    fn batch(&self) -> usize {
        let segment = self.cipher.size().get() as usize;
        MULTIPART_PART_BYTES.div_ceil(segment) * segment
    }

    /// Removes the first `n` pending bytes (`n <= pending_len`), copying only if they span
    /// several pieces.
    fn take_pending(&mut self, n: usize) -> Bytes {
        debug_assert!(n <= self.pending_len);
        self.pending_len -= n;
        if let Some(front) = self.pending.front_mut() {
            if front.len() >= n {
                let taken = front.split_to(n);
                if front.is_empty() {
                    self.pending.pop_front();
                }
                return taken;
            }
        }
        let mut gathered = Vec::with_capacity(n);
        while gathered.len() < n {
            let Some(front) = self.pending.front_mut() else { break };
            let take = front.len().min(n - gathered.len());
            gathered.extend_from_slice(&front.split_to(take));
            if front.is_empty() {
                self.pending.pop_front();
            }
        }
        Bytes::from(gathered)
    }

    /// Seals `plain` as the next segments and sends it as one inner part.
    fn send(&mut self, plain: &[u8], last: bool) -> object_store::Result<UploadPart> {
        let count = (plain.len() / self.cipher.size().get() as usize).max(1) as u64;
        // Sealing runs on the rayon pool; the caller's thread waits for a few milliseconds.
        let sealed = self
            .cipher
            .seal(self.next_segment, plain, last)
            .map_err(EncryptedStoreError::internal("sealing the object"))?;
        self.next_segment += count;
        let part = match self.header.take() {
            Some(header) => PutPayload::from_iter([Bytes::from(header), Bytes::from(sealed)]),
            None => PutPayload::from(sealed),
        };
        Ok(self.inner.put_part(part))
    }
}

#[async_trait]
impl MultipartUpload for EncryptedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        for chunk in data {
            if !chunk.is_empty() {
                self.pending_len += chunk.len();
                self.pending.push_back(chunk);
            }
        }
        let batch = self.batch();
        let mut parts = Vec::new();
        // Strictly more than a batch: whatever comes last must stay for `complete`.
        while self.pending_len > batch {
            let plain = self.take_pending(batch);
            match self.send(&plain, false) {
                Ok(part) => parts.push(part),
                Err(e) => return Box::pin(futures::future::ready(Err(e))),
            }
        }
        Box::pin(async move {
            futures::future::try_join_all(parts).await?;
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let plain = self.take_pending(self.pending_len);
        self.send(&plain, true)?.await?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}
