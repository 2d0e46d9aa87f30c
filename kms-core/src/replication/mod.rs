//! Cross-region vault replication (spec: `docs/REPLICATION.md`).
//!
//! - Each region has a replication identity: an RSA-3072 signing key (its requests to peers)
//!   and an RSA-3072 wrapping key (what peers wrap key material to, with RSA-OAEP-SHA256).
//!   Peers are registered by name, endpoint and both public keys, on both sides.
//! - A replicated vault lists its replicas. Every change to it writes, in the same
//!   transaction, an outbox entry per replica region; a shipper sends the vault's whole state
//!   (vault, keys, versions, material wrapped for the destination) until the destination
//!   acknowledges, then clears the entry if nothing changed meanwhile. Shipping the state
//!   rather than each change makes delivery idempotent and catching up trivial.
//! - A replica applies that state as it is. Management calls on it are refused (409, naming
//!   the primary region); crypto calls work with the same ids.

pub(crate) mod iam_outbox;
pub(crate) mod identity;
pub(crate) mod outbox;
pub(crate) mod tenancy;

use std::collections::HashSet;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::context::Context;
use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::audit::{AuditSubject, Principal};
use crate::model::{Key, KeyVersion, ProtectionMode, Vault, VaultState};
use crate::protection::ExportedMaterial;
use crate::time::Timestamp;
use aws_lc_rs::rsa::PublicEncryptingKey;
use identity::wrap_for;

pub use crate::model::replication::{
    parse_replication_id, replication_id, OutboxEntry, Region, ReplicaInfo, ReplicaStatus, VaultReplication,
};
pub use identity::{identity_files, IdentityFileError, PublishedIdentity, ReplicationIdentity};

/// A replica as `replicas` lists it: state and lag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    /// The destination region.
    pub region: String,
    /// Its KMS API, as registered (`None` once the region is no longer registered).
    pub endpoint: Option<String>,
    /// Its state.
    pub status: ReplicaStatus,
    /// When replication started.
    pub time_created: Timestamp,
    /// The last acknowledged shipment.
    pub time_last_shipped: Option<Timestamp>,
    /// Changes not yet acknowledged.
    pub pending_changes: u64,
    /// How long the oldest of them has waited, in milliseconds (0 when none waits).
    pub lag_millis: i64,
}

/// Key material in a shipment: wrapped for the destination, or a reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ShippedMaterial {
    /// RSA-OAEP-SHA256 to the destination's wrapping key, label = prefix ‖ version id.
    Wrapped {
        /// Base64.
        wrapped: String,
    },
    /// EXTERNAL versions: the reference.
    Reference {
        /// Base64.
        reference: String,
    },
}

/// What a primary region sends a replica region.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Shipment {
    /// The vault's whole current state.
    State(Box<VaultShipment>),
    /// The replica was deleted: the destination stops serving the vault and destroys its
    /// copy of the key material.
    Removal(VaultRemoval),
}

impl Shipment {
    /// The region sending it.
    pub(crate) fn sender_region(&self) -> &str {
        match self {
            Shipment::State(s) => &s.from_region,
            Shipment::Removal(r) => &r.from_region,
        }
    }
}

/// A replica's deletion, as shipped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultRemoval {
    /// The region sending it (the vault's primary).
    pub from_region: String,
    /// The vault whose copy goes.
    pub vault_id: Ocid,
}

/// Whether one replicated operation reached one replica region
/// (`get-replication-status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// The replica region.
    pub region: String,
    /// Whether that region acknowledged a state that includes the operation.
    pub replicated: bool,
}

/// The whole state of a vault, as shipped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultShipment {
    /// The region sending it.
    pub from_region: String,
    /// The vault's operation counter when the state was read: every operation up to it is
    /// in the state.
    #[serde(default)]
    pub operation: u64,
    /// The vault (with its primary-side replication info stripped).
    pub vault: Vault,
    /// Its keys.
    pub keys: Vec<Key>,
    /// Their versions.
    pub versions: Vec<KeyVersion>,
    /// Version id → material, for the versions whose material the destination does not
    /// hold yet: those that no acknowledged state carried (shipping is incremental; see
    /// docs/REPLICATION.md).
    pub materials: Vec<(Ocid, ShippedMaterial)>,
    /// Every version whose material still exists here: the destination destroys its copy of
    /// any other. Absent from states of older senders, which shipped every material.
    #[serde(default)]
    pub held: Option<Vec<Ocid>>,
}

