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

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
    OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::audit::{AuditSubject, Principal};
use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::{Key, KeyVersion, ProtectionMode, Vault, VaultState};
use crate::protection::ExportedMaterial;
use crate::service::Kms;
use crate::time::Timestamp;

/// OAEP label prefix: wrapped material is bound to its version id.
const WRAP_LABEL: &str = "sealstore/replication/v1:";
/// File names of the replication identity in the data directory.
const SIGNING_KEY_FILE: &str = "replication-signing.key";
const WRAPPING_KEY_FILE: &str = "replication-wrapping.key";

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

/// A replica as `replicas` lists it: state and lag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    /// The destination region.
    pub region: String,
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

/// The whole state of a vault, as shipped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultShipment {
    /// The region sending it.
    pub from_region: String,
    /// The vault (with its primary-side replication info stripped).
    pub vault: Vault,
    /// Its keys.
    pub keys: Vec<Key>,
    /// Their versions.
    pub versions: Vec<KeyVersion>,
    /// Version id → material, for versions whose material still exists.
    pub materials: Vec<(Ocid, ShippedMaterial)>,
}

/// This region's replication keys (made on first use, PKCS#8 files of mode 0600).
pub struct ReplicationIdentity {
    signing: RsaKeyPair,
    signing_pkcs8: Zeroizing<Vec<u8>>,
    wrapping: OaepPrivateDecryptingKey,
    wrapping_public: Vec<u8>,
}

impl std::fmt::Debug for ReplicationIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicationIdentity(<keys>)")
    }
}

fn load_or_create(path: &Path, make: impl FnOnce() -> Result<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(der) => return Ok(Zeroizing::new(der)),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(KmsError::io(format!("reading {}", path.display()), e))
        }
        Err(_) => {}
    }
    let der = Zeroizing::new(make()?);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| KmsError::io(format!("creating {}", path.display()), e))?;
    file.write_all(&der)
        .and_then(|()| file.sync_all())
        .map_err(|e| KmsError::io(format!("writing {}", path.display()), e))?;
    Ok(der)
}

fn crypto_failed(what: &str) -> KmsError {
    KmsError::Protection(format!("replication: {what}"))
}

impl ReplicationIdentity {
    /// The identity kept in `data_dir`.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let signing_pkcs8 = load_or_create(&data_dir.join(SIGNING_KEY_FILE), || {
            let pair =
                aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa3072).map_err(|_| crypto_failed("key generation"))?;
            Ok(pair
                .as_der()
                .map_err(|_| crypto_failed("key encoding"))?
                .as_ref()
                .to_vec())
        })?;
        let wrapping_pkcs8 = load_or_create(&data_dir.join(WRAPPING_KEY_FILE), || {
            let key = PrivateDecryptingKey::generate(KeySize::Rsa3072).map_err(|_| crypto_failed("key generation"))?;
            Ok(key
                .as_der()
                .map_err(|_| crypto_failed("key encoding"))?
                .as_ref()
                .to_vec())
        })?;
        let signing = RsaKeyPair::from_pkcs8(&signing_pkcs8).map_err(|_| crypto_failed("unreadable signing key"))?;
        let wrapping_key =
            PrivateDecryptingKey::from_pkcs8(&wrapping_pkcs8).map_err(|_| crypto_failed("unreadable wrapping key"))?;
        let wrapping_public = wrapping_key
            .public_key()
            .as_der()
            .map_err(|_| crypto_failed("key encoding"))?
            .as_ref()
            .to_vec();
        Ok(ReplicationIdentity {
            signing,
            signing_pkcs8,
            wrapping: OaepPrivateDecryptingKey::new(wrapping_key).map_err(|_| crypto_failed("wrapping key"))?,
            wrapping_public,
        })
    }

    /// The signing key pair, for signing requests to peers.
    pub fn signing_key(&self) -> &RsaKeyPair {
        &self.signing
    }

    /// The signing key as PKCS#8 DER.
    pub fn signing_pkcs8(&self) -> &[u8] {
        &self.signing_pkcs8
    }

    /// The public keys to give peers: `(signing, wrapping)`, SubjectPublicKeyInfo DER.
    pub fn public_keys(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let spki = self
            .signing
            .public_key()
            .as_der()
            .map_err(|_| crypto_failed("key encoding"))?
            .as_ref()
            .to_vec();
        Ok((spki, self.wrapping_public.clone()))
    }

    fn unwrap(&self, version: &Ocid, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(vec![0u8; self.wrapping.min_output_size()]);
        let label = format!("{WRAP_LABEL}{version}");
        let len = self
            .wrapping
            .decrypt(&OAEP_SHA256_MGF1SHA256, wrapped, &mut out, Some(label.as_bytes()))
            .map_err(|_| KmsError::InvalidCiphertext(format!("replicated material of {version} does not unwrap")))?
            .len();
        out.truncate(len);
        Ok(out)
    }
}

