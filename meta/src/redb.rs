//! The embedded engine: one redb file per namespace. Tables keep the key and value types
//! they always had (`&str` or `u64` keys, `&[u8]` or `&str` values), so files written by
//! earlier versions open unchanged.

use std::ops::Bound;
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use crate::{
    Durability, Engine, Error, KeyKind, KeyRange, Namespace, ReadTxn, Result, Table, ValueKind, Visit, WriteTxn,
};

/// A namespace in its redb file.
#[derive(Debug)]
pub(crate) struct Redb {
    db: Database,
}

impl Redb {
    /// Opens (creating) `namespace.file` in `dir`, with every table of the namespace.
    pub(crate) fn open(dir: &Path, namespace: &Namespace) -> Result<Redb> {
        let path = dir.join(namespace.file);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::InUse(path.display().to_string()),
            other => Error::from(other),
        })?;
        if namespace.private {
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(|e| {
                Error::Io {
                    context: format!("restricting permissions of {}", path.display()),
                    source: e,
                }
            })?;
        }
        let engine = Redb { db };
        let txn = engine.db.begin_write()?;
        for &table in namespace.tables {
            match (table.key_kind(), table.value_kind()) {
                (KeyKind::Str, ValueKind::Bytes) => drop(txn.open_table(str_bytes(table))?),
                (KeyKind::Str, ValueKind::Str) => drop(txn.open_table(str_str(table))?),
                (KeyKind::U64, _) => drop(txn.open_table(u64_bytes(table))?),
            }
        }
        txn.commit()?;
        Ok(engine)
    }
}

impl Engine for Redb {
    fn read(&self) -> Result<Box<dyn ReadTxn + '_>> {
        Ok(Box::new(Snapshot(self.db.begin_read()?)))
    }

    fn write(&self, durability: Durability) -> Result<Box<dyn WriteTxn + '_>> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(match durability {
            Durability::Immediate => redb::Durability::Immediate,
            Durability::Deferred => redb::Durability::None,
        });
        Ok(Box::new(Writer(txn)))
    }

    fn is_shared(&self) -> bool {
        false
    }
}

fn str_bytes(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

fn str_str(table: Table) -> TableDefinition<'static, &'static str, &'static str> {
    TableDefinition::new(table.name())
}

fn u64_bytes(table: Table) -> TableDefinition<'static, u64, &'static [u8]> {
    TableDefinition::new(table.name())
}

/// A string key from its bytes.
fn str_key(table: Table, key: &[u8]) -> Result<&str> {
    std::str::from_utf8(key).map_err(|_| Error::Corrupt(format!("a key of table {} is not UTF-8", table.name())))
}

/// An integer key from its eight big-endian bytes.
fn u64_key(table: Table, key: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(key.try_into().map_err(|_| {
        Error::Corrupt(format!("a key of table {} is not eight bytes", table.name()))
    })?))
}

fn map_bound<'a, T>(bound: Bound<&'a [u8]>, f: impl FnOnce(&'a [u8]) -> Result<T>) -> Result<Bound<T>> {
    Ok(match bound {
        Bound::Included(b) => Bound::Included(f(b)?),
        Bound::Excluded(b) => Bound::Excluded(f(b)?),
        Bound::Unbounded => Bound::Unbounded,
    })
}

type Bounds<T> = (Bound<T>, Bound<T>);

fn str_bounds<'a>(table: Table, start: Bound<&'a [u8]>, end: Bound<&'a [u8]>) -> Result<Bounds<&'a str>> {
    Ok((
        map_bound(start, |b| str_key(table, b))?,
        map_bound(end, |b| str_key(table, b))?,
    ))
}

fn u64_bounds(table: Table, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Bounds<u64>> {
    Ok((
        map_bound(start, |b| u64_key(table, b))?,
        map_bound(end, |b| u64_key(table, b))?,
    ))
}

fn key_of_str<'a>(k: &&'a str) -> &'a [u8] {
    k.as_bytes()
}

fn key_of_u64(k: &u64) -> [u8; 8] {
    k.to_be_bytes()
}

/// A value's bytes.
trait AsBytes {
    fn value_bytes(&self) -> &[u8];
}

