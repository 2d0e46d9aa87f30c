//! Key and vault backups (spec: `docs/KMS_BACKUP.md`).
//!
//! A backup holds a key — or a vault and, when asked, its keys — with every version and the
//! material of each version that still has some, sealed by [`mod@format`] under a key derived
//! from this deployment's root key: only a data directory opened with that root key restores
//! it, and an altered backup restores nothing. SOFTWARE material travels as the key itself
//! (inside the sealed payload), HSM and EXTERNAL versions as their references
//! ([`crate::protection::KeyProtection::backup_material`]).
//!
//! Restoring keeps every id (as OCI does): a key or vault that still exists is a conflict
//! (409), one that was deleted and purged comes back with its versions, so ciphertexts made
//! before the deletion decrypt again.

pub mod format;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::audit::{AuditSubject, Principal};
use crate::context::Context;
use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::{CompartmentState, Key, KeyState, KeyVersion, ProtectionMode, Vault, VaultState, VaultType};
use crate::protection::ExportedMaterial;
use crate::store::{ReadTxn, WriteTxn};
pub use format::BackupKind;
use format::Header;

/// The sealed payload of a backup (JSON).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Payload {
    /// The region that made it.
    region: String,
    /// Vault backups: the vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vault: Option<Vault>,
    /// The keys (one for a key backup; a vault's, possibly none, for a vault backup).
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyEntry {
    key: Key,
    versions: Vec<VersionEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VersionEntry {
    version: KeyVersion,
    /// Absent for versions whose material was destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    material: Option<Material>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", deny_unknown_fields)]
enum Material {
    /// SOFTWARE: the key (AES bytes, or PKCS#8 DER), base64.
    Secret { data: SecretB64 },
    /// HSM and EXTERNAL: the reference the store keeps, base64.
    Reference { data: String },
}

/// Base64 of key material; wiped when dropped.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct SecretB64(String);

impl Drop for SecretB64 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// What a backup would restore, for the caller's permission checks (read from a backup that
/// authenticated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Key or vault.
    pub kind: BackupKind,
    /// The key's or vault's id.
    pub resource_id: String,
    /// The compartment each key would be restored into.
    pub key_compartments: Vec<Ocid>,
}

/// Backups and restores over a [`Context`].
pub(crate) struct Backups<'a> {
    ctx: &'a Context,
}

fn subject(vault: Option<&Ocid>, key: Option<&Ocid>) -> AuditSubject {
    AuditSubject {
        vault_id: vault.cloned(),
        key_id: key.cloned(),
        ..Default::default()
    }
}

/// Where a restored key goes: the compartment it was in, when that is an active compartment
/// here, else `fallback`.
fn restore_compartment(
    compartment: impl FnOnce(&Ocid) -> Result<crate::model::Compartment>,
    backed_up: &Ocid,
    fallback: &Ocid,
) -> Ocid {
    match compartment(backed_up) {
        Ok(c) if c.lifecycle_state == CompartmentState::Active => backed_up.clone(),
        _ => fallback.clone(),
    }
}

impl<'a> Backups<'a> {
    pub(crate) fn new(ctx: &'a Context) -> Self {
        Backups { ctx }
    }

    fn key_entry(&self, txn: &ReadTxn, key: Key) -> Result<KeyEntry> {
        let backend = self.ctx.protection(key.protection_mode)?;
        let mut versions = Vec::new();
        for version in txn.key_versions(&key.id)? {
            let material = match txn.key_material(&version.id)? {
                None => None,
                Some(stored) => Some(match backend.backup_material(&version.id, &stored)? {
                    ExportedMaterial::Secret(raw) => Material::Secret {
                        data: SecretB64(B64.encode(raw.as_slice())),
                    },
                    ExportedMaterial::Reference(r) => Material::Reference { data: B64.encode(r) },
                }),
            };
            versions.push(VersionEntry { version, material });
        }
        Ok(KeyEntry { key, versions })
    }

    fn seal(&self, kind: BackupKind, resource: &Ocid, payload: &Payload) -> Result<String> {
        let json = Zeroizing::new(serde_json::to_vec(payload)?);
        self.ctx
            .backup_keyring()
            .seal(kind, resource.as_str(), self.ctx.now(), &json)
    }

    /// Makes a backup of `key_id` and hands it to `deliver` (which stores it where the caller
    /// asked); audited as `BackupKey` with delivery's outcome. Only ENABLED and DISABLED keys.
    pub(crate) fn backup_key(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        deliver: impl FnOnce(&[u8]) -> Result<()>,
    ) -> Result<Key> {
        let subject = subject(None, Some(key_id));
        let result = (|| {
            let txn = self.ctx.read()?;
            let key = txn.key(key_id)?;
            if !matches!(key.lifecycle_state, KeyState::Enabled | KeyState::Disabled) {
                return Err(KmsError::IncorrectState(format!(
                    "key {key_id} is {:?}: only ENABLED or DISABLED keys can be backed up",
                    key.lifecycle_state
                )));
            }
            let payload = Payload {
                region: self.ctx.region().to_owned(),
                vault: None,
                keys: vec![self.key_entry(&txn, key.clone())?],
            };
            drop(txn);
            let text = Zeroizing::new(self.seal(BackupKind::Key, key_id, &payload)?);
            deliver(text.as_bytes())?;
            Ok(key)
        })();
        self.audit("BackupKey", principal, &subject, &result)?;
        result
    }

