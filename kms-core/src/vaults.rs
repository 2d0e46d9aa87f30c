//! Compartments (read) and vaults: create, update, and deletion scheduled 7–30 days ahead.

use serde::{Deserialize, Serialize};

use crate::audit::{AuditSubject, Principal};
use crate::context::Context;
use crate::error::{KmsError, Result};
use crate::ids::{Ocid, ResourceType};
use crate::lifecycle::{cancel_deletion, check_name, schedule_deletion};
use crate::model::*;
use crate::store::WriteTxn;
use crate::time::Timestamp;

/// Parameters of [`Kms::create_vault`](crate::Kms::create_vault).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateVault {
    /// Compartment; the tenancy when absent.
    pub compartment_id: Option<Ocid>,
    /// Name.
    pub display_name: String,
    /// Type; DEFAULT when absent.
    pub vault_type: Option<VaultType>,
    /// Tags.
    #[serde(default)]
    pub freeform_tags: FreeformTags,
    /// EXTERNAL vaults (required there): the external key manager and its vault.
    #[serde(default)]
    pub external_key_manager: Option<ExternalKeyManager>,
}

/// Changes made by [`Kms::update_vault`](crate::Kms::update_vault) / [`Kms::update_key`](crate::Kms::update_key); `None` leaves a field as is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateResource {
    /// New name.
    pub display_name: Option<String>,
    /// New tags (replacing the old ones).
    pub freeform_tags: Option<FreeformTags>,
    /// Keys only: `Some(Some(days))` turns auto-rotation on, `Some(None)` off.
    pub auto_rotation_interval_days: Option<Option<u32>>,
}

/// Vault management over a [`Context`].
pub(crate) struct Vaults<'a> {
    ctx: &'a Context,
}

impl<'a> Vaults<'a> {
    pub(crate) fn new(ctx: &'a Context) -> Self {
        Vaults { ctx }
    }

    // ----- compartments -----

    /// Every compartment, oldest (the tenancy) first.
    pub(crate) fn list_compartments(&self) -> Result<Vec<Compartment>> {
        // Insertion order: the tenancy, created with the data directory, comes first.
        self.ctx.read()?.compartments()
    }

    /// The compartment `id`, if it is ACTIVE.
    pub(crate) fn active_compartment(txn: &WriteTxn, id: &Ocid) -> Result<Compartment> {
        let c = txn.compartment(id)?;
        if c.lifecycle_state != CompartmentState::Active {
            return Err(KmsError::IncorrectState(format!("compartment {id} is not active")));
        }
        Ok(c)
    }

    // ----- vaults -----

    /// Creates a vault.
    pub(crate) fn create_vault(&self, principal: &Principal, req: CreateVault) -> Result<Vault> {
        self.ctx.mutate(
            principal,
            "CreateVault",
            AuditSubject::default(),
            |txn, now, subject| self.create_vault_in(txn, now, &req, subject),
        )
    }

    pub(crate) fn create_vault_in(
        &self,
        txn: &WriteTxn,
        now: Timestamp,
        req: &CreateVault,
        subject: &mut AuditSubject,
    ) -> Result<Vault> {
        check_name(&req.display_name)?;
        let compartment_id = req.compartment_id.clone().unwrap_or_else(|| self.ctx.tenancy_id());
        Self::active_compartment(txn, &compartment_id)?;
        let vault_type = req.vault_type.unwrap_or(VaultType::Default);
        let external_key_manager = match (vault_type, &req.external_key_manager) {
            (VaultType::External, Some(m)) => {
                self.ctx.protection(ProtectionMode::External)?;
                Some(m.clone())
            }
            (VaultType::External, None) => {
                return Err(KmsError::InvalidParameter(
                    "an EXTERNAL vault needs its external key manager's vault URL (externalKeyManagerMetadata.externalVaultEndpointUrl)".into(),
                ))
            }
            (_, Some(_)) => {
                return Err(KmsError::InvalidParameter(
                    "only EXTERNAL vaults have an external key manager".into(),
                ))
            }
            (_, None) => None,
        };
        let vault = Vault {
            id: Ocid::generate(ResourceType::Vault, self.ctx.region()),
            compartment_id,
            display_name: req.display_name.clone(),
            vault_type,
            lifecycle_state: VaultState::Active,
            time_created: now,
            time_of_deletion: None,
            freeform_tags: req.freeform_tags.clone(),
            defined_tags: DefinedTags::new(),
            external_key_manager,
            replication: None,
            replication_id: None,
            restored_from_vault_id: None,
        };
        subject.vault_id = Some(vault.id.clone());
        txn.put_vault(&vault)?;
        Ok(vault)
    }

    /// A vault by id.
    pub(crate) fn get_vault(&self, id: &Ocid) -> Result<Vault> {
        self.ctx.read()?.vault(id)
    }

    /// Vaults, oldest first; only those in `compartment` when given.
    pub(crate) fn list_vaults(&self, compartment: Option<&Ocid>) -> Result<Vec<Vault>> {
        let vaults = self.ctx.read()?.vaults()?;
        Ok(vaults
            .into_iter()
            .filter(|v| compartment.is_none_or(|c| &v.compartment_id == c))
            .collect())
    }

    /// Renames or retags a vault.
    pub(crate) fn update_vault(&self, principal: &Principal, id: &Ocid, update: UpdateResource) -> Result<Vault> {
        let subject = AuditSubject {
            vault_id: Some(id.clone()),
            ..Default::default()
        };
        self.ctx.mutate(principal, "UpdateVault", subject, |txn, _, _| {
            let mut vault = txn.vault(id)?;
            if vault.lifecycle_state != VaultState::Active {
                return Err(KmsError::IncorrectState(format!(
                    "vault {id} is {:?}; only an ACTIVE vault can be updated",
                    vault.lifecycle_state
                )));
            }
            if update.auto_rotation_interval_days.is_some() {
                return Err(KmsError::InvalidParameter(
                    "auto-rotation is a key setting, not a vault setting".into(),
                ));
            }
            if let Some(name) = &update.display_name {
                check_name(name)?;
                vault.display_name = name.clone();
            }
            if let Some(tags) = &update.freeform_tags {
                vault.freeform_tags = tags.clone();
            }
            txn.put_vault(&vault)?;
            Ok(vault)
        })
    }

    /// Schedules a vault's deletion 7–30 days ahead (30 when `at` is `None`). Its keys are
    /// unusable from now until the deletion is cancelled; at the deadline they are destroyed.
    pub(crate) fn schedule_vault_deletion(
        &self,
        principal: &Principal,
        id: &Ocid,
        at: Option<Timestamp>,
    ) -> Result<Vault> {
        let subject = AuditSubject {
            vault_id: Some(id.clone()),
            ..Default::default()
        };
        self.ctx
            .mutate(principal, "ScheduleVaultDeletion", subject, |txn, now, _| {
                let mut vault = txn.vault(id)?;
                schedule_deletion(&mut vault, now, at)?;
                txn.put_vault(&vault)?;
                Ok(vault)
            })
    }

    /// Cancels a scheduled vault deletion; its keys become usable again.
    pub(crate) fn cancel_vault_deletion(&self, principal: &Principal, id: &Ocid) -> Result<Vault> {
        let subject = AuditSubject {
            vault_id: Some(id.clone()),
            ..Default::default()
        };
        self.ctx.mutate(principal, "CancelVaultDeletion", subject, |txn, _, _| {
            let mut vault = txn.vault(id)?;
            cancel_deletion(&mut vault)?;
            txn.put_vault(&vault)?;
            Ok(vault)
        })
    }
}
