//! Time-driven work: automatic rotation, purge of vaults and keys past their deletion time,
//! and the key-age compliance report (rule OCI-KMS-001 / CIS OCI 4.16).

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::audit::{self, AuditSubject, Principal};
use crate::context::Context;
use crate::error::Result;
use crate::ids::Ocid;
use crate::keys::{Keys, Material};
use crate::model::replication::VaultReplication;
use crate::model::{Key, KeyState, KeyVersion, KeyVersionOrigin, KeyVersionState, ProtectionMode, VaultState};
use crate::store::WriteTxn;
use crate::time::Timestamp;

/// Default maximum age of a key's primary version before the compliance report flags it.
pub const DEFAULT_MAX_KEY_AGE_DAYS: i64 = 365;

/// What one scheduler pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerReport {
    /// Keys rotated automatically (key id, new version id).
    pub rotated: Vec<(Ocid, Ocid)>,
    /// Vaults deleted with all their keys.
    pub purged_vaults: Vec<Ocid>,
    /// Keys deleted on their own schedule.
    pub purged_keys: Vec<Ocid>,
    /// Key versions deleted on their own schedule (key id, version id).
    pub purged_key_versions: Vec<(Ocid, Ocid)>,
}

/// One key that breaks the key-age rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceFinding {
    /// The key.
    pub key_id: Ocid,
    /// Its name.
    pub display_name: String,
    /// Its vault.
    pub vault_id: Ocid,
    /// Its primary version.
    pub current_key_version: Ocid,
    /// When the primary version was created (the last rotation).
    pub last_rotated: Timestamp,
    /// Age of the primary version in whole days.
    pub age_days: i64,
    /// The command that fixes it.
    pub remediation: String,
}

/// The compliance report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceReport {
    /// The rule checked.
    pub rule: String,
    /// Oldest allowed primary version, in days.
    pub max_age_days: i64,
    /// Enabled keys checked.
    pub keys_checked: usize,
    /// Keys that break the rule.
    pub findings: Vec<ComplianceFinding>,
}

/// Time-driven work and the compliance report over a [`Context`].
pub(crate) struct Scheduler<'a> {
    ctx: &'a Context,
}

impl<'a> Scheduler<'a> {
    pub(crate) fn new(ctx: &'a Context) -> Self {
        Scheduler { ctx }
    }

    /// Lists every enabled key (in an active vault) whose primary version is older than
    /// `max_age_days`.
    pub(crate) fn compliance_report(&self, max_age_days: i64) -> Result<ComplianceReport> {
        let txn = self.ctx.read()?;
        let now = self.ctx.now();
        let mut checked = 0;
        let mut findings = Vec::new();
        for key in txn.keys()? {
            if key.lifecycle_state != KeyState::Enabled
                || txn.vault(&key.vault_id)?.lifecycle_state != VaultState::Active
            {
                continue;
            }
            checked += 1;
            let current = txn.key_version(&key.id, &key.current_key_version)?;
            let age_days = now.days_since(current.time_created);
            if age_days > max_age_days
                || (age_days == max_age_days && now > current.time_created.plus_days(max_age_days))
            {
                let remediation = match (key.protection_mode, current.origin) {
                    (ProtectionMode::External, _) => format!(
                        "rotate key {} in its external key manager, then `sealstore kms key refresh {}`",
                        key.external_key_id.as_deref().unwrap_or("?"),
                        key.id
                    ),
                    // Brought by its owner: the owner brings the next version too (or lets
                    // sealstore make one).
                    (_, KeyVersionOrigin::External) => format!(
                        "sealstore kms key import-version {} --material NEW-KEY-FILE (or `sealstore kms key rotate {}`)",
                        key.id, key.id
                    ),
                    _ => format!("sealstore kms key rotate {}", key.id),
                };
                findings.push(ComplianceFinding {
                    remediation,
                    key_id: key.id,
                    display_name: key.display_name,
                    vault_id: key.vault_id,
                    current_key_version: key.current_key_version,
                    last_rotated: current.time_created,
                    age_days,
                });
            }
        }
        findings.sort_by(|a, b| b.age_days.cmp(&a.age_days).then_with(|| a.key_id.cmp(&b.key_id)));
        Ok(ComplianceReport {
            rule: "OCI-KMS-001 (CIS OCI 4.16)".into(),
            max_age_days,
            keys_checked: checked,
            findings,
        })
    }

