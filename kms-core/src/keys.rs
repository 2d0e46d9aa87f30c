//! Master keys and their versions: create, update, enable/disable, rotation, EXTERNAL keys'
//! versions, and deletion scheduled 7–30 days ahead.

use sealstore_meta::Durability;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditSubject, Principal};
use crate::context::Context;
use crate::error::{KmsError, Result};
use crate::ids::{Ocid, ResourceType};
use crate::lifecycle::{
    auto_rotation_details, cancel_deletion, check_name, check_rotation_interval, schedule_deletion,
};
use crate::model::replication::VaultReplication;
use crate::model::*;
use crate::protection::imported::Imported;
use crate::protection::{public_key_pem, ExportedMaterial, ExternalKeyState, ExternalVersionRef, KeyProtection};
use crate::store::WriteTxn;
use crate::time::Timestamp;
use crate::vaults::{UpdateResource, Vaults};

/// Parameters of [`Kms::create_key`](crate::Kms::create_key).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateKey {
    /// Vault to create the key in.
    pub vault_id: Ocid,
    /// Compartment; the vault's when absent.
    pub compartment_id: Option<Ocid>,
    /// Name.
    pub display_name: String,
    /// Protection mode; SOFTWARE when absent.
    pub protection_mode: Option<ProtectionMode>,
    /// Key shape; AES-256 when absent.
    #[serde(default)]
    pub key_shape: Option<KeyShape>,
    /// Auto-rotation interval in days (60–365); no auto-rotation when absent.
    pub auto_rotation_interval_days: Option<u32>,
    /// Tags.
    #[serde(default)]
    pub freeform_tags: FreeformTags,
    /// Keys of EXTERNAL vaults (required there): the key's id in the external key manager.
    #[serde(default)]
    pub external_key_id: Option<String>,
}

impl CreateKey {
    /// A SOFTWARE key named `display_name` in `vault_id`, without auto-rotation.
    pub fn new(vault_id: Ocid, display_name: impl Into<String>) -> Self {
        CreateKey {
            vault_id,
            compartment_id: None,
            display_name: display_name.into(),
            protection_mode: None,
            key_shape: None,
            auto_rotation_interval_days: None,
            freeform_tags: FreeformTags::new(),
            external_key_id: None,
        }
    }
}

/// Where a new key version's material comes from.
pub(crate) enum Material {
    /// Made by the key's protection backend.
    Generate,
    /// Brought by the key's owner (see [`crate::byok`]): unwrapped and checked already.
    Import(Imported),
}

/// Whose version [`Keys::new_version`] makes.
struct VersionOwner<'a> {
    key_id: &'a Ocid,
    vault_id: &'a Ocid,
    compartment_id: &'a Ocid,
}

/// Key and key-version management over a [`Context`].
pub(crate) struct Keys<'a> {
    ctx: &'a Context,
}

impl<'a> Keys<'a> {
    pub(crate) fn new(ctx: &'a Context) -> Self {
        Keys { ctx }
    }

    // ----- keys -----

    /// Creates a master key of the requested shape (AES-256 by default) with its first version.
    pub(crate) fn create_key(&self, principal: &Principal, req: CreateKey) -> Result<Key> {
        let subject = AuditSubject {
            vault_id: Some(req.vault_id.clone()),
            ..Default::default()
        };
        // An external key's versions come from its key manager: asked before the write
        // transaction, which must not wait on the network.
        let vault = Vaults::new(self.ctx).get_vault(&req.vault_id)?;
        let spec = req.key_shape.as_ref().map_or(Ok(KeySpec::AES_256), KeyShape::spec)?;
        if vault.external_key_manager.is_some() && spec != KeySpec::AES_256 {
            return Err(KmsError::InvalidParameter(format!(
                "keys of EXTERNAL vaults are AES-256 (as in OCI), not {spec}"
            )));
        }
        let external = match (&vault.external_key_manager, &req.external_key_id) {
            (Some(manager), Some(key_id)) => {
                let state = self.ctx.protection(ProtectionMode::External)?.external_key(manager, key_id)?;
                if !state.enabled {
                    return Err(KmsError::IncorrectState(format!(
                        "external key {key_id} is disabled in the external key manager"
                    )));
                }
                Some((manager.clone(), key_id.clone(), state))
            }
            (Some(_), None) => {
                return Err(KmsError::InvalidParameter(
                    "a key of an EXTERNAL vault needs the key's id in the external key manager (externalKeyReference.externalKeyId)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(KmsError::InvalidParameter(
                    "externalKeyId is only for keys of EXTERNAL vaults".into(),
                ))
            }
            (None, None) => None,
        };
        self.ctx.mutate(principal, "CreateKey", subject, |txn, now, subject| {
            self.create_key_in(txn, now, &req, external.as_ref(), &Material::Generate, subject)
        })
    }