/// Whether a replica that acknowledged operations up to `acknowledged` already holds the
/// material of a version whose latest replicated operation is `version_replication_id`: each
/// state carries the material of every version changed after the last acknowledged one.
fn shipped_before(version_replication_id: Option<&str>, acknowledged: u64) -> bool {
    version_replication_id
        .and_then(parse_replication_id)
        .is_some_and(|(_, operation)| operation <= acknowledged)
}

/// Replication management and shipping over a [`Context`].
pub(crate) struct Replication<'a> {
    ctx: &'a Context,
}

impl<'a> Replication<'a> {
    pub(crate) fn new(ctx: &'a Context) -> Self {
        Replication { ctx }
    }

    /// Registers (or updates) a peer region.
    pub(crate) fn add_region(&self, principal: &Principal, mut region: Region) -> Result<Region> {
        if region.name == self.ctx.region() {
            return Err(KmsError::InvalidParameter(format!(
                "region {} is this region",
                region.name
            )));
        }
        for (what, key) in [("signing", &region.signing_key), ("wrapping", &region.wrapping_key)] {
            let der = B64
                .decode(key)
                .map_err(|_| KmsError::InvalidParameter(format!("the {what} key is not base64 DER")))?;
            PublicEncryptingKey::from_der(&der)
                .map_err(|_| KmsError::InvalidParameter(format!("the {what} key is not an RSA public key")))?;
        }
        self.ctx
            .mutate(principal, "AddRegion", AuditSubject::default(), |txn, now, _| {
                region.time_created = txn.region(&region.name)?.map_or(now, |r| r.time_created);
                txn.put_region(&region)?;
                Ok(region)
            })
    }

    /// Registered peer regions.
    pub(crate) fn list_regions(&self) -> Result<Vec<Region>> {
        self.ctx.read()?.regions()
    }

    /// Forgets a peer region (refused while a vault replicates to it).
    pub(crate) fn remove_region(&self, principal: &Principal, name: &str) -> Result<()> {
        self.ctx
            .mutate(principal, "RemoveRegion", AuditSubject::default(), |txn, _, _| {
                txn.region(name)?.ok_or_else(|| KmsError::not_found("region", name))?;
                if txn.tenancy_member(name)?.is_some() {
                    return Err(KmsError::IncorrectState(format!(
                        "region {name} is a member of this region's tenancy: IAM is replicated to it"
                    )));
                }
                if txn.tenancy_home()?.as_deref() == Some(name) {
                    return Err(KmsError::IncorrectState(format!(
                        "region {name} is the home region of this region's tenancy"
                    )));
                }
                for vault in txn.vaults()? {
                    if let Some(VaultReplication::Primary { replicas, .. }) = &vault.replication {
                        if replicas.iter().any(|r| r.region == name && r.status.is_shipped_to()) {
                            return Err(KmsError::IncorrectState(format!(
                                "vault {} replicates to region {name}; stop that first",
                                vault.id
                            )));
                        }
                    }
                }
                txn.delete_region(name)
            })
    }

    /// Starts replicating `vault_id` to `region`: refused for replicas, vaults not ACTIVE,
    /// unknown regions and vaults holding HSM keys (whose material cannot leave the token).
    pub(crate) fn create_replica(&self, principal: &Principal, vault_id: &Ocid, region: &str) -> Result<Vault> {
        let subject = AuditSubject {
            vault_id: Some(vault_id.clone()),
            ..Default::default()
        };
        self.ctx.mutate(principal, "CreateReplica", subject, |txn, now, _| {
            txn.region(region)?.ok_or_else(|| {
                KmsError::InvalidParameter(format!(
                    "region {region} is not registered (sealstore kms region add)"
                ))
            })?;
            let mut vault = txn.vault(vault_id)?;
            if vault.lifecycle_state != VaultState::Active {
                return Err(KmsError::IncorrectState(format!("vault {vault_id} is not ACTIVE")));
            }
            if txn
                .keys()?
                .iter()
                .any(|k| k.vault_id == *vault_id && k.protection_mode == ProtectionMode::Hsm)
            {
                return Err(KmsError::InvalidParameter(format!(
                    "vault {vault_id} holds HSM keys, whose material cannot leave the token; replicate it to an HSM-backed region (not supported yet)"
                )));
            }
            let (mut replicas, operations) = match vault.replication.take() {
                None => (Vec::new(), 0),
                Some(VaultReplication::Primary { replicas, operations }) => (replicas, operations),
                Some(VaultReplication::Replica { .. }) => unreachable!("guarded in mutate"),
            };
            match replicas.iter().find(|r| r.region == region).map(|r| r.status) {
                None | Some(ReplicaStatus::Deleted) => {}
                Some(ReplicaStatus::Deleting) => {
                    return Err(KmsError::IncorrectState(format!(
                        "the replica of vault {vault_id} in {region} is being deleted; create it again once it is DELETED"
                    )))
                }
                Some(_) => {
                    return Err(KmsError::IncorrectState(format!(
                        "vault {vault_id} already replicates to {region}"
                    )))
                }
            }
            // A deleted replica made again starts afresh, listed after the others.
            replicas.retain(|r| r.region != region);
            replicas.push(ReplicaInfo {
                region: region.to_owned(),
                status: ReplicaStatus::Creating,
                time_created: now,
                time_last_shipped: None,
                acknowledged_operation: 0,
            });
            vault.replication = Some(VaultReplication::Primary { replicas, operations });
            txn.put_vault(&vault)?;
            Ok(vault)
        })
    }