fn wrap_for(region: &Region, version: &Ocid, secret: &[u8]) -> Result<Vec<u8>> {
    let der = B64
        .decode(&region.wrapping_key)
        .map_err(|_| KmsError::Store(format!("region {}: bad wrapping key", region.name)))?;
    let key = OaepPublicEncryptingKey::new(
        PublicEncryptingKey::from_der(&der)
            .map_err(|_| KmsError::Store(format!("region {}: bad wrapping key", region.name)))?,
    )
    .map_err(|_| crypto_failed("wrapping key"))?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let label = format!("{WRAP_LABEL}{version}");
    let len = key
        .encrypt(&OAEP_SHA256_MGF1SHA256, secret, &mut out, Some(label.as_bytes()))
        .map_err(|_| crypto_failed("wrapping failed"))?
        .len();
    out.truncate(len);
    Ok(out)
}

impl Kms {
    /// This region's replication identity.
    pub fn replication_identity(&self) -> Result<&ReplicationIdentity> {
        static_identity(self)
    }

    /// Registers (or updates) a peer region.
    pub fn add_region(&self, principal: &Principal, mut region: Region) -> Result<Region> {
        if region.name == self.region() {
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
        self.mutate(principal, "AddRegion", AuditSubject::default(), |txn, now, _| {
            region.time_created = txn.region(&region.name)?.map_or(now, |r| r.time_created);
            txn.put_region(&region)?;
            Ok(region)
        })
    }

    /// Registered peer regions.
    pub fn list_regions(&self) -> Result<Vec<Region>> {
        self.read()?.regions()
    }

    /// Forgets a peer region (refused while a vault replicates to it).
    pub fn remove_region(&self, principal: &Principal, name: &str) -> Result<()> {
        self.mutate(principal, "RemoveRegion", AuditSubject::default(), |txn, _, _| {
            txn.region(name)?.ok_or_else(|| KmsError::not_found("region", name))?;
            for vault in txn.vaults()? {
                if let Some(VaultReplication::Primary { replicas }) = &vault.replication {
                    if replicas.iter().any(|r| r.region == name) {
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
    pub fn create_replica(&self, principal: &Principal, vault_id: &Ocid, region: &str) -> Result<Vault> {
        let subject = AuditSubject {
            vault_id: Some(vault_id.clone()),
            ..Default::default()
        };
        self.mutate(principal, "CreateReplica", subject, |txn, now, _| {
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
            let mut replicas = match vault.replication.take() {
                None => Vec::new(),
                Some(VaultReplication::Primary { replicas }) => replicas,
                Some(VaultReplication::Replica { .. }) => unreachable!("guarded in mutate"),
            };
            if replicas.iter().any(|r| r.region == region) {
                return Err(KmsError::IncorrectState(format!(
                    "vault {vault_id} already replicates to {region}"
                )));
            }
            replicas.push(ReplicaInfo {
                region: region.to_owned(),
                status: ReplicaStatus::Creating,
                time_created: now,
                time_last_shipped: None,
            });
            vault.replication = Some(VaultReplication::Primary { replicas });
            txn.put_vault(&vault)?;
            Ok(vault)
        })
    }

    /// Stops replicating `vault_id` to `region` (the copy there stays, no longer updated).
    pub fn delete_replica(&self, principal: &Principal, vault_id: &Ocid, region: &str) -> Result<Vault> {
        let subject = AuditSubject {
            vault_id: Some(vault_id.clone()),
            ..Default::default()
        };
        self.mutate(principal, "DeleteReplica", subject, |txn, _, _| {
            let mut vault = txn.vault(vault_id)?;
            let Some(VaultReplication::Primary { replicas }) = vault.replication.as_mut() else {
                return Err(KmsError::IncorrectState(format!("vault {vault_id} has no replicas")));
            };
            let before = replicas.len();
            replicas.retain(|r| r.region != region);
            if replicas.len() == before {
                return Err(KmsError::not_found("replica", region));
            }
            if replicas.is_empty() {
                vault.replication = None;
            }
            txn.put_vault(&vault)?;
            txn.delete_outbox(region, vault_id)?;
            Ok(vault)
        })
    }

    /// Queues the vault of a change for every region it replicates to; called by
    /// [`Kms::mutate_if_needed`] inside the change's own transaction. Whether it queued.
    pub(crate) fn queue_replication(
        &self,
        txn: &crate::store::WriteTxn,
        now: Timestamp,
        vault_id: &Ocid,
    ) -> Result<bool> {
        let Ok(vault) = txn.vault(vault_id) else {
            return Ok(false);
        };
        let Some(VaultReplication::Primary { replicas }) = &vault.replication else {
            return Ok(false);
        };
        for replica in replicas {
            let entry = match txn.outbox_entry(&replica.region, vault_id)? {
                Some(mut e) => {
                    e.changes += 1;
                    e
                }
                None => OutboxEntry {
                    region: replica.region.clone(),
                    vault_id: vault_id.clone(),
                    changes: 1,
                    since: now,
                },
            };
            txn.put_outbox(&entry)?;
        }
        Ok(!replicas.is_empty())
    }

    /// Wakes [`Kms::wait_for_replication_work`] (after the commit that queued work, or to
    /// let a shipper see that it should stop).
    pub fn notify_replication(&self) {
        *self.replication_wakeup.lock().expect("replication wakeup") += 1;
        self.replication_queued.notify_all();
    }

    /// The replicas of `vault_id`, with their lag.
    pub fn replicas(&self, vault_id: &Ocid) -> Result<Vec<ReplicaView>> {
        let txn = self.read()?;
        let vault = txn.vault(vault_id)?;
        let Some(VaultReplication::Primary { replicas }) = &vault.replication else {
            return Ok(Vec::new());
        };
        let outbox = txn.outbox()?;
        let now = self.now();
        Ok(replicas
            .iter()
            .map(|r| {
                let pending = outbox.iter().find(|e| e.region == r.region && e.vault_id == vault.id);
                ReplicaView {
                    region: r.region.clone(),
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
    pub fn replication_outbox(&self) -> Result<Vec<OutboxEntry>> {
        self.read()?.outbox()
    }

    /// A counter that moves whenever work is queued: read it before looking at the outbox,
    /// then [`Kms::wait_for_replication_work`] returns at once if work came meanwhile.
    pub fn replication_generation(&self) -> u64 {
        *self.replication_wakeup.lock().expect("replication wakeup")
    }

    /// Waits up to `timeout` for work queued after generation `seen`.
    pub fn wait_for_replication_work(&self, seen: u64, timeout: std::time::Duration) {
        let guard = self.replication_wakeup.lock().expect("replication wakeup");
        let _ = self
            .replication_queued
            .wait_timeout_while(guard, timeout, |generation| *generation == seen);
    }

    /// The region and the state to ship for `entry` (material wrapped for that region).
    pub fn replication_shipment(&self, entry: &OutboxEntry) -> Result<(Region, VaultShipment)> {
        let txn = self.read()?;
        let region = txn
            .region(&entry.region)?
            .ok_or_else(|| KmsError::not_found("region", entry.region.as_str()))?;
        let mut vault = txn.vault(&entry.vault_id)?;
        vault.replication = None;
        let keys: Vec<Key> = txn.keys()?.into_iter().filter(|k| k.vault_id == vault.id).collect();
        let mut versions = Vec::new();
        let mut materials = Vec::new();
        for key in &keys {
            let backend = self.protection(key.protection_mode)?;
            for version in txn.key_versions(&key.id)? {
                if let Some(stored) = txn.key_material(&version.id)? {
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
        Ok((
            region,
            VaultShipment {
                from_region: self.region().to_owned(),
                vault,
                keys,
                versions,
                materials,
            },
        ))
    }

    /// Records an acknowledged shipment of `entry`: the replica is ACTIVE, and the entry goes
    /// unless more changes were queued since it was read.
    pub fn replication_shipped(&self, entry: &OutboxEntry) -> Result<()> {
        let txn = self.store.write(redb::Durability::Immediate)?;
        let now = self.now();
        if let Some(current) = txn.outbox_entry(&entry.region, &entry.vault_id)? {
            if current.changes == entry.changes && current.since == entry.since {
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
            if let Some(VaultReplication::Primary { replicas }) = vault.replication.as_mut() {
                for r in replicas.iter_mut().filter(|r| r.region == entry.region) {
                    r.status = ReplicaStatus::Active;
                    r.time_last_shipped = Some(now);
                }
                txn.put_vault(&vault)?;
            }
        }
        let subject = AuditSubject {
            vault_id: Some(entry.vault_id.clone()),
            ..Default::default()
        };
        crate::audit::append(
            &txn,
            now,
            &Principal::new(format!("replication/{}", entry.region)),
            "ShipReplication",
            &subject,
            Ok(()),
        )?;
        txn.commit()
    }

    /// Applies a vault state shipped by `from` (a registered region whose signature the
    /// caller checked): the vault becomes (or stays) a replica of it, with exactly its keys,
    /// versions and material.
    pub fn apply_replication(&self, from: &str, state: VaultShipment) -> Result<()> {
        if state.from_region != from {
            return Err(KmsError::InvalidParameter(format!(
                "the shipment says it comes from {}, but {from} signed it",
                state.from_region
            )));
        }
        let identity = self.replication_identity()?;
        // Unwrap and re-seal outside the write transaction, and only what is new here: an
        // RSA private operation per version is the cost of applying a state.
        let present: HashSet<Ocid> = {
            let txn = self.read()?;
            let mut present = HashSet::new();
            for (version, _) in &state.materials {
                if txn.key_material(version)?.is_some() {
                    present.insert(version.clone());
                }
            }
            present
        };
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
                self.protection(mode)?.import_material(version, &exported)?,
            ));
        }
        let subject = AuditSubject {
            vault_id: Some(state.vault.id.clone()),
            ..Default::default()
        };
        let principal = Principal::new(format!("region/{from}"));
        let now = self.now();
        let txn = self.store.write(redb::Durability::Immediate)?;
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
        // Each region is its own tenancy here: a replica lives in this region's root
        // compartment, where this region's policies decide who may use it.
        let tenancy = self.tenancy_id().clone();
        let mut vault = state.vault.clone();
        vault.compartment_id = tenancy.clone();
        vault.replication = Some(VaultReplication::Replica {
            primary_region: from.to_owned(),
            time_last_applied: now,
        });
        txn.put_vault(&vault)?;
        let shipped_versions: HashSet<&Ocid> = state.materials.iter().map(|(v, _)| v).collect();
        for key in &state.keys {
            txn.put_key(&Key {
                compartment_id: tenancy.clone(),
                ..key.clone()
            })?;
        }
        for version in &state.versions {
            txn.put_key_version(&KeyVersion {
                compartment_id: tenancy.clone(),
                ..version.clone()
            })?;
            if !shipped_versions.contains(&version.id) && txn.key_material(&version.id)?.is_some() {
                // Destroyed at the primary: destroyed here too.
                txn.delete_key_material(&version.id)?;
            }
        }
        for (version, stored) in &imported {
            if txn.key_material(version)?.is_none() {
                txn.put_key_material(version, stored)?;
            }
        }
        crate::audit::append(&txn, now, &principal, "ApplyReplication", &subject, Ok(()))?;
        txn.commit()
    }

    /// Refuses management of a replica: it is managed in its primary region.
    pub(crate) fn refuse_if_replica(&self, txn: &crate::store::WriteTxn, subject: &AuditSubject) -> Result<()> {
        if let Some(vault) = Self::changed_vault(txn, subject).and_then(|v| txn.vault(&v).ok()) {
            if let Some(VaultReplication::Replica { primary_region, .. }) = &vault.replication {
                return Err(KmsError::IncorrectState(format!(
                    "vault {} is a replica of region {primary_region}: manage it there (this region serves encrypt and decrypt only)",
                    vault.id
                )));
            }
        }
        Ok(())
    }

    /// The vault a change touches, from its audit subject (its vault, or its key's).
    pub(crate) fn changed_vault(txn: &crate::store::WriteTxn, subject: &AuditSubject) -> Option<Ocid> {
        match (&subject.vault_id, &subject.key_id) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(k)) => txn.key(k).ok().map(|k| k.vault_id),
            (None, None) => None,
        }
    }
}

/// The identity, loaded once per Kms (made on first use).
fn static_identity(kms: &Kms) -> Result<&ReplicationIdentity> {
    if let Some(id) = kms.replication_identity_cell().get() {
        return Ok(id);
    }
    let identity = ReplicationIdentity::load_or_create(kms.data_dir())?;
    Ok(kms.replication_identity_cell().get_or_init(|| identity))
}

/// Storage for [`Kms::replication_identity`].
pub(crate) type IdentityCell = OnceLock<ReplicationIdentity>;

/// Where the identity files are, for messages.
pub fn identity_files(data_dir: &Path) -> [PathBuf; 2] {
    [data_dir.join(SIGNING_KEY_FILE), data_dir.join(WRAPPING_KEY_FILE)]
}