    /// One scheduler pass: rotates keys whose auto-rotation is due and purges vaults and keys
    /// whose deletion time has passed. Safe to call at any frequency.
    pub(crate) fn run_scheduled(&self) -> Result<SchedulerReport> {
        let mut report = SchedulerReport::default();
        let now = self.ctx.now();
        let (vaults, keys) = {
            let txn = self.ctx.read()?;
            (txn.vaults()?, txn.keys()?)
        };
        // Replicas change only as their primary region says.
        let replicas: std::collections::HashSet<Ocid> = vaults
            .iter()
            .filter(|v| matches!(v.replication, Some(VaultReplication::Replica { .. })))
            .map(|v| v.id.clone())
            .collect();
        let vaults: Vec<_> = vaults.into_iter().filter(|v| !replicas.contains(&v.id)).collect();
        let keys: Vec<_> = keys.into_iter().filter(|k| !replicas.contains(&k.vault_id)).collect();
        let principal = Principal::scheduler();

        for vault in vaults.iter().filter(|v| {
            v.lifecycle_state == VaultState::PendingDeletion && v.time_of_deletion.is_some_and(|t| t <= now)
        }) {
            let subject = AuditSubject {
                vault_id: Some(vault.id.clone()),
                ..Default::default()
            };
            let purged = self
                .ctx
                .mutate_if_needed(&principal, "PurgeVault", subject, |txn, _, _| {
                    let mut vault = txn.vault(&vault.id)?;
                    if vault.lifecycle_state != VaultState::PendingDeletion {
                        return Ok(None); // cancelled meanwhile
                    }
                    for key in txn.keys()?.into_iter().filter(|k| k.vault_id == vault.id) {
                        self.destroy_key_in(txn, key)?;
                    }
                    vault.lifecycle_state = VaultState::Deleted;
                    txn.put_vault(&vault)?;
                    Ok(Some(()))
                })?;
            if purged.is_some() {
                info!(vault = %vault.id, "vault deleted and its keys destroyed");
                report.purged_vaults.push(vault.id.clone());
            }
        }

        for key in keys
            .iter()
            .filter(|k| k.lifecycle_state == KeyState::PendingDeletion && k.time_of_deletion.is_some_and(|t| t <= now))
        {
            let subject = AuditSubject {
                vault_id: Some(key.vault_id.clone()),
                key_id: Some(key.id.clone()),
                ..Default::default()
            };
            let purged = self
                .ctx
                .mutate_if_needed(&principal, "PurgeKey", subject, |txn, _, _| {
                    let key = txn.key(&key.id)?;
                    if key.lifecycle_state != KeyState::PendingDeletion {
                        return Ok(None); // cancelled, or destroyed with its vault
                    }
                    self.destroy_key_in(txn, key).map(Some)
                })?;
            if purged.is_some() {
                info!(key = %key.id, "key deleted and its material destroyed");
                report.purged_keys.push(key.id.clone());
            }
        }

        for key in keys.iter().filter(|k| k.lifecycle_state != KeyState::Deleted) {
            let due: Vec<KeyVersion> = self
                .ctx
                .read()?
                .key_versions(&key.id)?
                .into_iter()
                .filter(|v| {
                    v.lifecycle_state == KeyVersionState::PendingDeletion
                        && v.time_of_deletion.is_some_and(|t| t <= now)
                })
                .collect();
            for version in due {
                let subject = AuditSubject {
                    vault_id: Some(key.vault_id.clone()),
                    key_id: Some(key.id.clone()),
                    key_version_id: Some(version.id.clone()),
                    ..Default::default()
                };
                let purged = self
                    .ctx
                    .mutate_if_needed(&principal, "PurgeKeyVersion", subject, |txn, _, _| {
                        let mut version = txn.key_version(&key.id, &version.id)?;
                        if version.lifecycle_state != KeyVersionState::PendingDeletion {
                            return Ok(None); // cancelled meanwhile
                        }
                        if let (Ok(b), Some(material)) =
                            (self.ctx.protection(key.protection_mode), txn.key_material(&version.id)?)
                        {
                            b.destroy(&version.id, &material)?;
                        }
                        txn.delete_key_material(&version.id)?;
                        version.lifecycle_state = KeyVersionState::Deleted;
                        txn.put_key_version(&version)?;
                        Ok(Some(()))
                    })?;
                if purged.is_some() {
                    info!(key = %key.id, version = %version.id, "key version deleted and its material destroyed");
                    report.purged_key_versions.push((key.id.clone(), version.id.clone()));
                }
            }
        }

        for key in keys.iter().filter(|k| rotation_due(k, now)) {
            let subject = AuditSubject {
                vault_id: Some(key.vault_id.clone()),
                key_id: Some(key.id.clone()),
                ..Default::default()
            };
            match self
                .ctx
                .mutate_if_needed(&principal, "AutoRotateKey", subject, |txn, now, subject| {
                    if !rotation_due(&txn.key(&key.id)?, now) {
                        return Ok(None); // rotated, disabled or destroyed meanwhile
                    }
                    // A key whose vault is no longer active is skipped, not failed.
                    if txn.vault(&key.vault_id)?.lifecycle_state != VaultState::Active {
                        return Ok(None);
                    }
                    Keys::new(self.ctx)
                        .rotate_in(txn, now, &key.id, true, &Material::Generate, subject)
                        .map(Some)
                }) {
                Ok(Some(version)) => {
                    info!(key = %key.id, version = %version.id, "key rotated automatically");
                    report.rotated.push((key.id.clone(), version.id));
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(key = %key.id, error = %e, "automatic rotation failed");
                    self.record_rotation_failure(&key.id, &e.to_string())?;
                }
            }
        }
        Ok(report)
    }