    /// Deletes the replica of `vault_id` in `region`: it is DELETING until the destination
    /// confirms that it stopped serving the vault and destroyed its material, then DELETED.
    pub(crate) fn delete_replica(&self, principal: &Principal, vault_id: &Ocid, region: &str) -> Result<Vault> {
        let subject = AuditSubject {
            vault_id: Some(vault_id.clone()),
            ..Default::default()
        };
        self.ctx.mutate(principal, "DeleteReplica", subject, |txn, _, _| {
            let mut vault = txn.vault(vault_id)?;
            let Some(VaultReplication::Primary { replicas, .. }) = vault.replication.as_mut() else {
                return Err(KmsError::IncorrectState(format!("vault {vault_id} has no replicas")));
            };
            let replica = replicas
                .iter_mut()
                .find(|r| r.region == region && r.status != ReplicaStatus::Deleted)
                .ok_or_else(|| KmsError::not_found("replica", region))?;
            if replica.status == ReplicaStatus::Deleting {
                return Err(KmsError::IncorrectState(format!(
                    "the replica of vault {vault_id} in {region} is already being deleted"
                )));
            }
            // The removal is shipped through the outbox, queued with this change.
            replica.status = ReplicaStatus::Deleting;
            txn.put_vault(&vault)?;
            Ok(vault)
        })
    }

    /// The replicas of `vault_id`, with their lag.
    pub(crate) fn replicas(&self, vault_id: &Ocid) -> Result<Vec<ReplicaView>> {
        let txn = self.ctx.read()?;
        let vault = txn.vault(vault_id)?;
        let Some(VaultReplication::Primary { replicas, .. }) = &vault.replication else {
            return Ok(Vec::new());
        };
        let outbox = txn.outbox()?;
        let regions = txn.regions()?;
        let now = self.ctx.now();
        Ok(replicas
            .iter()
            .map(|r| {
                let pending = outbox.iter().find(|e| e.region == r.region && e.vault_id == vault.id);
                ReplicaView {
                    region: r.region.clone(),
                    endpoint: regions.iter().find(|g| g.name == r.region).map(|g| g.endpoint.clone()),
                    status: r.status,
                    time_created: r.time_created,
                    time_last_shipped: r.time_last_shipped,
                    pending_changes: pending.map_or(0, |e| e.changes),
                    lag_millis: pending.map_or(0, |e| (now.unix_millis() - e.since.unix_millis()).max(0)),
                }
            })
            .collect())
    }

    /// What waits to be shipped.
    pub(crate) fn replication_outbox(&self) -> Result<Vec<OutboxEntry>> {
        self.ctx.read()?.outbox()
    }

