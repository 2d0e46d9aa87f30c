//! Copying a namespace from one engine to another (`sealstore migrate-metadata`): every row
//! of every table, in one write transaction of the destination, then read back and compared.

use std::ops::ControlFlow;

use crate::{Durability, Engine, Error, Namespace, Result, ALL};

/// What was copied of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedTable {
    /// The table's name.
    pub table: &'static str,
    /// Its rows.
    pub rows: u64,
    /// Their bytes (keys and values).
    pub bytes: u64,
}

/// Copies every table of `namespace` from `from` (a snapshot of it) to `to`, which must hold
/// none of the namespace's rows yet: all in one transaction of `to`, so that an interrupted
/// copy leaves nothing behind. Then reads both again and fails unless every table has the
/// same rows on both sides. `progress` hears of each row copied (its bytes).
pub fn copy_namespace(
    namespace: &Namespace,
    from: &dyn Engine,
    to: &dyn Engine,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<CopiedTable>> {
    let target = to.write(Durability::Immediate)?;
    for table in namespace.tables {
        let mut occupied = false;
        target.scan(*table, ALL, &mut |_, _| {
            occupied = true;
            Ok(ControlFlow::Break(()))
        })?;
        if occupied {
            return Err(Error::Occupied {
                namespace: namespace.name,
                table: table.name(),
            });
        }
    }
    let source = from.read()?;
    let mut copied = Vec::new();
    for table in namespace.tables {
        let mut done = CopiedTable {
            table: table.name(),
            rows: 0,
            bytes: 0,
        };
        source.scan(*table, ALL, &mut |k, v| {
            target.insert(*table, k, v)?;
            done.rows += 1;
            done.bytes += (k.len() + v.len()) as u64;
            progress((k.len() + v.len()) as u64);
            Ok(ControlFlow::Continue(()))
        })?;
        copied.push(done);
    }
    target.commit()?;
    // Read back: the same rows, table by table (a digest each side, not a second copy in memory).
    let copy = to.read()?;
    for (table, done) in namespace.tables.iter().zip(&copied) {
        let (theirs, ours) = (digest(&*source, *table)?, digest(&*copy, *table)?);
        if theirs != ours || ours.0 != done.rows {
            return Err(Error::Corrupt(format!(
                "table {} of {} reads back differently after the copy ({} rows copied, {} read back)",
                table.name(),
                namespace.name,
                done.rows,
                ours.0
            )));
        }
    }
    Ok(copied)
}

/// Rows and a 64-bit FNV-1a digest of a table's keys and values, in key order (with their
/// lengths, so that rows cannot run into each other).
fn digest(txn: &dyn crate::ReadTxn, table: crate::Table) -> Result<(u64, u64)> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut rows = 0;
    let mut feed = |bytes: &[u8]| {
        for byte in (bytes.len() as u64).to_be_bytes().iter().chain(bytes) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    txn.scan(table, ALL, &mut |k, v| {
        feed(k);
        feed(v);
        rows += 1;
        Ok(ControlFlow::Continue(()))
    })?;
    Ok((rows, hash))
}
