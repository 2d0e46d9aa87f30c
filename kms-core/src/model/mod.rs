//! The resources of key management — tenancy, compartments, vaults, keys, key versions — and
//! their lifecycle states.
//!
//! Field names serialize in camelCase exactly as OCI's Vault/KMS API names them, so the
//! OCI-compatible API can hand these records out unchanged and the `oci` CLI reads them.
//!
//! This is the leaf of kms-core: every persisted record lives here or in a submodule
//! (`audit`, `iam`, `replication`, [`tenancy`]), and nothing here imports the rest of the crate
//! beyond ids and time.

pub(crate) mod audit;
pub(crate) mod iam;
pub(crate) mod replication;
pub(crate) mod shape;
pub mod tenancy;

pub use shape::{Curve, HashAlg, KeySpec, KeyWrapping, MessageType, RsaEncryption, SignatureScheme, SigningAlgorithm};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::Ocid;
use crate::time::Timestamp;

/// Free-form tags: plain string pairs.
pub type FreeformTags = BTreeMap<String, String>;
/// Defined tags: namespace → key → value.
pub type DefinedTags = BTreeMap<String, BTreeMap<String, serde_json::Value>>;

/// Shortest allowed deletion window, in days (OCI: 7).
pub(crate) const MIN_DELETION_DAYS: i64 = 7;
/// Longest allowed deletion window, in days (OCI: 30, also the default).
pub(crate) const MAX_DELETION_DAYS: i64 = 30;
/// Shortest allowed auto-rotation interval, in days.
pub(crate) const MIN_ROTATION_INTERVAL_DAYS: u32 = 60;
/// Longest allowed auto-rotation interval, in days.
pub(crate) const MAX_ROTATION_INTERVAL_DAYS: u32 = 365;

/// A compartment (the tenancy is the root compartment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Compartment {
    /// Compartment id (the tenancy's own id for the root).
    pub id: Ocid,
    /// Parent compartment; for the root compartment, the tenancy itself.
    pub compartment_id: Ocid,
    /// Unique name among siblings.
    pub name: String,
    /// Free text.
    pub description: String,
    /// ACTIVE, or DELETED.
    pub lifecycle_state: CompartmentState,
    /// When it was created.
    pub time_created: Timestamp,
}

/// Compartment lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompartmentState {
    /// Usable.
    Active,
    /// Gone.
    Deleted,
}

/// Vault types (OCI: VIRTUAL_PRIVATE has its own partition in the HSM; DEFAULT shares one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VaultType {
    /// Isolated partition.
    VirtualPrivate,
    /// Shared partition.
    Default,
    /// Keys live in an external key manager; only references are kept here.
    External,
}

/// Vault lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VaultState {
    /// Being created (unused by the embedded service, kept for API fidelity).
    Creating,
    /// Usable.
    Active,
    /// Scheduled for deletion at `timeOfDeletion`; its keys are unusable until cancelled.
    PendingDeletion,
    /// Deleted: every key in it destroyed.
    Deleted,
}

/// A vault: a container of master encryption keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vault {
    /// `ocid1.vault.…`
    pub id: Ocid,
    /// Owning compartment.
    pub compartment_id: Ocid,
    /// Human name (not unique).
    pub display_name: String,
    /// Vault type.
    pub vault_type: VaultType,
    /// Lifecycle state.
    pub lifecycle_state: VaultState,
    /// When it was created.
    pub time_created: Timestamp,
    /// When a scheduled deletion takes (or took) effect.
    pub time_of_deletion: Option<Timestamp>,
    /// Free-form tags.
    #[serde(default)]
    pub freeform_tags: FreeformTags,
    /// Defined tags.
    #[serde(default)]
    pub defined_tags: DefinedTags,
    /// EXTERNAL vaults: the external key manager and its vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_key_manager: Option<ExternalKeyManager>,
    /// Cross-region replication: this vault's replicas, or the region it is a replica of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<replication::VaultReplication>,
    /// Cross-region replication: the latest replicated operation on the vault or anything in
    /// it ([`replication::replication_id`]; OCI's `replicaDetails.replicationId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_id: Option<String>,
    /// Restored from a backup: the vault the backup was made of (OCI's `restoredFromVaultId`;
    /// sealstore keeps ids across backup and restore, so it is the vault's own id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from_vault_id: Option<Ocid>,
}

