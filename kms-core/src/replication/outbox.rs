//! The replication side of every management change, inside its transaction: a replica
//! refuses management, and a change to a replicated vault queues an outbox entry per replica
//! region; [`OutboxSignal`] wakes the shipper after the commit.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::audit::AuditSubject;
use crate::model::replication::{replication_id, OutboxEntry, VaultReplication};
use crate::model::Vault;
use crate::store::WriteTxn;
use crate::time::Timestamp;

/// The vault a change touches, from its audit subject (its vault, or its key's).
pub(crate) fn changed_vault(txn: &WriteTxn, subject: &AuditSubject) -> Option<Ocid> {
    match (&subject.vault_id, &subject.key_id) {
        (Some(v), _) => Some(v.clone()),
        (None, Some(k)) => txn.key(k).ok().map(|k| k.vault_id),
        (None, None) => None,
    }
}

/// Refuses management of a replica: it is managed in its primary region.
pub(crate) fn refuse_if_replica(txn: &WriteTxn, subject: &AuditSubject) -> Result<()> {
    match changed_vault(txn, subject).and_then(|v| txn.vault(&v).ok()) {
        Some(vault) => refuse_replica(&vault),
        None => Ok(()),
    }
}

/// Refuses management of `vault` if it is a replica.
pub(crate) fn refuse_replica(vault: &Vault) -> Result<()> {
    if let Some(VaultReplication::Replica { primary_region, .. }) = &vault.replication {
        return Err(KmsError::IncorrectState(format!(
            "vault {} is a replica of region {primary_region}: manage it there (this region serves encrypt and decrypt only)",
            vault.id
        )));
    }
    Ok(())
}

/// Queues the change for every region `vault_id` is shipped to, in the change's own
/// transaction, and gives it a replication id: the vault's operation counter moves, and the
/// vault, and the key and key version the change names in `subject`, carry the new id.
/// Whether it queued anything.
pub(crate) fn queue(txn: &WriteTxn, now: Timestamp, vault_id: &Ocid, subject: &AuditSubject) -> Result<bool> {
    let Ok(mut vault) = txn.vault(vault_id) else {
        return Ok(false);
    };
    let Some(VaultReplication::Primary { replicas, operations }) = vault.replication.as_mut() else {
        return Ok(false);
    };
    let mut queued = false;
    for replica in replicas.iter().filter(|r| r.status.is_shipped_to()) {
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
        queued = true;
    }
    if !queued {
        return Ok(false);
    }
    *operations += 1;
    let id = replication_id(vault_id, *operations);
    vault.replication_id = Some(id.clone());
    txn.put_vault(&vault)?;
    let Some(key_id) = &subject.key_id else {
        // A vault-level operation (creating a replica, above all) replicates the keys and
        // versions that no operation of their own replicated yet: this id is theirs.
        for mut key in txn.keys()?.into_iter().filter(|k| k.vault_id == *vault_id) {
            for mut version in txn.key_versions(&key.id)? {
                if version.replication_id.is_none() {
                    version.replication_id = Some(id.clone());
                    txn.put_key_version(&version)?;
                }
            }
            if key.replication_id.is_none() {
                key.replication_id = Some(id.clone());
                txn.put_key(&key)?;
            }
        }
        return Ok(true);
    };
    if let Ok(mut key) = txn.key(key_id) {
        key.replication_id = Some(id.clone());
        txn.put_key(&key)?;
    }
    if let Some(version_id) = &subject.key_version_id {
        if let Ok(mut version) = txn.key_version(key_id, version_id) {
            version.replication_id = Some(id);
            txn.put_key_version(&version)?;
        }
    }
    Ok(true)
}

/// A counter that moves whenever work is queued, and a condition variable to wait on it.
#[derive(Debug, Default)]
pub(crate) struct OutboxSignal {
    generation: Mutex<u64>,
    queued: Condvar,
}

impl OutboxSignal {
    /// Moves the counter and wakes every waiter (after the commit that queued work, or to
    /// let a shipper see that it should stop).
    pub(crate) fn notify(&self) {
        *self.generation.lock().expect("replication signal poisoned") += 1;
        self.queued.notify_all();
    }

    /// The counter: read it before looking at the outbox, then [`OutboxSignal::wait`] returns
    /// at once if work came meanwhile.
    pub(crate) fn generation(&self) -> u64 {
        *self.generation.lock().expect("replication signal poisoned")
    }

    /// Waits up to `timeout` for work queued after generation `seen`.
    pub(crate) fn wait(&self, seen: u64, timeout: Duration) {
        let guard = self.generation.lock().expect("replication signal poisoned");
        let _ = self
            .queued
            .wait_timeout_while(guard, timeout, |generation| *generation == seen);
    }
}
