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
    /// A resource with that id exists already (restoring a backup of a key or vault that is
    /// still there).
    #[error("{0}")]
    AlreadyExists(String),
    /// The key, version or vault may not be used for this operation (disabled, pending
    /// deletion, old version asked to encrypt), or a key manager refused the call: why, as a
    /// [`Refusal`], and a message for people.
    #[error("access denied: {0}")]
    AccessDenied(Denial),
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
    /// A replication state leaves out material that an earlier state carried, and this
    /// replica does not hold it (its data was lost or restored): the primary must ship the
    /// whole state again.
    #[error("this replica lacks the material of {0}: ship the whole state")]
    ReplicaIncomplete(String),
    /// The data directory was created for another region than the one asked for (a region
    /// is fixed at creation: it is in every id made there).
    #[error("this data directory belongs to region {stored} (fixed when it was created), not {requested}")]
    RegionMismatch {
        /// The region the data directory was created for.
        stored: String,
        /// The region asked for.
        requested: String,
    },
    /// An IAM change was asked of a member region: IAM is changed in the tenancy's home
    /// region only, and replicated from there.
    #[error("IAM of tenancy {tenancy} is changed in its home region {home} only (this is {region}): make the change there, it reaches {region} by replication")]
    NotHomeRegion {
        /// The tenancy.
        tenancy: String,
        /// Its home region.
        home: String,
        /// This region.
        region: String,
    },
    /// The root key does not open this data directory.
    #[error("root key mismatch: {0}")]
    RootKey(String),
    /// The metadata store failed, or cannot be reached now
    /// ([`sealstore_meta::Error::is_unavailable`]: answer "retry later").
    #[error("store error: {0}")]
    Metadata(#[from] sealstore_meta::Error),
    /// The store holds something it should not (a record that does not parse, a bad value).
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

/// Why a call was refused access to a key (see [`KmsError::AccessDenied`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The key is DISABLED.
    KeyDisabled,
    /// The key is scheduled for deletion.
    KeyPendingDeletion,
    /// The key was deleted and its material destroyed.
    KeyDeleted,
    /// The key's vault is scheduled for deletion.
    VaultPendingDeletion,
    /// The key's vault was deleted and its keys destroyed (see [`KmsError::VaultDeleted`]).
    VaultDeleted,
    /// The key's vault is not ready (still being created).
    VaultNotReady,
    /// Encryption was asked of a version that is not the key's primary.
    VersionNotPrimary,
    /// The version is DISABLED.
    VersionDisabled,
    /// The version is scheduled for deletion or deleted.
    VersionUnavailable,
    /// The version's material has been destroyed.
    MaterialDestroyed,
    /// A key manager on the network (an external key manager, another sealstore's KMS API)
    /// refused the call; its message says why.
    KeyManager,
    /// This server could not authenticate to a key manager on the network.
    Credentials,
}

/// A refusal: its [`Refusal`] and a message naming the resource and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Why, for code.
    pub reason: Refusal,
    /// Why, for people.
    pub message: String,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl KmsError {
    /// [`KmsError::AccessDenied`] for `reason`, explained by `message`.
    pub fn denied(reason: Refusal, message: impl Into<String>) -> Self {
        KmsError::AccessDenied(Denial {
            reason,
            message: message.into(),
        })
    }

    /// Why access was refused, when it was.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            KmsError::AccessDenied(d) => Some(d.reason),
            _ => None,
        }
    }

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

impl From<serde_json::Error> for KmsError {
    fn from(e: serde_json::Error) -> Self {
        KmsError::Store(format!("a stored record does not parse: {e}"))
    }
}