impl AsBytes for &[u8] {
    fn value_bytes(&self) -> &[u8] {
        self
    }
}

impl AsBytes for &str {
    fn value_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Visits the rows of an open table's range (a redb range iterator).
macro_rules! visit_rows {
    ($rows:expr, $key_bytes:expr, $visit:expr) => {{
        for row in $rows {
            let (k, v) = row?;
            let key = k.value();
            if $visit($key_bytes(&key).as_ref(), v.value().value_bytes())?.is_break() {
                break;
            }
        }
        Ok(())
    }};
}

/// `ReadTxn` for a redb transaction type: the same code for snapshots and writers (their
/// `open_table` return different table types with the same reads).
macro_rules! impl_reads {
    ($ty:ty) => {
        impl ReadTxn for $ty {
            fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
                Ok(match (table.key_kind(), table.value_kind()) {
                    (KeyKind::Str, ValueKind::Bytes) => self
                        .0
                        .open_table(str_bytes(table))?
                        .get(str_key(table, key)?)?
                        .map(|v| v.value().to_vec()),
                    (KeyKind::Str, ValueKind::Str) => self
                        .0
                        .open_table(str_str(table))?
                        .get(str_key(table, key)?)?
                        .map(|v| v.value().as_bytes().to_vec()),
                    (KeyKind::U64, _) => self
                        .0
                        .open_table(u64_bytes(table))?
                        .get(u64_key(table, key)?)?
                        .map(|v| v.value().to_vec()),
                })
            }

            fn scan(&self, table: Table, range: KeyRange<'_>, visit: &mut Visit<'_>) -> Result<()> {
                let (start, end) = range;
                match (table.key_kind(), table.value_kind()) {
                    (KeyKind::Str, ValueKind::Bytes) => {
                        let t = self.0.open_table(str_bytes(table))?;
                        let range = str_bounds(table, start, end)?;
                        visit_rows!(t.range::<&str>(range)?, key_of_str, visit)
                    }
                    (KeyKind::Str, ValueKind::Str) => {
                        let t = self.0.open_table(str_str(table))?;
                        let range = str_bounds(table, start, end)?;
                        visit_rows!(t.range::<&str>(range)?, key_of_str, visit)
                    }
                    (KeyKind::U64, _) => {
                        let t = self.0.open_table(u64_bytes(table))?;
                        let range = u64_bounds(table, start, end)?;
                        visit_rows!(t.range::<u64>(range)?, key_of_u64, visit)
                    }
                }
            }
        }
    };
}

/// A snapshot.
struct Snapshot(redb::ReadTransaction);

/// A write transaction.
struct Writer(redb::WriteTransaction);

impl_reads!(Snapshot);
impl_reads!(Writer);

impl WriteTxn for Writer {
    fn insert(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        match (table.key_kind(), table.value_kind()) {
            (KeyKind::Str, ValueKind::Bytes) => {
                self.0
                    .open_table(str_bytes(table))?
                    .insert(str_key(table, key)?, value)?;
            }
            (KeyKind::Str, ValueKind::Str) => {
                let value = std::str::from_utf8(value)
                    .map_err(|_| Error::Corrupt(format!("a value for table {} is not UTF-8", table.name())))?;
                self.0.open_table(str_str(table))?.insert(str_key(table, key)?, value)?;
            }
            (KeyKind::U64, _) => {
                self.0
                    .open_table(u64_bytes(table))?
                    .insert(u64_key(table, key)?, value)?;
            }
        }
        Ok(())
    }

    fn remove(&self, table: Table, key: &[u8]) -> Result<bool> {
        Ok(match (table.key_kind(), table.value_kind()) {
            (KeyKind::Str, ValueKind::Bytes) => self
                .0
                .open_table(str_bytes(table))?
                .remove(str_key(table, key)?)?
                .is_some(),
            (KeyKind::Str, ValueKind::Str) => self
                .0
                .open_table(str_str(table))?
                .remove(str_key(table, key)?)?
                .is_some(),
            (KeyKind::U64, _) => self
                .0
                .open_table(u64_bytes(table))?
                .remove(u64_key(table, key)?)?
                .is_some(),
        })
    }

    fn commit(self: Box<Self>) -> Result<()> {
        self.0.commit()?;
        Ok(())
    }
}
