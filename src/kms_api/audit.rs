//! `GET /20180608/auditEvents?start=N&limit=M[&result=SUCCEEDED|FAILED|DENIED]`, a sealstore
//! extension (OCI serves audit events from its separate Audit service): a page of the
//! hash-chained audit log from entry `start` (1 is the first), and whether the whole chain
//! verifies; with `result`, only entries of that outcome, and `nextStart` to go on from.
//! Needs `read audit-events` in the tenancy.

use kms_core::iam::{ResourceKind, Target, Verb};
use serde_json::json;

use super::error::ApiError;
use super::{Call, Reply};

/// Entries per page unless `limit` says otherwise.
pub(super) const DEFAULT_LIMIT: usize = 50;
/// Most entries per page.
pub(super) const MAX_LIMIT: usize = 1000;

/// `GET /20180608/auditEvents`
pub(crate) fn list(call: &Call<'_>) -> Result<Reply, ApiError> {
    let tenancy = call.kms.tenancy_id();
    call.require(
        Verb::Read,
        ResourceKind::AuditEvents,
        &tenancy,
        Target::default(),
        "audit events",
    )?;
    let number = |name: &str, default: u64| -> Result<u64, ApiError> {
        match call.query.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| ApiError::invalid(format!("{name} must be a whole number, not '{v}'"))),
        }
    };
    let start = number("start", 1)?.max(1);
    let limit = usize::try_from(number("limit", DEFAULT_LIMIT as u64)?)
        .unwrap_or(MAX_LIMIT)
        .clamp(1, MAX_LIMIT);
    let verification = call.kms.verify_audit()?;
    let Some(result) = call.query.get("result") else {
        let entries = call.kms.audit_entries(start, limit)?;
        return Ok(Reply::plain(json!({"entries": entries, "verification": verification})));
    };
    let result = result.to_ascii_uppercase();
    if !matches!(result.as_str(), "SUCCEEDED" | "FAILED" | "DENIED") {
        return Err(ApiError::invalid(format!(
            "result must be SUCCEEDED, FAILED or DENIED, not '{result}'"
        )));
    }
    // Forward from `start`, at most `limit` matches, reading at most SCAN_MAX entries per
    // request; `nextStart` continues where this page stopped (absent at the end).
    let (mut entries, mut at, mut scanned) = (Vec::new(), start, 0usize);
    let next_start = loop {
        let batch = call.kms.audit_entries(at, MAX_LIMIT)?;
        let Some(last) = batch.last().map(|e| e.seq) else {
            break None;
        };
        for e in batch {
            scanned += 1;
            at = e.seq + 1;
            if e.result == result {
                entries.push(e);
                if entries.len() == limit {
                    break;
                }
            }
        }
        if entries.len() == limit || scanned >= SCAN_MAX {
            break Some(at);
        }
        at = last + 1;
    };
    Ok(Reply::plain(
        json!({"entries": entries, "verification": verification, "nextStart": next_start}),
    ))
}

/// Entries one filtered request reads at most.
const SCAN_MAX: usize = 100_000;