    /// Bring your own key: creates a key whose first version is `imported` material (origin
    /// EXTERNAL). Keys of EXTERNAL vaults take their versions from the key manager instead.
    pub(crate) fn import_key(&self, principal: &Principal, req: CreateKey, imported: Imported) -> Result<Key> {
        let subject = AuditSubject {
            vault_id: Some(req.vault_id.clone()),
            ..Default::default()
        };
        let vault = Vaults::new(self.ctx).get_vault(&req.vault_id)?;
        if vault.external_key_manager.is_some()
            || req.external_key_id.is_some()
            || req.protection_mode == Some(ProtectionMode::External)
        {
            return Err(KmsError::InvalidParameter(
                "key material cannot be imported into an EXTERNAL vault: its keys' versions come from the external key manager".into(),
            ));
        }
        let material = Material::Import(imported);
        self.ctx.mutate(principal, "ImportKey", subject, |txn, now, subject| {
            self.create_key_in(txn, now, &req, None, &material, subject)
        })
    }

    pub(crate) fn create_key_in(
        &self,
        txn: &WriteTxn,
        now: Timestamp,
        req: &CreateKey,
        external: Option<&(ExternalKeyManager, String, ExternalKeyState)>,
        material: &Material,
        subject: &mut AuditSubject,
    ) -> Result<Key> {
        check_name(&req.display_name)?;
        let spec = req.key_shape.as_ref().map_or(Ok(KeySpec::AES_256), KeyShape::spec)?;
        let vault = txn.vault(&req.vault_id)?;
        if vault.lifecycle_state != VaultState::Active {
            return Err(KmsError::IncorrectState(format!(
                "vault {} is {:?}; keys can only be created in an ACTIVE vault",
                vault.id, vault.lifecycle_state
            )));
        }
        let compartment_id = req
            .compartment_id
            .clone()
            .unwrap_or_else(|| vault.compartment_id.clone());
        Vaults::active_compartment(txn, &compartment_id)?;
        if let Some(days) = req.auto_rotation_interval_days {
            check_rotation_interval(days)?;
        }
        let default_mode = if external.is_some() {
            ProtectionMode::External
        } else {
            ProtectionMode::Software
        };
        let mode = req.protection_mode.unwrap_or(default_mode);
        if (mode == ProtectionMode::External) != external.is_some() {
            return Err(KmsError::InvalidParameter(
                "EXTERNAL keys, and only they, live in EXTERNAL vaults".into(),
            ));
        }
        let backend = self.ctx.protection(mode)?;
        let key_id = Ocid::generate(ResourceType::Key, self.ctx.region());
        let owner = VersionOwner {
            key_id: &key_id,
            vault_id: &vault.id,
            compartment_id: &compartment_id,
        };
        let version = match external {
            None => self.add_version(txn, backend.as_ref(), spec, &owner, now, false, material)?,
            Some(_) if spec != KeySpec::AES_256 => {
                return Err(KmsError::InvalidParameter(format!(
                    "EXTERNAL keys are AES-256 (as in OCI), not {spec}"
                )))
            }
            Some(external) => self.add_external_versions(txn, now, &owner, external, &[])?.1,
        };
        let key = Key {
            id: key_id.clone(),
            compartment_id,
            vault_id: vault.id.clone(),
            display_name: req.display_name.clone(),
            key_shape: spec.shape(),
            protection_mode: mode,
            lifecycle_state: KeyState::Enabled,
            current_key_version: version.id.clone(),
            time_created: now,
            time_of_deletion: None,
            is_auto_rotation_enabled: req.auto_rotation_interval_days.is_some() && external.is_none(),
            auto_key_rotation_details: req
                .auto_rotation_interval_days
                .filter(|_| external.is_none())
                .map(|d| auto_rotation_details(d, now)),
            freeform_tags: req.freeform_tags.clone(),
            defined_tags: DefinedTags::new(),
            external_key_id: external.map(|(_, id, _)| id.clone()),
            replication_id: None,
            is_replica: false,
            restored_from_key_id: None,
        };
        subject.key_id = Some(key.id.clone());
        subject.key_version_id = Some(version.id.clone());
        txn.put_key(&key)?;
        Ok(key)
    }