    /// The region and what to ship for `entry`: the vault's state (material wrapped for that
    /// region), or the replica's removal while it is DELETING. `None` when nothing is to be
    /// shipped there any more (the replica is DELETED); the entry is then dropped.
    pub(crate) fn replication_shipment(&self, entry: &OutboxEntry) -> Result<Option<(Region, Shipment)>> {
        let txn = self.ctx.read()?;
        let region = txn
            .region(&entry.region)?
            .ok_or_else(|| KmsError::not_found("region", entry.region.as_str()))?;
        let mut vault = txn.vault(&entry.vault_id)?;
        let (status, operation, acknowledged) = match &vault.replication {
            Some(VaultReplication::Primary { replicas, operations }) => {
                let replica = replicas.iter().find(|r| r.region == entry.region);
                (
                    replica.map(|r| r.status),
                    *operations,
                    replica.map_or(0, |r| r.acknowledged_operation),
                )
            }
            _ => (None, 0, 0),
        };
        match status {
            Some(ReplicaStatus::Deleting) => {
                return Ok(Some((
                    region,
                    Shipment::Removal(VaultRemoval {
                        from_region: self.ctx.region().to_owned(),
                        vault_id: vault.id,
                    }),
                )))
            }
            Some(ReplicaStatus::Creating | ReplicaStatus::Created) => {}
            None | Some(ReplicaStatus::Deleted) => {
                drop(txn);
                let txn = self.ctx.write()?;
                txn.delete_outbox(&entry.region, &entry.vault_id)?;
                txn.commit()?;
                return Ok(None);
            }
        }
        vault.replication = None;
        let keys: Vec<Key> = txn.keys()?.into_iter().filter(|k| k.vault_id == vault.id).collect();
        let mut versions = Vec::new();
        let mut materials = Vec::new();
        let mut held = Vec::new();
        for key in &keys {
            let backend = self.ctx.protection(key.protection_mode)?;
            for version in txn.key_versions(&key.id)? {
                if let Some(stored) = txn.key_material(&version.id)? {
                    held.push(version.id.clone());
                    if shipped_before(version.replication_id.as_deref(), acknowledged) {
                        versions.push(version);
                        continue;
                    }
                    let shipped = match backend.export_material(&version.id, &stored)? {
                        ExportedMaterial::Secret(raw) => ShippedMaterial::Wrapped {
                            wrapped: B64.encode(wrap_for(&region, &version.id, &raw)?),
                        },
                        ExportedMaterial::Reference(r) => ShippedMaterial::Reference {
                            reference: B64.encode(r),
                        },
                    };
                    materials.push((version.id.clone(), shipped));
                }
                versions.push(version);
            }
        }
        Ok(Some((
            region,
            Shipment::State(Box::new(VaultShipment {
                from_region: self.ctx.region().to_owned(),
                operation,
                vault,
                keys,
                versions,
                materials,
                held: Some(held),
            })),
        )))
    }

    /// Ships the whole state to `region` next time: its replica said it lacks material an
    /// earlier acknowledged state carried (its data was lost or restored from a backup).
    pub(crate) fn replication_resend(&self, vault_id: &Ocid, region: &str) -> Result<()> {
        let txn = self.ctx.write()?;
        let mut vault = txn.vault(vault_id)?;
        if let Some(VaultReplication::Primary { replicas, .. }) = vault.replication.as_mut() {
            for r in replicas.iter_mut().filter(|r| r.region == region) {
                r.acknowledged_operation = 0;
            }
            txn.put_vault(&vault)?;
        }
        txn.commit()
    }

    /// Records that the destination acknowledged `shipped`, sent for `entry`. A state makes
    /// the replica CREATED (operations up to the state's are REPLICATED there), and the entry
    /// goes unless more changes were queued since it was read. A removal makes a DELETING
    /// replica DELETED, and the entry goes.
    pub(crate) fn replication_shipped(&self, entry: &OutboxEntry, shipped: &Shipment) -> Result<()> {
        let txn = self.ctx.write()?;
        let now = self.ctx.now();
        let removal = matches!(shipped, Shipment::Removal(_));
        if let Some(current) = txn.outbox_entry(&entry.region, &entry.vault_id)? {
            if removal || (current.changes == entry.changes && current.since == entry.since) {
                txn.delete_outbox(&entry.region, &entry.vault_id)?;
            } else {
                // Changes arrived during the shipment: ship again, lag counted from now.
                txn.put_outbox(&OutboxEntry {
                    changes: current.changes - entry.changes.min(current.changes),
                    since: now,
                    ..current
                })?;
            }
        }
        if let Ok(mut vault) = txn.vault(&entry.vault_id) {
            if let Some(VaultReplication::Primary { replicas, .. }) = vault.replication.as_mut() {
                for r in replicas.iter_mut().filter(|r| r.region == entry.region) {
                    match (shipped, r.status) {
                        (Shipment::State(state), ReplicaStatus::Creating | ReplicaStatus::Created) => {
                            r.status = ReplicaStatus::Created;
                            r.time_last_shipped = Some(now);
                            r.acknowledged_operation = r.acknowledged_operation.max(state.operation);
                        }
                        (Shipment::Removal(_), ReplicaStatus::Deleting) => {
                            r.status = ReplicaStatus::Deleted;
                            r.time_last_shipped = Some(now);
                        }
                        // A state acknowledged after the deletion was asked for, or the
                        // reverse: the replica's own state decides what comes next.
                        _ => {}
                    }
                }
                txn.put_vault(&vault)?;
            }
        }
        let subject = AuditSubject {
            vault_id: Some(entry.vault_id.clone()),
            ..Default::default()
        };
        audit::append(
            &txn,
            now,
            &Principal::new(format!("replication/{}", entry.region)),
            if removal { "ReplicaDeleted" } else { "ShipReplication" },
            &subject,
            Ok(()),
        )?;
        txn.commit()
    }

