//! The group-commit writer for crypto calls' audit entries.
//!
//! Crypto calls change no state, so their entries need not be durable before the call
//! returns (see [`crate::store`]); writing each in a write transaction of its own would
//! serialize every concurrent call on the store's write lock. Instead an entry joins a queue,
//! and whichever caller finds no writer busy writes everything queued in one transaction. A
//! writer re-checks the queue after letting go, so no entry is left behind.
//!
//! In a server, `AuditWriter::run` (behind [`crate::Kms::run_audit_writer`]) does the writing on a thread of its own, so that crypto
//! calls never wait for the store at all.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use sealstore_meta::Durability;

use super::append_queued;
use crate::error::Result;
use crate::model::audit::{AuditSubject, Principal};
use crate::store::Store;
use crate::time::Timestamp;

/// Crypto-operation audit entries that may wait for a durable commit; the writer flushes by
/// itself after this many (and at least every second under [`crate::Kms::run_audit_writer`]).
pub(crate) const AUDIT_FLUSH_EVERY: u64 = 1024;
/// The background writer commits when this many entries wait…
const AUDIT_BATCH: usize = 256;
/// …or when the oldest has waited about this long.
const AUDIT_BATCH_WAIT: Duration = Duration::from_millis(10);
/// The background writer makes entries durable at least this often.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// A crypto call's audit entry waiting for the next group commit.
#[derive(Debug)]
pub(crate) struct PendingAudit {
    pub time: Timestamp,
    pub principal: Principal,
    pub operation: std::borrow::Cow<'static, str>,
    pub subject: AuditSubject,
    pub outcome: std::result::Result<(), String>,
    /// Set for a call refused before it ran: its entry says DENIED, with these.
    pub refused: Option<Refused>,
}

/// The name and source of a refused call's caller.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub principal_name: Option<String>,
    pub source: Option<String>,
}

/// Queued crypto-call audit entries and who writes them.
#[derive(Debug, Default)]
pub(crate) struct AuditWriter {
    /// Entries not yet written to the store.
    queue: Mutex<Vec<PendingAudit>>,
    /// Held by the one thread writing queued entries.
    writing: Mutex<()>,
    /// Entries committed but not yet fsynced.
    unflushed: AtomicU64,
    /// Set while [`AuditWriter::run`] runs: callers then only queue their entries.
    background: AtomicBool,
    /// Wakes the background writer (paired with `queue`).
    wake: Condvar,
}

impl AuditWriter {
    /// Queues an entry and, unless a background writer runs, writes the queue (group commit).
    pub(crate) fn queue(&self, store: &Store, entry: PendingAudit) -> Result<()> {
        {
            let mut queue = self.queue.lock().expect("audit queue poisoned");
            queue.push(entry);
            if self.background.load(Ordering::Acquire) {
                if queue.len() == 1 || queue.len() == AUDIT_BATCH {
                    self.wake.notify_one();
                }
                return Ok(());
            }
        }
        loop {
            let Ok(writing) = self.writing.try_lock() else {
                return Ok(()); // the busy writer will see our entry
            };
            self.write_queued(store, false)?;
            drop(writing);
            if self.queue.lock().expect("audit queue poisoned").is_empty() {
                break;
            }
        }
        if self.unflushed.load(Ordering::Relaxed) >= AUDIT_FLUSH_EVERY {
            self.flush(store)?;
        }
        Ok(())
    }

    /// Writes every queued entry in one transaction; the caller holds `writing`. With
    /// `durable`, the commit fsyncs, making every earlier entry durable too.
    fn write_queued(&self, store: &Store, durable: bool) -> Result<()> {
        let batch = std::mem::take(&mut *self.queue.lock().expect("audit queue poisoned"));
        if batch.is_empty() && !durable {
            return Ok(());
        }
        let txn = store.write(if durable {
            Durability::Immediate
        } else {
            Durability::Deferred
        })?;
        append_queued(&txn, &batch)?;
        txn.commit()?;
        if !durable {
            self.unflushed.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes entries as they are queued, on the calling thread, until `stop` is set (and the
    /// writer woken by [`AuditWriter::wake`]): one transaction per batch, made durable every
    /// [`AUDIT_FLUSH_EVERY`] entries or every second, and once more on the way out.
    pub(crate) fn run(&self, store: &Store, stop: &AtomicBool) -> Result<()> {
        self.background.store(true, Ordering::Release);
        let mut last_flush = Instant::now();
        let result = (|| loop {
            {
                let queue = self.queue.lock().expect("audit queue poisoned");
                let wait = FLUSH_INTERVAL.saturating_sub(last_flush.elapsed());
                let (queue, _) = self
                    .wake
                    .wait_timeout_while(queue, wait, |q| q.is_empty() && !stop.load(Ordering::Acquire))
                    .expect("audit queue poisoned");
                // Commits cost the same for one entry or hundreds: gather a batch.
                let _unused = self
                    .wake
                    .wait_timeout_while(queue, AUDIT_BATCH_WAIT, |q| {
                        q.len() < AUDIT_BATCH && !stop.load(Ordering::Acquire)
                    })
                    .expect("audit queue poisoned");
            }
            {
                let _writing = self.writing.lock().expect("audit writer poisoned");
                self.write_queued(store, false)?;
            }
            if stop.load(Ordering::Acquire)
                || self.unflushed.load(Ordering::Relaxed) >= AUDIT_FLUSH_EVERY
                || last_flush.elapsed() >= FLUSH_INTERVAL
            {
                self.flush(store)?;
                last_flush = Instant::now();
            }
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
        })();
        self.background.store(false, Ordering::Release);
        // Whatever was queued while stopping is written by the last caller or the next flush.
        result.and_then(|()| self.flush(store))
    }

    /// Whether [`AuditWriter::run`] runs.
    pub(crate) fn running(&self) -> bool {
        self.background.load(Ordering::Acquire)
    }

    /// Wakes [`AuditWriter::run`] (after setting its `stop`).
    pub(crate) fn wake(&self) {
        let _queue = self.queue.lock().expect("audit queue poisoned");
        self.wake.notify_all();
    }

    /// Makes every entry recorded so far durable (one fsync), if any is pending.
    pub(crate) fn flush(&self, store: &Store) -> Result<()> {
        let _writing = self.writing.lock().expect("audit writer poisoned");
        let queued = !self.queue.lock().expect("audit queue poisoned").is_empty();
        if self.unflushed.swap(0, Ordering::Relaxed) > 0 || queued {
            self.write_queued(store, true)?;
        }
        Ok(())
    }

    /// Writes queued entries (without fsync) so that a read of the log sees them.
    pub(crate) fn write_pending(&self, store: &Store) -> Result<()> {
        let _writing = self.writing.lock().expect("audit writer poisoned");
        self.write_queued(store, false)
    }
}