    /// Makes a backup of `vault_id` (and of its keys that are not deleted, when
    /// `include_keys`) and hands it to `deliver`; audited as `BackupVault`.
    pub(crate) fn backup_vault(
        &self,
        principal: &Principal,
        vault_id: &Ocid,
        include_keys: bool,
        deliver: impl FnOnce(&[u8]) -> Result<()>,
    ) -> Result<Vault> {
        let subject = subject(Some(vault_id), None);
        let result = (|| {
            let txn = self.ctx.read()?;
            let vault = txn.vault(vault_id)?;
            if vault.lifecycle_state != VaultState::Active {
                return Err(KmsError::IncorrectState(format!(
                    "vault {vault_id} is {:?}: only ACTIVE vaults can be backed up",
                    vault.lifecycle_state
                )));
            }
            let mut keys = Vec::new();
            if include_keys {
                for key in txn.keys()? {
                    if key.vault_id == *vault_id && key.lifecycle_state != KeyState::Deleted {
                        keys.push(self.key_entry(&txn, key)?);
                    }
                }
            }
            let payload = Payload {
                region: self.ctx.region().to_owned(),
                vault: Some(vault.clone()),
                keys,
            };
            drop(txn);
            let text = Zeroizing::new(self.seal(BackupKind::Vault, vault_id, &payload)?);
            deliver(text.as_bytes())?;
            Ok(vault)
        })();
        self.audit("BackupVault", principal, &subject, &result)?;
        result
    }

    fn audit<T>(
        &self,
        operation: &str,
        principal: &Principal,
        subject: &AuditSubject,
        result: &Result<T>,
    ) -> Result<()> {
        let outcome = result.as_ref().map(drop).map_err(ToString::to_string);
        self.ctx.audit_only(
            principal,
            operation,
            subject,
            outcome,
            sealstore_meta::Durability::Immediate,
        )
    }

    /// Opens `file` for a restore, auditing a refusal (nothing else happens then).
    fn open_audited(
        &self,
        file: &[u8],
        want: BackupKind,
        operation: &str,
        principal: &Principal,
        subject: &AuditSubject,
    ) -> Result<Payload> {
        let opened = self.open(file, want).map(|(_, p)| p);
        if opened.is_err() {
            self.audit(operation, principal, subject, &opened)?;
        }
        opened
    }

    /// Authenticates `file` and reads its payload.
    fn open(&self, file: &[u8], want: BackupKind) -> Result<(Header, Payload)> {
        let (header, json) = self.ctx.backup_keyring().open(file)?;
        if header.kind != want {
            return Err(KmsError::InvalidParameter(format!(
                "this is a {} backup; restore it as a {}",
                header.kind.as_str(),
                header.kind.as_str()
            )));
        }
        let payload: Payload = serde_json::from_slice(&json)
            .map_err(|e| KmsError::InvalidParameter(format!("backup payload unreadable: {e}")))?;
        let consistent = match (want, &payload.vault) {
            (BackupKind::Key, None) => payload.keys.len() == 1 && payload.keys[0].key.id.as_str() == header.resource,
            (BackupKind::Vault, Some(v)) => {
                v.id.as_str() == header.resource && payload.keys.iter().all(|k| k.key.vault_id == v.id)
            }
            _ => false,
        };
        let versions_consistent = payload
            .keys
            .iter()
            .all(|k| k.versions.iter().all(|v| v.version.key_id == k.key.id));
        if !consistent || !versions_consistent {
            return Err(KmsError::InvalidParameter(
                "backup payload does not match its header".into(),
            ));
        }
        Ok((header, payload))
    }

    /// What `file` would restore, with each key's compartment when restored into a vault in
    /// `fallback` (a key goes back to its own compartment when that exists here).
    pub(crate) fn summary(&self, file: &[u8], kind: BackupKind, fallback: &Ocid) -> Result<BackupSummary> {
        let (header, payload) = self.open(file, kind)?;
        let txn = self.ctx.read()?;
        Ok(BackupSummary {
            kind: header.kind,
            resource_id: header.resource,
            key_compartments: payload
                .keys
                .iter()
                .map(|k| restore_compartment(|c| txn.compartment(c), &k.key.compartment_id, fallback))
                .collect(),
        })
    }

    /// The material each version of `keys` will store, made outside the write transaction
    /// (sealing under the root key, or asking an HSM whether its object still exists).
    fn restored_materials(&self, keys: &[KeyEntry]) -> Result<Vec<(Ocid, Vec<u8>)>> {
        let mut out = Vec::new();
        for entry in keys {
            let backend = self.ctx.protection(entry.key.protection_mode)?;
            for v in &entry.versions {
                let Some(material) = &v.material else { continue };
                let exported = match material {
                    Material::Secret { data } => ExportedMaterial::Secret(Zeroizing::new(
                        B64.decode(&data.0)
                            .map_err(|_| KmsError::InvalidParameter("backup material is not base64".into()))?,
                    )),
                    Material::Reference { data } => ExportedMaterial::Reference(
                        B64.decode(data)
                            .map_err(|_| KmsError::InvalidParameter("backup reference is not base64".into()))?,
                    ),
                };
                out.push((
                    v.version.id.clone(),
                    backend.restore_material(&v.version.id, &exported)?,
                ));
            }
        }
        Ok(out)
    }

