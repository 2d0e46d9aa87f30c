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

/// State of one replica of a vault: OCI's `VaultReplicaSummary.status` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplicaStatus {
    /// Not yet acknowledged once.
    Creating,
    /// Acknowledged by the destination; changes keep flowing. (`ACTIVE` in records written
    /// before OCI's names were used.)
    #[serde(alias = "ACTIVE")]
    Created,
    /// Deletion asked for; the destination has not confirmed yet.
    Deleting,
    /// The destination confirmed: it no longer serves the vault and destroyed its material.
    Deleted,
}

impl ReplicaStatus {
    /// Whether changes are still shipped to this replica (a deleting one is sent its
    /// removal).
    pub(crate) fn is_shipped_to(self) -> bool {
        self != ReplicaStatus::Deleted
    }

    /// Whether the replica holds (or is receiving) the vault.
    pub(crate) fn is_live(self) -> bool {
        matches!(self, ReplicaStatus::Creating | ReplicaStatus::Created)
    }
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
    /// The vault's operation counter (see [`VaultReplication::Primary`]) as of the last
    /// acknowledged shipment: operations up to it are REPLICATED there.
    #[serde(default)]
    pub acknowledged_operation: u64,
}

/// A vault's side of replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "role")]
pub enum VaultReplication {
    /// The vault is managed here and copied to `replicas`.
    Primary {
        /// Where copies go (deleted ones stay listed, as DELETED, until created again).
        replicas: Vec<ReplicaInfo>,
        /// Operations on the vault (or its keys and versions) made while it had replicas;
        /// the latest one's number is in its replication id.
        #[serde(default)]
        operations: u64,
    },
    /// The vault is a copy of `primary_region`'s: crypto only here.
    Replica {
        /// Where it is managed.
        primary_region: String,
        /// When the last state arrived.
        time_last_applied: Timestamp,
        /// The primary's operation counter in the last state applied.
        #[serde(default)]
        applied_operation: u64,
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

/// A replication id (OCI's `replicaDetails.replicationId`): names one operation on a
/// replicated vault or its keys, as `<vault id>.<operation number>`; `get-replication-status`
/// answers whether that operation reached each replica. Written `<vault id>.op<number>`.
pub fn replication_id(vault: &Ocid, operation: u64) -> String {
    format!("{vault}.op{operation}")
}

/// The vault id and operation number of a replication id made by [`replication_id`].
pub fn parse_replication_id(id: &str) -> Option<(&str, u64)> {
    let (vault, operation) = id.rsplit_once(".op")?;
    Some((vault, operation.parse().ok()?))
}
