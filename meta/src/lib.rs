//! sealstore's metadata store: named tables of ordered rows, read in snapshots and changed in
//! serialisable transactions, on one of two engines behind one interface:
//!
//! - **redb** (the default): an embedded database file per [`Namespace`] in the data
//!   directory, one writer at a time, readers on snapshots;
//! - **PostgreSQL** (`postgres://…`, see [`postgres`]): every namespace in one database, so
//!   that several sealstore servers share one truth. Writers of a namespace are serialised
//!   fleet-wide (a transaction-scoped advisory lock), readers see snapshots.
//!
//! Both engines give the same guarantees, which is what the layers above rely on: a write
//! transaction sees everything committed before it and nothing of a concurrent writer of its
//! namespace (writers are serial); a commit is all or nothing; [`Durability::Immediate`] is on
//! disk when `commit` returns; [`Durability::Deferred`] may be lost by a crash (never torn) and
//! becomes durable with the next immediate commit. The layers above name their tables with
//! [`Table`] and encode keys as bytes: UTF-8 for string keys, eight big-endian bytes for
//! integer keys, so that the bytes' order is the keys' order on both engines.
//!
//! ```text
//! lib.rs       the interface: Table, Namespace, Engine, ReadTxn, WriteTxn
//! copy.rs      a namespace copied between engines (migrations to PostgreSQL)
//! redb.rs      the embedded engine
//! postgres/    the PostgreSQL engine: its pool, its migrations
//! testing.rs   for tests: a test data directory's metadata on the test PostgreSQL server
//! ```

use std::fmt::Debug;
use std::ops::{Bound, ControlFlow};
use std::path::PathBuf;
use std::sync::Arc;

mod copy;
mod error;
pub mod postgres;
mod redb;
// For the repository's tests (the same suites on both engines); not part of the API.
#[doc(hidden)]
pub mod testing;

pub use crate::copy::{copy_namespace, CopiedTable};
pub use crate::error::{Error, Result};
pub use crate::postgres::Postgres;

/// The type of a table's keys (how the embedded engine declares the table; a file written by
/// an earlier sealstore keeps working).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// UTF-8 strings, in byte order.
    Str,
    /// Unsigned 64-bit integers, encoded as eight big-endian bytes.
    U64,
}

/// The type of a table's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Bytes (JSON records, sealed key material).
    Bytes,
    /// UTF-8 strings.
    Str,
}

/// A table: its name, unique in its [`Namespace`], and the kinds of its keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    name: &'static str,
    key: KeyKind,
    value: ValueKind,
}

impl Table {
    /// A table of string keys and byte values.
    pub const fn str_to_bytes(name: &'static str) -> Table {
        Table {
            name,
            key: KeyKind::Str,
            value: ValueKind::Bytes,
        }
    }

    /// A table of string keys and string values.
    pub const fn str_to_str(name: &'static str) -> Table {
        Table {
            name,
            key: KeyKind::Str,
            value: ValueKind::Str,
        }
    }

    /// A table of integer keys and byte values.
    pub const fn u64_to_bytes(name: &'static str) -> Table {
        Table {
            name,
            key: KeyKind::U64,
            value: ValueKind::Bytes,
        }
    }

    /// The table's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The kind of its keys.
    pub const fn key_kind(&self) -> KeyKind {
        self.key
    }

    /// The kind of its values.
    pub const fn value_kind(&self) -> ValueKind {
        self.value
    }
}

/// A set of tables that change together: the KMS, the object index, the S3 users. Writers of
/// one namespace are serial; writers of different namespaces do not wait for each other.
#[derive(Debug, Clone, Copy)]
pub struct Namespace {
    /// Its name (PostgreSQL's rows carry it).
    pub name: &'static str,
    /// Its file in the data directory, for the embedded engine.
    pub file: &'static str,
    /// Every table of the namespace (created up front, so reads never meet a missing one).
    pub tables: &'static [Table],
    /// Whether the embedded file holds secrets (made readable by its owner only).
    pub private: bool,
}

/// When a commit is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk when `commit` returns.
    Immediate,
    /// Possibly lost by a crash (whole transactions only, never part of one); durable with the
    /// namespace's next immediate commit.
    Deferred,
}

/// The range of keys a scan covers.
pub type KeyRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// What a scan calls for each row, in key order: `Break` ends the scan.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>> + 'a;