/// Where an EXTERNAL vault's keys live (protocol: `docs/EXTERNAL_KMS.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalKeyManager {
    /// The key manager's base URL (`http[s]://host:port`); also the audience of sealstore's
    /// tokens.
    pub endpoint: String,
    /// The vault's id in the key manager.
    pub external_vault_id: String,
}

impl ExternalKeyManager {
    /// Splits OCI's `externalVaultEndpointUrl` (`<base>/ekm/v1/vaults/<external vault id>`).
    pub fn from_vault_url(url: &str) -> Option<Self> {
        let (base, id) = url.trim_end_matches('/').rsplit_once("/ekm/v1/vaults/")?;
        (!base.is_empty() && !id.is_empty() && !id.contains('/')).then(|| ExternalKeyManager {
            endpoint: base.to_owned(),
            external_vault_id: id.to_owned(),
        })
    }

    /// OCI's `externalVaultEndpointUrl`.
    pub fn vault_url(&self) -> String {
        format!("{}/ekm/v1/vaults/{}", self.endpoint, self.external_vault_id)
    }
}

/// How a key's material is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProtectionMode {
    /// Key material sealed at rest under the data directory's root key.
    Software,
    /// Key generated non-extractable inside a PKCS#11 token.
    Hsm,
    /// Key held by a third-party key manager; only a reference is stored.
    External,
}

impl ProtectionMode {
    /// Parses a mode case-insensitively, as OCI accepts it.
    pub fn parse(s: &str) -> Option<ProtectionMode> {
        match s.to_ascii_uppercase().as_str() {
            "SOFTWARE" => Some(ProtectionMode::Software),
            "HSM" => Some(ProtectionMode::Hsm),
            "EXTERNAL" => Some(ProtectionMode::External),
            _ => None,
        }
    }

    /// The wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ProtectionMode::Software => "SOFTWARE",
            ProtectionMode::Hsm => "HSM",
            ProtectionMode::External => "EXTERNAL",
        }
    }
}

/// Key algorithm, length in bytes and (ECDSA) curve, as OCI spells them; validated by
/// [`KeyShape::spec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyShape {
    /// `AES`, `RSA` or `ECDSA`.
    pub algorithm: String,
    /// Key length in bytes (AES 16/24/32, RSA 256/384/512, ECDSA 32/48/66).
    pub length: u32,
    /// ECDSA keys only: `NIST_P256`, `NIST_P384` or `NIST_P521`. Absent in records written
    /// before asymmetric keys existed (all AES-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve_id: Option<String>,
}

/// Key lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyState {
    /// Usable for encrypt and decrypt.
    Enabled,
    /// Refuses every crypto operation until enabled again.
    Disabled,
    /// Scheduled for deletion at `timeOfDeletion`; unusable until cancelled.
    PendingDeletion,
    /// Destroyed.
    Deleted,
}

/// Auto-rotation settings and the outcome of the last automatic rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoKeyRotationDetails {
    /// Days between rotations, 60–365.
    pub rotation_interval_in_days: u32,
    /// When the schedule starts (first rotation no earlier than this).
    pub time_of_schedule_start: Option<Timestamp>,
    /// When the scheduler will next rotate.
    pub time_of_next_rotation: Option<Timestamp>,
    /// When the key was last rotated automatically.
    pub time_of_last_rotation: Option<Timestamp>,
    /// SUCCEEDED or FAILED.
    pub last_rotation_status: Option<String>,
    /// Why the last automatic rotation failed.
    pub last_rotation_message: Option<String>,
}

