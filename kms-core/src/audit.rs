//! The append-only, hash-chained audit log.
//!
//! Every management and crypto call — successful or not — appends one [`AuditEntry`]. Entry
//! `n` stores the hash of entry `n-1` and its own hash over its content and that link, so
//! editing, removing or reordering any entry breaks the chain at that point; the chain head
//! (last sequence number and hash) is kept separately, so dropping entries from the end is
//! caught as well. [`verify`] walks the whole chain.

use aws_lc_rs::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::Ocid;
use crate::store::{ReadTxn, WriteTxn, META_AUDIT_HEAD};
use crate::time::Timestamp;

/// The "previous hash" of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who made a call, as recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Principal(String);

impl Principal {
    /// A named principal (a user OCID, `local-admin`, …).
    pub fn new(name: impl Into<String>) -> Self {
        Principal(name.into())
    }

    /// The operator using the CLI on the machine that owns the data directory.
    pub fn local_admin() -> Self {
        Principal("local-admin".into())
    }

    /// sealstore's own scheduler (auto-rotation, purge).
    pub fn scheduler() -> Self {
        Principal("sealstore-scheduler".into())
    }

    /// sealstore's object and block data path (DEK generation and unwrap).
    pub fn data_path() -> Self {
        Principal("sealstore-data-path".into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The resources an audited call touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditSubject {
    /// Vault, if any.
    pub vault_id: Option<Ocid>,
    /// Key, if any.
    pub key_id: Option<Ocid>,
    /// Key version, if any.
    pub key_version_id: Option<Ocid>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When the call happened.
    pub time: Timestamp,
    /// Who made it.
    pub principal: Principal,
    /// Operation name (`CreateKey`, `Decrypt`, …).
    pub operation: String,
    /// Resources touched.
    #[serde(flatten)]
    pub subject: AuditSubject,
    /// `SUCCEEDED` or `FAILED`.
    pub result: String,
    /// The error message of a failed call.
    pub message: Option<String>,
    /// Hash of the previous entry (hex SHA-256).
    pub prev_hash: String,
    /// Hash of this entry (hex SHA-256 over its content with this field empty).
    pub hash: String,
}

impl AuditEntry {
    fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash.clear();
        let bytes = serde_json::to_vec(&unhashed).expect("audit entries serialize");
        hex(digest(&SHA256, &bytes).as_ref())
    }
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
    let prev = head(txn.meta(META_AUDIT_HEAD)?)?;
    let mut entry = AuditEntry {
        seq: prev.seq + 1,
        time,
        principal: principal.clone(),
        operation: operation.to_owned(),
        subject: subject.clone(),
        result: if outcome.is_ok() { "SUCCEEDED" } else { "FAILED" }.into(),
        message: outcome.err(),
        prev_hash: prev.hash,
        hash: String::new(),
    };
    entry.hash = entry.compute_hash();
    txn.put_audit_row(entry.seq, &serde_json::to_vec(&entry)?)?;
    txn.set_meta(
        META_AUDIT_HEAD,
        &serde_json::to_vec(&ChainHead {
            seq: entry.seq,
            hash: entry.hash.clone(),
        })?,
    )?;
    Ok(())
}

/// The outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditVerification {
    /// Entries checked before stopping.
    pub entries_checked: u64,
    /// Hash of the last entry that checked out (the genesis hash when none did). Recorded
    /// outside the data directory, it lets a later verify prove that nothing was cut off the
    /// end even by someone able to rewrite the whole database.
    pub head_hash: String,
    /// `None` when the chain is intact; otherwise what broke and where.
    pub failure: Option<String>,
}

impl AuditVerification {
    /// True when every entry checked out.
    pub fn is_intact(&self) -> bool {
        self.failure.is_none()
    }
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
