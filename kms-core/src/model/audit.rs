//! The audit log's records: who called, what it touched, how it ended, and the chain links.
//! The chain itself (appending, reading, verifying) is [`crate::audit`].

use serde::{Deserialize, Serialize};

use crate::ids::Ocid;
use crate::time::Timestamp;

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
    pub(crate) fn data_path() -> Self {
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
    /// Another resource the call is about, by kind and name: `user alice`, `group Readers`,
    /// `policy readers`, `compartment Finance` (IAM administration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// A call refused before it ran, for the audit log (see [`Kms::audit_refusal`](crate::Kms::audit_refusal)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditRefusal {
    /// Who asked: a user's id when known, else what identified the caller (`anonymous`).
    pub principal: String,
    /// Their name, when known.
    pub principal_name: Option<String>,
    /// Where the call came from.
    pub source: Option<String>,
    /// What was asked: an operation name, or `METHOD /path` of an API request.
    pub operation: String,
    /// The resources it named.
    pub subject: AuditSubject,
    /// Why it was refused.
    pub reason: String,
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
    /// `SUCCEEDED`, `FAILED`, or `DENIED`: refused before it ran (not authenticated, not
    /// authorized, a locked-out or failed sign-in).
    pub result: String,
    /// The error message of a failed call, or why it was denied.
    pub message: Option<String>,
    /// The caller's name when `principal` is an id (a user's name), or the name a failed
    /// sign-in gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_name: Option<String>,
    /// Where the call came from: the client's address (`192.0.2.7:50412`), prefixed with
    /// `console ` for calls the web console made on the user's behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Hash of the previous entry (hex SHA-256).
    pub prev_hash: String,
    /// Hash of this entry (hex SHA-256 over its content with this field empty).
    pub hash: String,
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