    /// Marks every version of `key` deleted and destroys its material, in `txn`.
    fn destroy_key_in(&self, txn: &WriteTxn, mut key: Key) -> Result<()> {
        let backend = self.ctx.protection(key.protection_mode).ok();
        for mut version in txn.key_versions(&key.id)? {
            if let (Some(b), Some(material)) = (backend, txn.key_material(&version.id)?) {
                b.destroy(&version.id, &material)?;
            }
            txn.delete_key_material(&version.id)?;
            version.lifecycle_state = KeyVersionState::Deleted;
            txn.put_key_version(&version)?;
        }
        key.lifecycle_state = KeyState::Deleted;
        key.is_auto_rotation_enabled = false;
        txn.put_key(&key)
    }

    fn record_rotation_failure(&self, key_id: &Ocid, message: &str) -> Result<()> {
        let txn = self.ctx.write()?;
        let mut key = txn.key(key_id)?;
        if let Some(d) = key.auto_key_rotation_details.as_mut() {
            d.last_rotation_status = Some("FAILED".into());
            d.last_rotation_message = Some(message.to_owned());
        }
        txn.put_key(&key)?;
        let subject = AuditSubject {
            key_id: Some(key_id.clone()),
            ..Default::default()
        };
        audit::append(
            &txn,
            self.ctx.now(),
            &Principal::scheduler(),
            "RecordRotationFailure",
            &subject,
            Ok(()),
        )?;
        txn.commit()
    }
}

fn rotation_due(key: &Key, now: Timestamp) -> bool {
    key.lifecycle_state == KeyState::Enabled
        && key.is_auto_rotation_enabled
        && key
            .auto_key_rotation_details
            .as_ref()
            .and_then(|d| d.time_of_next_rotation)
            .is_some_and(|t| t <= now)
}
