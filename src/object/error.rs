//! The object layer's errors: [`EncryptedStoreError`], what [`EncryptedStore`](super::EncryptedStore)
//! fails with, and [`ObjectError`], what the [`ObjectService`](super::ObjectService) fails with
//! (wrapping the store's in [`ObjectError::Store`]).
//!
//! The store's own methods return [`EncryptedStoreError`]; at the
//! [`ObjectStore`](object_store::ObjectStore) boundary it travels inside
//! `object_store::Error::Generic` (store `"EncryptedStore"`), except for backend errors, which
//! cross as themselves (so `NotFound`, `Precondition` and `AlreadyExists` stay what
//! object_store callers match on). Callers holding an `object_store::Error` get the typed
//! error back with [`EncryptedStoreError::from_object_store`] (borrowed) or
//! `EncryptedStoreError::from` (owned); nothing else downcasts.

use kms_core::KmsError;

use super::customer_key::CustomerKeyError;
use super::format::FormatError;
use crate::crypto::segment::SegmentError;

/// The `store` an [`EncryptedStoreError`] names when it crosses the `ObjectStore` boundary.
pub(crate) const STORE: &str = "EncryptedStore";

/// Boxed source of an [`EncryptedStoreError::Internal`] or [`EncryptedStoreError::Range`].
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of [`EncryptedStore`](super::EncryptedStore).
#[derive(Debug, thiserror::Error)]
pub enum EncryptedStoreError {
    /// An object's stored bytes failed their integrity checks while being read: its header
    /// does not parse, its sealed metadata, data key or a segment fails authentication, or
    /// it was truncated or extended. The object cannot be returned; reading it again will not
    /// help.
    #[error("object '{key}' in bucket '{bucket}' is damaged: {problem}")]
    Integrity {
        /// The bucket (the store's name in object identities).
        bucket: String,
        /// The object's key.
        key: String,
        /// What failed (with [`IntegrityProblem::segment`], the first bad segment).
        problem: IntegrityProblem,
    },
    /// An object or a location is not in a form this store can use, though nothing failed
    /// authentication: a wrapped data key in an unknown encoding, sealed metadata that is not
    /// the store's, a location outside the bucket's layout.
    #[error("{location}: {problem}")]
    Format {
        /// The object's location in the store.
        location: String,
        /// What is wrong with it.
        #[source]
        problem: FormatProblem,
    },
    /// Key management refused or failed to give, open or re-wrap an object's data key.
    #[error("{location}: {action}: {source}")]
    Key {
        /// The object's location in the store.
        location: String,
        /// What was being done.
        action: &'static str,
        /// Why key management refused.
        #[source]
        source: KmsError,
    },
    /// The object is encrypted with a customer-provided key, which this store does not hold.
    #[error("{location}: encrypted with a customer-provided key; {consequence}")]
    CustomerKeyRequired {
        /// The object's location in the store.
        location: String,
        /// What cannot be done for want of it.
        consequence: &'static str,
    },
    /// A read's range does not fit the object.
    #[error("{0}")]
    Range(#[source] BoxError),
    /// The store holding the ciphertext failed.
    #[error(transparent)]
    Backend(object_store::Error),
    /// Something that does not depend on the object failed (a blocking task, the random
    /// source, serialisation, sealing).
    #[error("{what}: {source}")]
    Internal {
        /// What was being done.
        what: &'static str,
        /// What failed.
        #[source]
        source: BoxError,
    },
}

/// What failed in an [`EncryptedStoreError::Integrity`].
#[derive(Debug, thiserror::Error)]
pub enum IntegrityProblem {
    /// The header does not parse.
    #[error("its header is unreadable: {0}")]
    Header(FormatError),
    /// The sealed metadata failed authentication (the header was altered).
    #[error("its header failed authentication: {0}")]
    Metadata(SegmentError),
    /// Key management rejected the wrapped data key (the header was altered).
    #[error("its wrapped data key was rejected: {0}")]
    DataKey(#[source] KmsError),
    /// The customer-provided key, which matched the object's key check, did not unwrap its
    /// data key (the header was altered).
    #[error("its wrapped data key was rejected: {0}")]
    CustomerDataKey(#[source] CustomerKeyError),
    /// The stored length disagrees with the header.
    #[error("{0}")]
    Length(String),
    /// A segment failed authentication, or the body is cut inside one.
    #[error(transparent)]
    Segment(SegmentError),
    /// The body ended before the length the header implies.
    #[error("its body ended after {got} of {expected} bytes")]
    ShortBody {
        /// Sealed bytes read.
        got: u64,
        /// Sealed bytes expected.
        expected: u64,
    },
}

impl IntegrityProblem {
    /// The first damaged segment, when a segment failed.
    pub fn segment(&self) -> Option<u64> {
        match self {
            IntegrityProblem::Segment(SegmentError::Integrity { index }) => Some(*index),
            _ => None,
        }
    }
}

/// What is wrong in an [`EncryptedStoreError::Format`].
#[derive(Debug, thiserror::Error)]
pub enum FormatProblem {
    /// The KMS-wrapped data key in the header is not in key management's format.
    #[error("its wrapped data key is not in a known format: {0}")]
    WrappedKey(#[source] KmsError),
    /// The customer-wrapped data key in the header is not in a known format.
    #[error("{0}")]
    CustomerKey(#[source] CustomerKeyError),
    /// The sealed metadata authenticated but is not the store's.
    #[error("its sealed metadata is not in a known format: {0}")]
    Metadata(#[source] serde_json::Error),
    /// The location is not one of the bucket's layout.
    #[error("not an object or part location of bucket {bucket}")]
    NotInLayout {
        /// The bucket.
        bucket: String,
    },
}

impl EncryptedStoreError {
    /// The typed error inside an object-store error that an [`EncryptedStore`](super::EncryptedStore)
    /// returned, if it is one (backend errors cross the boundary as themselves, and are not).
    pub fn from_object_store(e: &object_store::Error) -> Option<&EncryptedStoreError> {
        match e {
            object_store::Error::Generic { source, .. } => source.downcast_ref(),
            _ => None,
        }
    }

    /// The first damaged segment, when a segment failed authentication.
    pub fn segment(&self) -> Option<u64> {
        match self {
            EncryptedStoreError::Integrity { problem, .. } => problem.segment(),
            _ => None,
        }
    }

    /// Key management's refusal, when it refused.
    pub fn kms(&self) -> Option<&KmsError> {
        match self {
            EncryptedStoreError::Key { source, .. } => Some(source),
            _ => None,
        }
    }

    /// A function making an [`EncryptedStoreError::Internal`] for `what` (for `map_err`).
    pub(crate) fn internal<E: Into<BoxError>>(what: &'static str) -> impl FnOnce(E) -> Self {
        move |source| EncryptedStoreError::Internal {
            what,
            source: source.into(),
        }
    }
}

/// An `object_store::Error` as the typed error: the typed error inside it when an
/// `EncryptedStore` made it, otherwise a backend error.
impl From<object_store::Error> for EncryptedStoreError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::Generic { store, source } => match source.downcast::<EncryptedStoreError>() {
                Ok(typed) => *typed,
                Err(source) => EncryptedStoreError::Backend(object_store::Error::Generic { store, source }),
            },
            other => EncryptedStoreError::Backend(other),
        }
    }
}

/// The typed error at the `ObjectStore` boundary: backend errors as themselves, the others
/// inside `Generic`.
impl From<EncryptedStoreError> for object_store::Error {
    fn from(e: EncryptedStoreError) -> Self {
        match e {
            EncryptedStoreError::Backend(e) => e,
            typed => object_store::Error::Generic {
                store: STORE,
                source: Box::new(typed),
            },
        }
    }
}

// ----- IndexError: what the object index fails with -----

/// Index failures.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The metadata store failed, or cannot be reached now
    /// ([`sealstore_meta::Error::is_unavailable`]).
    #[error("object index: {0}")]
    Metadata(#[from] sealstore_meta::Error),
    /// A stored record does not parse.
    #[error("object index: {0}")]
    Record(#[from] serde_json::Error),
    /// A stored value is not what the index writes.
    #[error("object index: {0}")]
    Corrupt(&'static str),
    /// The group commit that carried this entry failed (the first writer of the batch has
    /// the error itself).
    #[error("object index: committing a group of entries: {0}")]
    GroupCommit(String),
}

// ----- ObjectError: what the object service fails with -----

/// Errors of the object service.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The name cannot name a bucket (see the object service's `check_bucket_name`).
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
    /// A key call stopped before it finished (it panicked, or the runtime shut down).
    #[error(transparent)]
    KeyCallInterrupted(crate::key_service::KeyServiceError),
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
    /// A part other than the last is smaller than the completion allows.
    #[error("part {part} is smaller than the {minimum}-byte minimum for all parts but the last")]
    EntityTooSmall {
        /// The part's number.
        part: u32,
        /// The smallest size allowed for all parts but the last.
        minimum: u64,
    },
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

impl From<object_store::Error> for ObjectError {
    fn from(e: object_store::Error) -> Self {
        // What an EncryptedStore said through the ObjectStore trait, typed again.
        ObjectError::Store(e.into())
    }
}

impl From<crate::key_service::KeyServiceError> for ObjectError {
    fn from(e: crate::key_service::KeyServiceError) -> Self {
        match e {
            crate::key_service::KeyServiceError::Key(kms) => ObjectError::Kms(kms),
            interrupted => ObjectError::KeyCallInterrupted(interrupted),
        }
    }
}

impl From<std::convert::Infallible> for ObjectError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}
