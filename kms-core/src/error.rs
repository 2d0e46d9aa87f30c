//! The one error type of kms-core.
//!
//! Every variant carries a message written for the person who made the call: it names the
//! resource and says what to do, because these errors reach CLI users and API clients verbatim.

use thiserror::Error;

/// Result alias used across kms-core.
pub type Result<T, E = KmsError> = std::result::Result<T, E>;

/// Everything that can go wrong in key management.
#[derive(Debug, Error)]
pub enum KmsError {
    /// The resource does not exist (or the caller may not see it).
    #[error("{kind} {id} not found")]
    NotFound {
        /// "vault", "key", "key version", "compartment".
        kind: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// A request parameter is malformed or out of range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The resource is in a lifecycle state that does not allow the operation.
    #[error("incorrect state: {0}")]
    IncorrectState(String),
    /// The key, version or vault may not be used for this operation (disabled, pending
    /// deletion, old version asked to encrypt).
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The vault was deleted and its key material destroyed; nothing can decrypt under it.
    #[error("vault {0} has been deleted and its keys destroyed; data encrypted under them cannot be recovered")]
    VaultDeleted(String),
    /// The ciphertext is not one this service produced, or it was altered.
    #[error("ciphertext rejected: {0}")]
    InvalidCiphertext(String),
    /// A protection backend (software, HSM, external) failed.
    #[error("key protection backend failed: {0}")]
    Protection(String),
    /// A key manager on the network (another sealstore's KMS API, an external key manager)
    /// could not be reached or did not answer in time; the call may succeed later.
    #[error("key manager unavailable: {0}")]
    Unavailable(String),
    /// The root key does not open this data directory.
    #[error("root key mismatch: {0}")]
    RootKey(String),
    /// The embedded database failed.
    #[error("store error: {0}")]
    Store(String),
    /// Filesystem error around the data directory.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl KmsError {
    pub(crate) fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        KmsError::NotFound { kind, id: id.into() }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        KmsError::Io {
            context: context.into(),
            source,
        }
    }
}

macro_rules! store_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for KmsError {
            fn from(e: $t) -> Self {
                KmsError::Store(e.to_string())
            }
        }
    )*};
}
store_error_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);