/// A master encryption key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    /// `ocid1.key.…`
    pub id: Ocid,
    /// Owning compartment.
    pub compartment_id: Ocid,
    /// Vault holding the key.
    pub vault_id: Ocid,
    /// Human name.
    pub display_name: String,
    /// Algorithm and length.
    pub key_shape: KeyShape,
    /// Where the key material lives.
    pub protection_mode: ProtectionMode,
    /// Lifecycle state.
    pub lifecycle_state: KeyState,
    /// The primary version: the one that encrypts.
    pub current_key_version: Ocid,
    /// When it was created.
    pub time_created: Timestamp,
    /// When a scheduled deletion takes (or took) effect.
    pub time_of_deletion: Option<Timestamp>,
    /// Whether the scheduler rotates the key.
    pub is_auto_rotation_enabled: bool,
    /// Auto-rotation interval and state.
    pub auto_key_rotation_details: Option<AutoKeyRotationDetails>,
    /// Free-form tags.
    #[serde(default)]
    pub freeform_tags: FreeformTags,
    /// Defined tags.
    #[serde(default)]
    pub defined_tags: DefinedTags,
    /// EXTERNAL keys: the key's id in the external key manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_key_id: Option<String>,
    /// Cross-region replication: the latest replicated operation on it
    /// ([`replication::replication_id`]; OCI's `replicaDetails.replicationId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_id: Option<String>,
    /// Cross-region replication: a copy applied from the vault's primary region (OCI's
    /// `isPrimary: false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_replica: bool,
    /// Restored from a backup: the key the backup was made of (OCI's `restoredFromKeyId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from_key_id: Option<Ocid>,
}

/// Key version lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyVersionState {
    /// Usable (the primary encrypts and decrypts, older versions decrypt only).
    Enabled,
    /// Refuses to decrypt until enabled again (e.g. after a suspected compromise).
    Disabled,
    /// Scheduled for deletion.
    PendingDeletion,
    /// Destroyed.
    Deleted,
}

/// Where a version's material came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyVersionOrigin {
    /// Generated by sealstore (or its HSM).
    Internal,
    /// Imported or held externally.
    External,
}

/// A vault's wrapping key (OCI's `WrappingKey`): an RSA-4096 key pair, SOFTWARE-protected,
/// whose public key clients wrap the key material they import under. One per vault, made on
/// first use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrappingKey {
    /// `ocid1.wrappingkey.…`
    pub id: Ocid,
    /// The vault it belongs to.
    pub vault_id: Ocid,
    /// The vault's compartment.
    pub compartment_id: Ocid,
    /// Always ENABLED (it has no lifecycle of its own).
    pub lifecycle_state: KeyState,
    /// The public key, a SubjectPublicKeyInfo PEM.
    pub public_key: String,
    /// When it was made.
    pub time_created: Timestamp,
}

/// One generation of a master key's material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersion {
    /// `ocid1.keyversion.…`
    pub id: Ocid,
    /// The key it belongs to.
    pub key_id: Ocid,
    /// The key's vault.
    pub vault_id: Ocid,
    /// The key's compartment.
    pub compartment_id: Ocid,
    /// Lifecycle state.
    pub lifecycle_state: KeyVersionState,
    /// Where the material came from.
    pub origin: KeyVersionOrigin,
    /// When it was created (rotation time for every version after the first).
    pub time_created: Timestamp,
    /// When a scheduled deletion takes (or took) effect.
    pub time_of_deletion: Option<Timestamp>,
    /// Whether the scheduler made it.
    pub is_auto_rotated: bool,
    /// EXTERNAL keys: the version's id in the external key manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_key_version_id: Option<String>,
    /// RSA and ECDSA keys: the version's public key, a SubjectPublicKeyInfo PEM
    /// (`-----BEGIN PUBLIC KEY-----`). Absent for AES keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Cross-region replication: the latest replicated operation on it
    /// ([`replication::replication_id`]; OCI's `replicaDetails.replicationId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_id: Option<String>,
    /// Cross-region replication: a copy applied from the vault's primary region (OCI's
    /// `isPrimary: false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_replica: bool,
    /// Restored from a backup: the version the backup was made of (OCI's
    /// `restoredFromKeyVersionId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from_key_version_id: Option<Ocid>,
}
