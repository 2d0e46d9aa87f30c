//! `GET /20180608/auditEvents?start=N&limit=M`, a sealstore extension (OCI serves audit
//! events from its separate Audit service): a page of the hash-chained audit log from entry
//! `start` (1 is the first), and whether the whole chain verifies. Needs `read audit-events`
//! in the tenancy.

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
    let entries = call.kms.audit_entries(start, limit)?;
    let verification = call.kms.verify_audit()?;
    Ok(Reply::plain(json!({"entries": entries, "verification": verification})))
}