    /// A key by id.
    pub(crate) fn get_key(&self, id: &Ocid) -> Result<Key> {
        self.ctx.read()?.key(id)
    }

    /// Keys, oldest first; filtered by vault and compartment when given.
    pub(crate) fn list_keys(&self, vault: Option<&Ocid>, compartment: Option<&Ocid>) -> Result<Vec<Key>> {
        let keys = self.ctx.read()?.keys()?;
        Ok(keys
            .into_iter()
            .filter(|k| vault.is_none_or(|v| &k.vault_id == v) && compartment.is_none_or(|c| &k.compartment_id == c))
            .collect())
    }

    /// Loads a key for a management change, refusing keys that are gone or whose vault is
    /// not active.
    fn key_for_change(txn: &WriteTxn, id: &Ocid, subject: &mut AuditSubject) -> Result<Key> {
        let key = txn.key(id)?;
        subject.vault_id = Some(key.vault_id.clone());
        let vault = txn.vault(&key.vault_id)?;
        match vault.lifecycle_state {
            VaultState::Active => {}
            VaultState::Deleted => return Err(KmsError::VaultDeleted(vault.id.to_string())),
            other => {
                return Err(KmsError::IncorrectState(format!(
                    "key {id} is in vault {} which is {other:?}",
                    vault.id
                )));
            }
        }
        if key.lifecycle_state == KeyState::Deleted {
            return Err(KmsError::IncorrectState(format!("key {id} has been deleted")));
        }
        Ok(key)
    }

    /// Renames, retags or changes auto-rotation of a key.
    pub(crate) fn update_key(&self, principal: &Principal, id: &Ocid, update: UpdateResource) -> Result<Key> {
        let subject = AuditSubject {
            key_id: Some(id.clone()),
            ..Default::default()
        };
        self.ctx.mutate(principal, "UpdateKey", subject, |txn, _, subject| {
            let mut key = Self::key_for_change(txn, id, subject)?;
            if !matches!(key.lifecycle_state, KeyState::Enabled | KeyState::Disabled) {
                return Err(KmsError::IncorrectState(format!(
                    "key {id} is {:?} and cannot be updated",
                    key.lifecycle_state
                )));
            }
            if let Some(name) = &update.display_name {
                check_name(name)?;
                key.display_name = name.clone();
            }
            if let Some(tags) = &update.freeform_tags {
                key.freeform_tags = tags.clone();
            }
            match update.auto_rotation_interval_days {
                None => {}
                Some(None) => {
                    key.is_auto_rotation_enabled = false;
                }
                Some(Some(days)) => {
                    check_rotation_interval(days)?;
                    let current = txn.key_version(&key.id, &key.current_key_version)?;
                    let mut details = auto_rotation_details(days, current.time_created);
                    if let Some(old) = &key.auto_key_rotation_details {
                        details.time_of_last_rotation = old.time_of_last_rotation;
                        details.last_rotation_status = old.last_rotation_status.clone();
                        details.last_rotation_message = old.last_rotation_message.clone();
                    }
                    key.is_auto_rotation_enabled = true;
                    key.auto_key_rotation_details = Some(details);
                }
            }
            txn.put_key(&key)?;
            Ok(key)
        })
    }

    fn set_key_state(&self, principal: &Principal, id: &Ocid, op: &str, from: KeyState, to: KeyState) -> Result<Key> {
        let subject = AuditSubject {
            key_id: Some(id.clone()),
            ..Default::default()
        };
        self.ctx.mutate(principal, op, subject, |txn, _, subject| {
            let mut key = Self::key_for_change(txn, id, subject)?;
            if key.lifecycle_state != from {
                return Err(KmsError::IncorrectState(format!(
                    "key {id} is {:?}, not {from:?}",
                    key.lifecycle_state
                )));
            }
            key.lifecycle_state = to;
            txn.put_key(&key)?;
            Ok(key)
        })
    }

