//! Per-object write locks: at most one writer per bucket/key at a time in a process.
//!
//! An object is written in two steps — the store's atomic replace, then its index entry — so
//! two writers of one key could leave the index describing the other's bytes; and the
//! re-encryption sweep, running inside the server, must not put an object's old bytes back
//! over a newer PUT. Every write (put, copy, multipart completion, delete) and every sweep
//! step holds its key's lock. Readers take none: they see the old or the new object whole.
//!
//! When the index is shared by a fleet of servers (PostgreSQL), the lock is also taken in the
//! index's engine, after this process's own: so one writer per key in the whole fleet, and
//! one connection per key being written in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::IndexError;
use super::index::ObjectIndex;

/// The lock table.
#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    held: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The shared index whose engine holds the fleet-wide locks, if it is shared.
    fleet: Option<Arc<ObjectIndex>>,
}

/// Holds one key's lock until dropped.
#[derive(Debug)]
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    name: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    fleet: Option<sealstore_meta::LockGuard>,
}

impl KeyLocks {
    /// Locks that are also taken fleet-wide when `index` is shared.
    pub(crate) fn for_index(index: &Arc<ObjectIndex>) -> KeyLocks {
        KeyLocks {
            held: Mutex::default(),
            fleet: index.is_shared().then(|| index.clone()),
        }
    }

    /// Waits for, and takes, the lock of `bucket`/`key` (fails only when a shared index
    /// cannot be reached).
    pub(crate) async fn lock(&self, bucket: &str, key: &str) -> Result<KeyGuard<'_>, IndexError> {
        let name = format!("{bucket}\0{key}");
        let mutex = self
            .held
            .lock()
            .expect("key lock table poisoned")
            .entry(name.clone())
            .or_default()
            .clone();
        let guard = mutex.lock_owned().await;
        // The guard's drop forgets the table entry should the fleet lock fail.
        let mut held = KeyGuard {
            locks: self,
            name,
            guard: Some(guard),
            fleet: None,
        };
        if let Some(index) = &self.fleet {
            let (index, name) = (index.clone(), held.name.clone());
            held.fleet = tokio::task::spawn_blocking(move || index.fleet_lock(&name))
                .await
                .map_err(|e| IndexError::GroupCommit(format!("taking a fleet lock: {e}")))??;
        }
        Ok(held)
    }

    /// Keys with a lock entry (held or waited for); for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held.lock().expect("key lock table poisoned").len()
    }

    /// Whether no key has a lock entry.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.fleet.take());
        drop(self.guard.take());
        let mut held = self.locks.held.lock().expect("key lock table poisoned");
        // Forget the entry when nobody else holds or waits for it (the table only has the
        // keys being written, not every key ever written).
        if held.get(&self.name).is_some_and(|m| Arc::strong_count(m) == 1) {
            held.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_writer_per_key_and_entries_are_forgotten() {
        let locks = Arc::new(KeyLocks::default());
        let first = locks.lock("b", "k").await.unwrap();
        // Another key is free.
        drop(locks.lock("b", "other").await.unwrap());
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock("b", "k").await.unwrap();
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a second writer of the key waits");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(locks.is_empty());
    }
}