    /// Writes one restored key into `vault` (ACTIVE, checked by the caller): refused when a
    /// key with its id exists and is not DELETED.
    fn put_key(txn: &WriteTxn, vault: &Vault, entry: &KeyEntry, materials: &[(Ocid, Vec<u8>)]) -> Result<Key> {
        let id = &entry.key.id;
        if let Ok(existing) = txn.key(id) {
            if existing.lifecycle_state != KeyState::Deleted {
                return Err(KmsError::AlreadyExists(format!(
                    "key {id} exists (it is {:?}); a backup restores a key only after it was deleted",
                    existing.lifecycle_state
                )));
            }
        }
        let external_vault = vault.vault_type == VaultType::External;
        if external_vault != (entry.key.protection_mode == ProtectionMode::External) {
            return Err(KmsError::InvalidParameter(format!(
                "a {} key cannot be restored into a {:?} vault",
                entry.key.protection_mode.as_str(),
                vault.vault_type
            )));
        }
        let compartment = restore_compartment(|c| txn.compartment(c), &entry.key.compartment_id, &vault.compartment_id);
        let key = Key {
            vault_id: vault.id.clone(),
            compartment_id: compartment.clone(),
            replication_id: None,
            is_replica: false,
            restored_from_key_id: Some(id.clone()),
            ..entry.key.clone()
        };
        txn.put_key(&key)?;
        for v in &entry.versions {
            txn.put_key_version(&KeyVersion {
                vault_id: vault.id.clone(),
                compartment_id: compartment.clone(),
                replication_id: None,
                is_replica: false,
                restored_from_key_version_id: Some(v.version.id.clone()),
                ..v.version.clone()
            })?;
        }
        for (version, stored) in materials
            .iter()
            .filter(|(v, _)| entry.versions.iter().any(|e| e.version.id == *v))
        {
            txn.put_key_material(version, stored)?;
        }
        Ok(key)
    }

    /// Restores a key backup into `vault_id` (ACTIVE): the key keeps its id, versions and
    /// material; audited as `RestoreKey`.
    pub(crate) fn restore_key(&self, principal: &Principal, vault_id: &Ocid, file: &[u8]) -> Result<Key> {
        let payload = self.open_audited(
            file,
            BackupKind::Key,
            "RestoreKey",
            principal,
            &subject(Some(vault_id), None),
        )?;
        let entry = &payload.keys[0];
        let materials = self.restored_materials(&payload.keys)?;
        self.ctx.mutate(
            principal,
            "RestoreKey",
            subject(Some(vault_id), Some(&entry.key.id)),
            |txn, _, _| {
                let vault = txn.vault(vault_id)?;
                if vault.lifecycle_state != VaultState::Active {
                    return Err(KmsError::IncorrectState(format!("vault {vault_id} is not ACTIVE")));
                }
                Self::put_key(txn, &vault, entry, &materials)
            },
        )
    }

    /// Restores a vault backup into `compartment`: the vault keeps its id and comes back
    /// ACTIVE with the keys the backup holds; audited as `RestoreVault`.
    pub(crate) fn restore_vault(&self, principal: &Principal, compartment: &Ocid, file: &[u8]) -> Result<Vault> {
        let payload = self.open_audited(
            file,
            BackupKind::Vault,
            "RestoreVault",
            principal,
            &AuditSubject::default(),
        )?;
        let backed_up = payload.vault.as_ref().expect("checked by open");
        let materials = self.restored_materials(&payload.keys)?;
        self.ctx.mutate(
            principal,
            "RestoreVault",
            subject(Some(&backed_up.id), None),
            |txn, _, _| {
                let c = txn.compartment(compartment)?;
                if c.lifecycle_state != CompartmentState::Active {
                    return Err(KmsError::IncorrectState(format!(
                        "compartment {compartment} is not active"
                    )));
                }
                if let Ok(existing) = txn.vault(&backed_up.id) {
                    if existing.lifecycle_state != VaultState::Deleted {
                        return Err(KmsError::AlreadyExists(format!(
                            "vault {} exists (it is {:?}); a backup restores a vault only after it was deleted",
                            backed_up.id, existing.lifecycle_state
                        )));
                    }
                }
                let vault = Vault {
                    compartment_id: compartment.clone(),
                    lifecycle_state: VaultState::Active,
                    time_of_deletion: None,
                    replication: None,
                    replication_id: None,
                    restored_from_vault_id: Some(backed_up.id.clone()),
                    ..backed_up.clone()
                };
                txn.put_vault(&vault)?;
                for entry in &payload.keys {
                    Self::put_key(txn, &vault, entry, &materials)?;
                }
                Ok(vault)
            },
        )
    }
}
