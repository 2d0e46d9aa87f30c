//! The replication side of every management change, inside its transaction: a replica
//! refuses management, and a change to a replicated vault queues an outbox entry per replica
//! region; [`OutboxSignal`] wakes the shipper after the commit.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::audit::AuditSubject;
use crate::model::replication::{OutboxEntry, VaultReplication};
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
    if let Some(vault) = changed_vault(txn, subject).and_then(|v| txn.vault(&v).ok()) {
        if let Some(VaultReplication::Replica { primary_region, .. }) = &vault.replication {
            return Err(KmsError::IncorrectState(format!(
                "vault {} is a replica of region {primary_region}: manage it there (this region serves encrypt and decrypt only)",
                vault.id
            )));
        }
    }
    Ok(())
}

/// Queues `vault_id` for every region it replicates to, in the change's own transaction.
/// Whether it queued anything.
pub(crate) fn queue(txn: &WriteTxn, now: Timestamp, vault_id: &Ocid) -> Result<bool> {
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