/// Reads: of a snapshot, or of a write transaction (which sees its own changes).
pub trait ReadTxn {
    /// The value of `key`, if there is one.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Calls `visit` for each row of `table` whose key is in `range`, in key order, until it
    /// returns `Break`.
    fn scan(&self, table: Table, range: KeyRange<'_>, visit: &mut Visit<'_>) -> Result<()>;
}

/// A write transaction: dropped without [`WriteTxn::commit`], it changes nothing.
pub trait WriteTxn: ReadTxn {
    /// Inserts or replaces the value of `key`.
    fn insert(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;

    /// Inserts or replaces many rows of one table (what a loop of [`WriteTxn::insert`] does,
    /// in one round trip to a server).
    fn insert_many(&self, table: Table, rows: &[(&[u8], &[u8])]) -> Result<()> {
        for (key, value) in rows {
            self.insert(table, key, value)?;
        }
        Ok(())
    }

    /// Removes `key`; says whether it was there.
    fn remove(&self, table: Table, key: &[u8]) -> Result<bool>;

    /// Makes the changes visible to every reader, and durable as the transaction's
    /// [`Durability`] says.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// One namespace on one engine.
pub trait Engine: Send + Sync + Debug {
    /// A snapshot of the committed state.
    fn read(&self) -> Result<Box<dyn ReadTxn + '_>>;

    /// A write transaction; waits until no other writer of the namespace (in this process or,
    /// on a shared engine, in any) is running.
    fn write(&self, durability: Durability) -> Result<Box<dyn WriteTxn + '_>>;

    /// The committed value of one key, outside any transaction: what `read()?.get(…)` gives,
    /// in one round trip to a server instead of three.
    fn get_one(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read()?.get(table, key)
    }

    /// Whether other processes may write this namespace meanwhile (a shared engine): caches
    /// of its rows must then be checked or bounded in age, not only cleared by own writes.
    fn is_shared(&self) -> bool;

    /// Waits for, and takes, the lock `name` of this namespace across every process sharing
    /// the engine; released when the guard is dropped, or when this process dies. `None` for
    /// an engine only this process uses (its own locks suffice). Blocks: call it from a
    /// blocking thread.
    fn lock(&self, name: &str) -> Result<Option<LockGuard>> {
        let _ = name;
        Ok(None)
    }

    /// Takes, or renews, the lease `name` for `holder` until `ttl` from now (by the
    /// database's clock); true when `holder` holds it after the call. A lease decides which
    /// server of a fleet runs a background task; on an engine only this process uses, the
    /// caller always holds it.
    fn lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool> {
        let _ = (name, holder, ttl);
        Ok(true)
    }
}

/// A lock taken with [`Engine::lock`]: released when dropped.
pub struct LockGuard {
    _release: Box<dyn Send>,
}

impl LockGuard {
    /// A guard that releases its lock when `release` is dropped.
    pub fn new(release: Box<dyn Send>) -> LockGuard {
        LockGuard { _release: release }
    }
}

impl Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard")
    }
}

/// Where metadata lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// Embedded: one redb file per namespace in this directory.
    Dir(PathBuf),
    /// Shared: every namespace in this PostgreSQL database.
    Postgres(Arc<Postgres>),
}

impl Location {
    /// Opens (creating if needed) a namespace, with every table of it.
    pub fn open(&self, namespace: &Namespace) -> Result<Arc<dyn Engine>> {
        match self {
            Location::Dir(dir) => Ok(Arc::new(redb::Redb::open(dir, namespace)?)),
            Location::Postgres(postgres) => Ok(Arc::new(postgres.namespace(namespace)?)),
        }
    }

    /// Whether several processes may share this location.
    pub fn is_shared(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }
}

/// Every row of `table` in `range`, in key order (for the small tables: IAM, vaults, keys).
pub fn collect(txn: &(impl ReadTxn + ?Sized), table: Table, range: KeyRange<'_>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut rows = Vec::new();
    txn.scan(table, range, &mut |k, v| {
        rows.push((k.to_vec(), v.to_vec()));
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(rows)
}

/// Every row of `table`.
pub const ALL: KeyRange<'static> = (Bound::Unbounded, Bound::Unbounded);

/// The keys from `start` (included) to `end` (excluded).
pub fn between<'a>(start: &'a [u8], end: &'a [u8]) -> KeyRange<'a> {
    (Bound::Included(start), Bound::Excluded(end))
}

/// The keys from `start` (included) on.
pub fn from(start: &[u8]) -> KeyRange<'_> {
    (Bound::Included(start), Bound::Unbounded)
}

#[cfg(test)]
mod tests;