    /// Enables a disabled key.
    pub(crate) fn enable_key(&self, principal: &Principal, id: &Ocid) -> Result<Key> {
        self.set_key_state(principal, id, "EnableKey", KeyState::Disabled, KeyState::Enabled)
    }

    /// Disables a key: every encrypt and decrypt under it is refused until it is enabled.
    pub(crate) fn disable_key(&self, principal: &Principal, id: &Ocid) -> Result<Key> {
        self.set_key_state(principal, id, "DisableKey", KeyState::Enabled, KeyState::Disabled)
    }

    /// Schedules a key's deletion 7–30 days ahead; it is unusable until cancelled.
    pub(crate) fn schedule_key_deletion(&self, principal: &Principal, id: &Ocid, at: Option<Timestamp>) -> Result<Key> {
        let subject = AuditSubject {
            key_id: Some(id.clone()),
            ..Default::default()
        };
        self.ctx
            .mutate(principal, "ScheduleKeyDeletion", subject, |txn, now, subject| {
                let mut key = Self::key_for_change(txn, id, subject)?;
                schedule_deletion(&mut key, now, at)?;
                txn.put_key(&key)?;
                Ok(key)
            })
    }

    /// Cancels a scheduled key deletion; the key comes back ENABLED.
    pub(crate) fn cancel_key_deletion(&self, principal: &Principal, id: &Ocid) -> Result<Key> {
        let subject = AuditSubject {
            key_id: Some(id.clone()),
            ..Default::default()
        };
        self.ctx
            .mutate(principal, "CancelKeyDeletion", subject, |txn, _, subject| {
                let mut key = Self::key_for_change(txn, id, subject)?;
                cancel_deletion(&mut key)?;
                txn.put_key(&key)?;
                Ok(key)
            })
    }

    // ----- key versions -----

    /// Rotates a key: creates a new version that becomes primary. Older versions keep
    /// decrypting but never encrypt again.
    pub(crate) fn create_key_version(&self, principal: &Principal, key_id: &Ocid) -> Result<KeyVersion> {
        let subject = AuditSubject {
            key_id: Some(key_id.clone()),
            ..Default::default()
        };
        self.ctx
            .mutate(principal, "CreateKeyVersion", subject, |txn, now, subject| {
                let version = self.rotate_in(txn, now, key_id, false, &Material::Generate, subject)?;
                Ok(version)
            })
    }

    /// Bring your own key: rotates a key to a new version made of `imported` material (origin
    /// EXTERNAL), which becomes the current version.
    pub(crate) fn import_key_version(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        imported: Imported,
    ) -> Result<KeyVersion> {
        let subject = AuditSubject {
            key_id: Some(key_id.clone()),
            ..Default::default()
        };
        let material = Material::Import(imported);
        self.ctx
            .mutate(principal, "ImportKeyVersion", subject, |txn, now, subject| {
                self.rotate_in(txn, now, key_id, false, &material, subject)
            })
    }

    /// Picks up the versions an EXTERNAL key gained in its key manager (each becomes a key
    /// version here, the manager's current one the primary). Returns the new versions.
    pub(crate) fn refresh_external_key(&self, principal: &Principal, key_id: &Ocid) -> Result<Vec<KeyVersion>> {
        let key = self.get_key(key_id)?;
        let (Some(external_key_id), Some(manager)) = (
            key.external_key_id.clone(),
            Vaults::new(self.ctx).get_vault(&key.vault_id)?.external_key_manager,
        ) else {
            return Err(KmsError::InvalidParameter(format!(
                "key {key_id} is not EXTERNAL; its versions are made here"
            )));
        };
        let state = self
            .ctx
            .protection(ProtectionMode::External)?
            .external_key(&manager, &external_key_id)?;
        let versions = self.list_key_versions(key_id)?;
        let here = |external: &str| {
            versions
                .iter()
                .find(|v| v.external_key_version_id.as_deref() == Some(external))
        };
        let up_to_date = state.version_ids.iter().all(|v| here(v).is_some())
            && here(&state.current_version_id).is_some_and(|v| v.id == key.current_key_version);
        if up_to_date {
            return Ok(Vec::new());
        }
        let subject = AuditSubject {
            key_id: Some(key_id.clone()),
            ..Default::default()
        };
        self.ctx
            .mutate(principal, "RefreshExternalKey", subject, |txn, now, _| {
                let mut key = txn.key(key_id)?;
                let existing = txn.key_versions(key_id)?;
                let owner = VersionOwner {
                    key_id: &key.id,
                    vault_id: &key.vault_id,
                    compartment_id: &key.compartment_id,
                };
                let external = (manager.clone(), external_key_id.clone(), state.clone());
                let (added, current) = self.add_external_versions(txn, now, &owner, &external, &existing)?;
                key.current_key_version = current.id;
                txn.put_key(&key)?;
                Ok(added)
            })
    }

