//! Replication records: peer regions, a vault's replication role and replicas, and the
//! outbox of changes waiting to be shipped (protocol: `docs/REPLICATION.md`).

use serde::{Deserialize, Serialize};

use crate::ids::Ocid;
use crate::time::Timestamp;

/// A registered peer region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    /// Its name (`--region`).
    pub name: String,
    /// Its KMS API (`http[s]://host:port`).
    pub endpoint: String,
    /// Its signing public key (SubjectPublicKeyInfo DER, base64).
    pub signing_key: String,
    /// Its wrapping public key (SubjectPublicKeyInfo DER, base64).
    pub wrapping_key: String,
    /// When it was registered.
    pub time_created: Timestamp,
}

/// State of one replica of a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplicaStatus {
    /// Not yet acknowledged once.
    Creating,
    /// Acknowledged; changes keep flowing.
    Active,
}

/// One replica of a primary vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaInfo {
    /// The destination region.
    pub region: String,
    /// Its state.
    pub status: ReplicaStatus,
    /// When replication started.
    pub time_created: Timestamp,
    /// The last acknowledged shipment.
    pub time_last_shipped: Option<Timestamp>,
}

/// A vault's side of replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "role")]
pub enum VaultReplication {
    /// The vault is managed here and copied to `replicas`.
    Primary {
        /// Where copies go.
        replicas: Vec<ReplicaInfo>,
    },
    /// The vault is a copy of `primary_region`'s: crypto only here.
    Replica {
        /// Where it is managed.
        primary_region: String,
        /// When the last state arrived.
        time_last_applied: Timestamp,
    },
}

/// Changes of one vault waiting to be shipped to one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    /// Destination.
    pub region: String,
    /// The vault.
    pub vault_id: Ocid,
    /// Changes queued since the last acknowledged shipment.
    pub changes: u64,
    /// When the oldest of them was made (replication lag is measured from it).
    pub since: Timestamp,
}
