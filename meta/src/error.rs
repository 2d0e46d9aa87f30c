//! The metadata store's one error type, kept (as a source) by every layer above.

/// What went wrong in the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded database failed.
    #[error("metadata database: {0}")]
    Redb(#[source] Box<redb::Error>),
    /// Another process has the embedded database open.
    #[error("{0} is in use by another sealstore process (is `sealstore serve` running on this data directory?)")]
    InUse(String),
    /// The database cannot be reached now (a server down, restarting or too slow to answer):
    /// retry later; nothing was changed unless a commit said so.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error.
    #[error("metadata database: {0}")]
    Server(String),
    /// A copy's destination already holds rows of the namespace.
    #[error("the destination already holds {namespace} metadata (table {table}): copy into an empty database")]
    Occupied {
        /// The namespace.
        namespace: &'static str,
        /// A table of it that has rows there.
        table: &'static str,
    },
    /// A stored row or a key given is not what its table holds.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// Reading or writing a file of the store failed.
    #[error("metadata store: {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Results of the metadata store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the store could not be reached (an answer of "unavailable, retry" to clients),
    /// as opposed to a failure of the request or the data.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {
        $(impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Redb(Box::new(redb::Error::from(e)))
            }
        })*
    };
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