    /// A new ENABLED version of `owner`'s key, made now; `external_key_version_id` for
    /// versions of EXTERNAL keys.
    fn new_version(
        &self,
        owner: &VersionOwner<'_>,
        now: Timestamp,
        automatic: bool,
        external_key_version_id: Option<String>,
    ) -> KeyVersion {
        KeyVersion {
            id: Ocid::generate(ResourceType::KeyVersion, self.ctx.region()),
            key_id: owner.key_id.clone(),
            vault_id: owner.vault_id.clone(),
            compartment_id: owner.compartment_id.clone(),
            lifecycle_state: KeyVersionState::Enabled,
            origin: if external_key_version_id.is_some() {
                KeyVersionOrigin::External
            } else {
                KeyVersionOrigin::Internal
            },
            time_created: now,
            time_of_deletion: None,
            is_auto_rotated: automatic,
            external_key_version_id,
            public_key: None,
            replication_id: None,
            is_replica: false,
            restored_from_key_version_id: None,
        }
    }

    /// Makes and stores a new version of shape `spec` for `owner`'s key with `backend`: its
    /// material generated there or imported (sealed as the backend keeps it), its public key
    /// on the record for RSA and ECDSA.
    #[allow(clippy::too_many_arguments)]
    fn add_version(
        &self,
        txn: &WriteTxn,
        backend: &dyn KeyProtection,
        spec: KeySpec,
        owner: &VersionOwner<'_>,
        now: Timestamp,
        automatic: bool,
        material: &Material,
    ) -> Result<KeyVersion> {
        let mut version = self.new_version(owner, now, automatic, None);
        let (stored, public_key_der) = match material {
            Material::Generate => {
                let made = backend.create_material_for(&version.id, spec)?;
                (made.stored, made.public_key_der)
            }
            Material::Import(imported) => {
                version.origin = KeyVersionOrigin::External;
                let secret = ExportedMaterial::Secret(imported.secret_for(spec)?);
                (
                    backend.import_material(&version.id, &secret)?,
                    imported.public_key_der(),
                )
            }
        };
        version.public_key = public_key_der.as_deref().map(public_key_pem);
        txn.put_key_material(&version.id, &stored)?;
        txn.put_key_version(&version)?;
        Ok(version)
    }

    /// Records each version the key manager lists that `existing` lacks, as a key version
    /// whose stored material is only a reference. Returns the added versions and the one the
    /// manager calls current (added or existing).
    fn add_external_versions(
        &self,
        txn: &WriteTxn,
        now: Timestamp,
        owner: &VersionOwner<'_>,
        (manager, external_key_id, state): &(ExternalKeyManager, String, ExternalKeyState),
        existing: &[KeyVersion],
    ) -> Result<(Vec<KeyVersion>, KeyVersion)> {
        let known = |versions: &[KeyVersion], external: &str| {
            versions
                .iter()
                .find(|v| v.external_key_version_id.as_deref() == Some(external))
                .cloned()
        };
        let mut added = Vec::new();
        for external_version in &state.version_ids {
            if known(existing, external_version).is_some() {
                continue;
            }
            let version = self.new_version(owner, now, false, Some(external_version.clone()));
            let reference = ExternalVersionRef {
                endpoint: manager.endpoint.clone(),
                key_id: external_key_id.clone(),
                version_id: external_version.clone(),
            };
            txn.put_key_material(&version.id, &reference.to_bytes())?;
            txn.put_key_version(&version)?;
            added.push(version);
        }
        let current = known(existing, &state.current_version_id)
            .or_else(|| known(&added, &state.current_version_id))
            .ok_or_else(|| {
                KmsError::Protection(format!(
                    "the external key manager names {} as the current version of {external_key_id} but does not list it",
                    state.current_version_id
                ))
            })?;
        Ok((added, current))
    }

