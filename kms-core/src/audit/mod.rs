//! The append-only, hash-chained audit log.
//!
//! Every management and crypto call — successful or not — appends one [`AuditEntry`]. Entry
//! `n` stores the hash of entry `n-1` and its own hash over its content and that link, so
//! editing, removing or reordering any entry breaks the chain at that point; the chain head
//! (last sequence number and hash) is kept separately, so dropping entries from the end is
//! caught as well. `verify` walks the whole chain. The records themselves are in
//! `model::audit`; `writer` groups crypto calls' entries into few commits.

pub(crate) mod writer;

use aws_lc_rs::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};

use crate::error::Result;
pub use crate::model::audit::{AuditEntry, AuditRefusal, AuditSubject, AuditVerification, Principal};
use crate::store::{ReadTxn, WriteTxn, META_AUDIT_HEAD};
use crate::time::Timestamp;

/// The "previous hash" of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditEntry {
    fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash.clear();
        content_hash(&unhashed)
    }
}

/// The hash of an entry whose `hash` is empty: SHA-256 of its JSON, in hex.
fn content_hash(unhashed: &AuditEntry) -> String {
    debug_assert!(unhashed.hash.is_empty());
    let bytes = serde_json::to_vec(unhashed).expect("audit entries serialize");
    hex(digest(&SHA256, &bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

#[derive(Debug, Serialize, Deserialize)]
struct ChainHead {
    seq: u64,
    hash: String,
}

fn head(meta: Option<Vec<u8>>) -> Result<ChainHead> {
    match meta {
        Some(b) => Ok(serde_json::from_slice(&b)?),
        None => Ok(ChainHead {
            seq: 0,
            hash: GENESIS_HASH.into(),
        }),
    }
}

/// Appends an entry in `txn` (so it commits or rolls back with the change it records).
pub(crate) fn append(
    txn: &WriteTxn,
    time: Timestamp,
    principal: &Principal,
    operation: &str,
    subject: &AuditSubject,
    outcome: std::result::Result<(), String>,
) -> Result<()> {
    chain(txn, [unchained(time, principal, operation, subject, outcome)])
}

/// Appends the entries of queued crypto calls, in order (see [`writer`]).
fn append_queued(txn: &WriteTxn, queued: &[writer::PendingAudit]) -> Result<()> {
    chain(
        txn,
        queued.iter().map(|e| {
            let mut entry = unchained(e.time, &e.principal, &e.operation, &e.subject, e.outcome.clone());
            if let Some(refused) = &e.refused {
                // A call refused before it ran: result DENIED, with who by name and from where.
                entry.result = DENIED.into();
                entry.principal_name = refused.principal_name.clone();
                entry.source = refused.source.clone();
            }
            entry
        }),
    )
}

/// An entry with everything but its place in the chain.
fn unchained(
    time: Timestamp,
    principal: &Principal,
    operation: &str,
    subject: &AuditSubject,
    outcome: std::result::Result<(), String>,
) -> AuditEntry {
    AuditEntry {
        seq: 0,
        time,
        principal: principal.clone(),
        operation: operation.to_owned(),
        subject: subject.clone(),
        result: if outcome.is_ok() { "SUCCEEDED" } else { "FAILED" }.into(),
        message: outcome.err(),
        principal_name: None,
        source: None,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

/// The result of a call refused before it ran.
pub(crate) const DENIED: &str = "DENIED";

/// Hashes `entries` onto the chain in order and stores the last as the new head: one read
/// of the head, one open of the entries' table and one write of the head, however many
/// entries (the background writer appends hundreds per transaction).
fn chain(txn: &WriteTxn, entries: impl IntoIterator<Item = AuditEntry>) -> Result<()> {
    let mut head = head(txn.meta(META_AUDIT_HEAD)?)?;
    let mut rows = Vec::new();
    for mut entry in entries {
        entry.seq = head.seq + 1;
        entry.prev_hash = std::mem::take(&mut head.hash);
        entry.hash = content_hash(&entry);
        rows.push((entry.seq, serde_json::to_vec(&entry)?));
        head = ChainHead {
            seq: entry.seq,
            hash: entry.hash,
        };
    }
    if rows.is_empty() {
        return Ok(());
    }
    txn.put_audit_rows(&rows)?;
    txn.set_meta(META_AUDIT_HEAD, &serde_json::to_vec(&head)?)
}

/// Reads entries `from..` (at most `limit`).
pub(crate) fn entries(txn: &ReadTxn, from: u64, limit: usize) -> Result<Vec<AuditEntry>> {
    txn.audit_rows(from, limit)?
        .into_iter()
        .map(|(_, b)| Ok(serde_json::from_slice(&b)?))
        .collect()
}

/// Walks the chain from the first entry to the recorded head.
pub(crate) fn verify(txn: &ReadTxn) -> Result<AuditVerification> {
    const BATCH: usize = 4096;
    let head = head(txn.meta(META_AUDIT_HEAD)?)?;
    let mut expected_seq = 1u64;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let fail = |checked: u64, last_good: &str, msg: String| {
        Ok(AuditVerification {
            entries_checked: checked,
            head_hash: last_good.to_owned(),
            failure: Some(msg),
        })
    };
    loop {
        let rows = txn.audit_rows(expected_seq, BATCH)?;
        if rows.is_empty() {
            break;
        }
        for (key, bytes) in rows {
            let checked = expected_seq - 1;
            if key != expected_seq {
                return fail(
                    checked,
                    &prev_hash,
                    format!("entry {expected_seq} is missing (next stored entry is {key})"),
                );
            }
            let entry: AuditEntry = match serde_json::from_slice(&bytes) {
                Ok(e) => e,
                Err(e) => return fail(checked, &prev_hash, format!("entry {key} is unreadable: {e}")),
            };
            if entry.seq != key {
                return fail(
                    checked,
                    &prev_hash,
                    format!("entry stored at {key} claims sequence {}", entry.seq),
                );
            }
            if entry.prev_hash != prev_hash {
                return fail(
                    checked,
                    &prev_hash,
                    format!("entry {key} does not link to entry {} (removed or reordered)", key - 1),
                );
            }
            if entry.compute_hash() != entry.hash {
                return fail(
                    checked,
                    &prev_hash,
                    format!("entry {key} was modified after it was written (hash mismatch)"),
                );
            }
            prev_hash = entry.hash;
            expected_seq += 1;
        }
    }
    let checked = expected_seq - 1;
    if checked != head.seq || prev_hash != head.hash {
        return fail(
            checked,
            &prev_hash,
            format!(
                "chain ends at entry {checked} but the recorded head is entry {}: entries were removed",
                head.seq
            ),
        );
    }
    Ok(AuditVerification {
        entries_checked: checked,
        head_hash: prev_hash,
        failure: None,
    })
}
