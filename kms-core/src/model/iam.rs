//! Identity records: API users and their signing keys, groups and policies.

use serde::{Deserialize, Serialize};

use crate::ids::Ocid;
use crate::time::Timestamp;

/// An API user: someone who signs requests to the KMS API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// `ocid1.user.…` (the middle part of a request's `keyId`).
    pub id: Ocid,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Public keys the user signs with.
    pub api_keys: Vec<ApiKey>,
    /// When it was created.
    pub time_created: Timestamp,
}

/// An RSA public key a user signs requests with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// MD5 of the DER SubjectPublicKeyInfo, colon-separated lower-case hex (OCI's form; the
    /// last part of a request's `keyId`).
    pub fingerprint: String,
    /// The key as PEM (`-----BEGIN PUBLIC KEY-----`).
    pub key_value: String,
    /// When it was added.
    pub time_created: Timestamp,
}

/// A named set of users that policies grant to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// `ocid1.group.…`
    pub id: Ocid,
    /// Unique name, as policies spell it.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Member user ids.
    pub members: Vec<Ocid>,
    /// When it was created.
    pub time_created: Timestamp,
}

/// Named policy statements (all attached to the tenancy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// `ocid1.policy.…`
    pub id: Ocid,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Statements, as written (each parses with [`crate::iam::Statement::parse`]).
    pub statements: Vec<String>,
    /// When it was created.
    pub time_created: Timestamp,
}