    /// [`Kms::refresh_external_key`](crate::Kms::refresh_external_key) for every usable EXTERNAL key; the number of new
    /// versions, and the keys whose key manager could not be asked (with why).
    pub(crate) fn refresh_external_keys(&self, principal: &Principal) -> Result<(usize, Vec<(Ocid, KmsError)>)> {
        let mut added = 0;
        let mut failed = Vec::new();
        let replicas: std::collections::HashSet<Ocid> = Vaults::new(self.ctx)
            .list_vaults(None)?
            .into_iter()
            .filter(|v| matches!(v.replication, Some(VaultReplication::Replica { .. })))
            .map(|v| v.id)
            .collect();
        for key in self.list_keys(None, None)? {
            // A replica's keys follow its primary region, which refreshes them.
            if key.protection_mode != ProtectionMode::External
                || key.lifecycle_state != KeyState::Enabled
                || replicas.contains(&key.vault_id)
            {
                continue;
            }
            match self.refresh_external_key(principal, &key.id) {
                Ok(new) => added += new.len(),
                Err(e) => failed.push((key.id, e)),
            }
        }
        Ok((added, failed))
    }

    /// The rotation itself, shared by manual and automatic rotation.
    pub(crate) fn rotate_in(
        &self,
        txn: &WriteTxn,
        now: Timestamp,
        key_id: &Ocid,
        automatic: bool,
        material: &Material,
        subject: &mut AuditSubject,
    ) -> Result<KeyVersion> {
        let mut key = Self::key_for_change(txn, key_id, subject)?;
        if key.lifecycle_state != KeyState::Enabled {
            return Err(KmsError::IncorrectState(format!(
                "key {key_id} is {:?}; only an ENABLED key can be rotated",
                key.lifecycle_state
            )));
        }
        if key.protection_mode == ProtectionMode::External {
            return Err(KmsError::IncorrectState(format!(
                "key {key_id} is EXTERNAL: rotate it in its external key manager; sealstore picks up the new version (`sealstore kms key refresh`, and every minute under `serve`)"
            )));
        }
        let backend = self.ctx.protection(key.protection_mode)?;
        let owner = VersionOwner {
            key_id: &key.id,
            vault_id: &key.vault_id,
            compartment_id: &key.compartment_id,
        };
        let spec = key.key_shape.spec()?;
        let version = self.add_version(txn, backend.as_ref(), spec, &owner, now, automatic, material)?;
        subject.key_version_id = Some(version.id.clone());
        key.current_key_version = version.id.clone();
        if let Some(details) = key.auto_key_rotation_details.as_mut() {
            details.time_of_next_rotation = Some(now.plus_days(details.rotation_interval_in_days.into()));
            if automatic {
                details.time_of_last_rotation = Some(now);
                details.last_rotation_status = Some("SUCCEEDED".into());
                details.last_rotation_message = None;
            }
        }
        txn.put_key(&key)?;
        Ok(version)
    }

    /// A version of a key.
    pub(crate) fn get_key_version(&self, key_id: &Ocid, version_id: &Ocid) -> Result<KeyVersion> {
        self.ctx.read()?.key_version(key_id, version_id)
    }

    /// Every version of a key, oldest first.
    pub(crate) fn list_key_versions(&self, key_id: &Ocid) -> Result<Vec<KeyVersion>> {
        let txn = self.ctx.read()?;
        txn.key(key_id)?;
        txn.key_versions(key_id)
    }

    fn set_version_state(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        version_id: &Ocid,
        op: &str,
        to: KeyVersionState,
    ) -> Result<KeyVersion> {
        let subject = AuditSubject {
            key_id: Some(key_id.clone()),
            key_version_id: Some(version_id.clone()),
            ..Default::default()
        };
        self.ctx.mutate(principal, op, subject, |txn, _, subject| {
            let key = Self::key_for_change(txn, key_id, subject)?;
            let mut version = txn.key_version(key_id, version_id)?;
            let from = match to {
                KeyVersionState::Disabled => KeyVersionState::Enabled,
                _ => KeyVersionState::Disabled,
            };
            if version.lifecycle_state != from {
                return Err(KmsError::IncorrectState(format!("key version {version_id} is {:?}, not {from:?}", version.lifecycle_state)));
            }
            if to == KeyVersionState::Disabled && key.current_key_version == *version_id {
                return Err(KmsError::IncorrectState(format!(
                    "key version {version_id} is the primary version of key {key_id}; rotate the key first (sealstore kms key rotate {key_id})"
                )));
            }
            version.lifecycle_state = to;
            txn.put_key_version(&version)?;
            Ok(version)
        })
    }