    /// Whether operation `operation` of `vault_id` reached each replica region. On the
    /// primary: every replica being created or created (a later operation than the vault's
    /// latest is not found). On a replica: this region, by the last state applied here.
    pub(crate) fn replication_status(&self, vault_id: &Ocid, operation: u64) -> Result<Vec<OperationStatus>> {
        let vault = self.ctx.read()?.vault(vault_id)?;
        let unknown = || KmsError::not_found("replication", replication_id(vault_id, operation));
        match &vault.replication {
            Some(VaultReplication::Primary { replicas, operations }) if (1..=*operations).contains(&operation) => {
                Ok(replicas
                    .iter()
                    .filter(|r| r.status.is_live())
                    .map(|r| OperationStatus {
                        region: r.region.clone(),
                        replicated: r.acknowledged_operation >= operation,
                    })
                    .collect())
            }
            Some(VaultReplication::Replica { applied_operation, .. }) if operation >= 1 => Ok(vec![OperationStatus {
                region: self.ctx.region().to_owned(),
                replicated: *applied_operation >= operation,
            }]),
            _ => Err(unknown()),
        }
    }

    /// Applies what `from` (a registered region whose signature the caller checked) shipped.
    pub(crate) fn apply_shipment(&self, from: &str, shipment: Shipment) -> Result<()> {
        if shipment.sender_region() != from {
            return Err(KmsError::InvalidParameter(format!(
                "the shipment says it comes from {}, but {from} signed it",
                shipment.sender_region()
            )));
        }
        match shipment {
            Shipment::State(state) => self.apply_replication(from, *state),
            Shipment::Removal(removal) => self.apply_removal(from, &removal.vault_id),
        }
    }

    /// Removes this region's copy of `vault_id`, a replica of `from`: the vault, its keys and
    /// versions go (404 from then on) and their material is destroyed. Already gone: nothing
    /// to do (a confirmation that did not reach the primary is asked for again).
    fn apply_removal(&self, from: &str, vault_id: &Ocid) -> Result<()> {
        let subject = AuditSubject {
            vault_id: Some(vault_id.clone()),
            ..Default::default()
        };
        let now = self.ctx.now();
        let txn = self.ctx.write()?;
        let Ok(vault) = txn.vault(vault_id) else {
            return Ok(());
        };
        match &vault.replication {
            Some(VaultReplication::Replica { primary_region, .. }) if primary_region == from => {}
            _ => {
                return Err(KmsError::IncorrectState(format!(
                    "vault {vault_id} exists here and is not a replica of {from}"
                )))
            }
        }
        let mut destroyed = Vec::new();
        for key in txn.keys()?.into_iter().filter(|k| k.vault_id == *vault_id) {
            for version in txn.key_versions(&key.id)? {
                if let Some(material) = txn.key_material(&version.id)? {
                    txn.delete_key_material(&version.id)?;
                    destroyed.push((key.protection_mode, version.id.clone(), material));
                }
                txn.delete_key_version(&key.id, &version.id)?;
            }
            txn.delete_key(&key.id)?;
        }
        txn.delete_vault(vault_id)?;
        audit::append(
            &txn,
            now,
            &Principal::new(format!("region/{from}")),
            "DestroyReplica",
            &subject,
            Ok(()),
        )?;
        txn.commit()?;
        // After the commit: the backends drop what they hold (cached unsealed keys).
        for (mode, version, material) in destroyed {
            if let Ok(backend) = self.ctx.protection(mode) {
                backend.destroy(&version, &material)?;
            }
        }
        Ok(())
    }