    /// Schedules an old version's deletion 7–30 days ahead (30 when `at` is absent): until
    /// then its ciphertexts stop decrypting and the deletion can be cancelled; at the deadline
    /// the scheduler destroys its material. The primary version cannot be deleted, nor a
    /// version that registered inventories say still protects data (re-encrypt it first).
    pub(crate) fn schedule_key_version_deletion(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        version_id: &Ocid,
        at: Option<Timestamp>,
    ) -> Result<KeyVersion> {
        let protected = self.ctx.data_protected_by(version_id)?;
        let subject = AuditSubject {
            key_id: Some(key_id.clone()),
            key_version_id: Some(version_id.clone()),
            ..Default::default()
        };
        self.ctx
            .mutate(principal, "ScheduleKeyVersionDeletion", subject, |txn, now, subject| {
                let key = Self::key_for_change(txn, key_id, subject)?;
                let mut version = txn.key_version(key_id, version_id)?;
                // Checked first; nothing is stored unless every check below passes.
                schedule_deletion(&mut version, now, at)?;
                if key.current_key_version == *version_id {
                    return Err(KmsError::IncorrectState(format!(
                        "key version {version_id} is the primary version of key {key_id}; rotate the key first"
                    )));
                }
                if protected > 0 {
                    return Err(KmsError::IncorrectState(format!(
                        "key version {version_id} still protects {protected} object(s) or volume(s); re-encrypt them \
                     first (sealstore reencrypt, sealstore volume reencrypt)"
                    )));
                }
                txn.put_key_version(&version)?;
                Ok(version)
            })
    }

    /// Cancels a version's scheduled deletion; it comes back ENABLED.
    pub(crate) fn cancel_key_version_deletion(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        version_id: &Ocid,
    ) -> Result<KeyVersion> {
        let subject = AuditSubject {
            key_id: Some(key_id.clone()),
            key_version_id: Some(version_id.clone()),
            ..Default::default()
        };
        self.ctx
            .mutate(principal, "CancelKeyVersionDeletion", subject, |txn, _, subject| {
                Self::key_for_change(txn, key_id, subject)?;
                let mut version = txn.key_version(key_id, version_id)?;
                cancel_deletion(&mut version)?;
                txn.put_key_version(&version)?;
                Ok(version)
            })
    }

    /// Disables an old version (after a suspected compromise): ciphertexts made by it stop
    /// decrypting until it is enabled again. The primary version cannot be disabled, and a
    /// version that registered inventories say still protects data is refused unless `force`
    /// (re-encrypt that data first: `sealstore reencrypt`).
    pub(crate) fn disable_key_version(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        version_id: &Ocid,
        force: bool,
    ) -> Result<KeyVersion> {
        if !force {
            let protected = self.ctx.data_protected_by(version_id)?;
            if protected > 0 {
                let subject = AuditSubject {
                    key_id: Some(key_id.clone()),
                    key_version_id: Some(version_id.clone()),
                    ..Default::default()
                };
                let err = KmsError::IncorrectState(format!(
                    "key version {version_id} still protects {protected} object(s) or volume(s); re-encrypt them \
                     first (sealstore reencrypt, sealstore volume reencrypt) or force it, making them unreadable \
                     while the version is disabled"
                ));
                self.ctx.audit_only(
                    principal,
                    "DisableKeyVersion",
                    &subject,
                    Err(err.to_string()),
                    Durability::Immediate,
                )?;
                return Err(err);
            }
        }
        self.set_version_state(
            principal,
            key_id,
            version_id,
            "DisableKeyVersion",
            KeyVersionState::Disabled,
        )
    }

    /// Enables a disabled version again.
    pub(crate) fn enable_key_version(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        version_id: &Ocid,
    ) -> Result<KeyVersion> {
        self.set_version_state(
            principal,
            key_id,
            version_id,
            "EnableKeyVersion",
            KeyVersionState::Enabled,
        )
    }
}