    /// Applies a vault state shipped by `from` (a registered region whose signature the
    /// caller checked): the vault becomes (or stays) a replica of it, with exactly its keys,
    /// versions and material.
    fn apply_replication(&self, from: &str, state: VaultShipment) -> Result<()> {
        let identity = self.ctx.replication_identity()?;
        // Unwrap and re-seal outside the write transaction, and only what is new here: an
        // RSA private operation per version is the cost of applying a state.
        let present: HashSet<Ocid> = {
            let txn = self.ctx.read()?;
            let mut present = HashSet::new();
            for (version, _) in &state.materials {
                if txn.key_material(version)?.is_some() {
                    present.insert(version.clone());
                }
            }
            present
        };
        if let Some(held) = &state.held {
            // Left out because an earlier acknowledged state carried it: it must be here.
            let shipped: HashSet<&Ocid> = state.materials.iter().map(|(v, _)| v).collect();
            let txn = self.ctx.read()?;
            for version in held.iter().filter(|v| !shipped.contains(v)) {
                if txn.key_material(version)?.is_none() {
                    return Err(KmsError::ReplicaIncomplete(version.to_string()));
                }
            }
        }
        let mut imported = Vec::new();
        let key_mode = |version: &Ocid| {
            state
                .versions
                .iter()
                .find(|v| v.id == *version)
                .and_then(|v| state.keys.iter().find(|k| k.id == v.key_id))
                .map(|k| k.protection_mode)
        };
        for (version, material) in state.materials.iter().filter(|(v, _)| !present.contains(v)) {
            let mode = key_mode(version)
                .ok_or_else(|| KmsError::InvalidParameter(format!("material for unknown version {version}")))?;
            let exported = match material {
                ShippedMaterial::Wrapped { wrapped } => {
                    let bytes = B64
                        .decode(wrapped)
                        .map_err(|_| KmsError::InvalidParameter("wrapped material is not base64".into()))?;
                    ExportedMaterial::Secret(identity.unwrap(version, &bytes)?)
                }
                ShippedMaterial::Reference { reference } => ExportedMaterial::Reference(
                    B64.decode(reference)
                        .map_err(|_| KmsError::InvalidParameter("reference is not base64".into()))?,
                ),
            };
            imported.push((
                version.clone(),
                self.ctx.protection(mode)?.import_material(version, &exported)?,
            ));
        }
        let subject = AuditSubject {
            vault_id: Some(state.vault.id.clone()),
            ..Default::default()
        };
        let principal = Principal::new(format!("region/{from}"));
        let now = self.ctx.now();
        let txn = self.ctx.write()?;
        if let Ok(existing) = txn.vault(&state.vault.id) {
            match &existing.replication {
                Some(VaultReplication::Replica { primary_region, .. }) if primary_region == from => {}
                _ => {
                    return Err(KmsError::IncorrectState(format!(
                        "vault {} exists here and is not a replica of {from}",
                        state.vault.id
                    )))
                }
            }
        }
        // Regions of one tenancy share its compartments: the replica is in the primary's
        // compartment, where the tenancy's policies decide who may use it. A region of
        // another tenancy puts it in its own root compartment, under its own policies.
        let compartment = if txn.compartment(&state.vault.compartment_id).is_ok() {
            state.vault.compartment_id.clone()
        } else {
            self.ctx.tenancy_id()
        };
        let mut vault = state.vault.clone();
        vault.compartment_id = compartment.clone();
        vault.replication = Some(VaultReplication::Replica {
            primary_region: from.to_owned(),
            time_last_applied: now,
            applied_operation: state.operation,
        });
        txn.put_vault(&vault)?;
        // What the primary still holds: everything else is destroyed here too.
        let held: HashSet<&Ocid> = match &state.held {
            Some(held) => held.iter().collect(),
            None => state.materials.iter().map(|(v, _)| v).collect(),
        };
        for key in &state.keys {
            txn.put_key(&Key {
                compartment_id: compartment.clone(),
                is_replica: true,
                ..key.clone()
            })?;
        }
        for version in &state.versions {
            txn.put_key_version(&KeyVersion {
                compartment_id: compartment.clone(),
                is_replica: true,
                ..version.clone()
            })?;
            if !held.contains(&version.id) && txn.key_material(&version.id)?.is_some() {
                // Destroyed at the primary: destroyed here too.
                txn.delete_key_material(&version.id)?;
            }
        }
        for (version, stored) in &imported {
            if txn.key_material(version)?.is_none() {
                txn.put_key_material(version, stored)?;
            }
        }
        audit::append(&txn, now, &principal, "ApplyReplication", &subject, Ok(()))?;
        txn.commit()
    }
}
