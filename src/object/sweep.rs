//! The re-encryption sweep (`sealstore reencrypt`): moves every object of a bucket off old
//! master key versions, or onto fresh data keys altogether.
//!
//! Objects are visited in key order from the index. After each object, its new index entry
//! and the sweep's checkpoint (the last key done) commit in one transaction; each object is
//! replaced atomically in the store. So a sweep killed at any moment resumes after the last
//! object it recorded, and at worst repeats one object, which is harmless.
//!
//! Each object is locked while it is rewritten (see [`super::locks`]), so a sweep can run in
//! the server beside S3 writes. Each object stays under its own master key (the bucket's
//! default may have changed since it was written). Objects under customer-provided keys
//! (SSE-C) are out of reach: only their owner can re-encrypt them, by copying them onto
//! themselves with the key. They are counted.

use object_store::ObjectStore;
use serde::Serialize;

use super::encryption::Encryption;
use super::index::ObjectEntry;
use super::service::{ObjectService, Result};
use super::store::{Sealing, WrappedBy};
use kms_core::Ocid;

/// What the sweep does to each object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SweepMode {
    /// Re-wrap the data key under the current master key version; the data is untouched.
    Rewrap,
    /// Re-encrypt the data under a fresh data key (suspected compromise of data keys).
    Full,
}

/// A sweep's parameters.
#[derive(Debug, Clone)]
pub(crate) struct SweepPlan {
    /// Bucket to sweep.
    pub bucket: String,
    /// Only objects whose data key is wrapped by this master key.
    pub key_id: Option<Ocid>,
    /// Rewrap or full re-encryption.
    pub mode: SweepMode,
}

impl SweepPlan {
    /// Name of the checkpoint that lets an interrupted sweep resume.
    fn checkpoint_name(&self) -> String {
        let key = self.key_id.as_ref().map_or("*", |k| k.as_str());
        format!("{}:{:?}:{key}", self.bucket, self.mode).to_lowercase()
    }
}

/// Progress events.
#[derive(Debug)]
pub(crate) enum SweepEvent<'a> {
    /// The sweep starts: how many objects are in scope, and the key it resumes after.
    Start {
        /// Objects in scope (including those already done before an interruption).
        objects: u64,
        /// Last key finished by an interrupted run.
        resumed_after: Option<&'a str>,
    },
    /// One object was visited.
    Object {
        /// Its plaintext size.
        bytes: u64,
        /// Whether it had to be rewritten.
        changed: bool,
    },
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SweepReport {
    /// Objects visited in this run.
    pub visited: u64,
    /// Objects rewritten in this run.
    pub rewritten: u64,
    /// Plaintext bytes of the objects rewritten.
    pub bytes: u64,
    /// Whether this run continued an interrupted one.
    pub resumed: bool,
    /// Objects under customer-provided keys, which the sweep cannot re-encrypt (whole
    /// bucket, counted when the sweep starts).
    pub customer_key_objects: u64,
}

/// The master key of an object the sweep works on, or `None` when it is out of scope.
fn in_scope<'a>(plan: &SweepPlan, entry: &'a ObjectEntry) -> Option<&'a Ocid> {
    let key_id = entry.encryption.key_id()?;
    plan.key_id.as_ref().is_none_or(|k| k == key_id).then_some(key_id)
}

/// Runs (or resumes) a sweep.
pub(crate) async fn sweep(
    service: &ObjectService,
    plan: &SweepPlan,
    mut progress: impl FnMut(SweepEvent<'_>),
) -> Result<SweepReport> {
    const PAGE: usize = 1000;
    service.require_bucket(&plan.bucket)?;
    let index = service.index();
    let name = plan.checkpoint_name();
    let resume = index.checkpoint(&name)?;
    let mut in_scope_total = 0u64;
    let mut customer_key_objects = 0u64;
    let mut after: Option<String> = None;
    loop {
        let page = index.list(&plan.bucket, "", None, after.as_deref(), PAGE)?;
        in_scope_total += page.objects.iter().filter(|(_, e)| in_scope(plan, e).is_some()).count() as u64;
        customer_key_objects += page
            .objects
            .iter()
            .filter(|(_, e)| matches!(e.encryption, Encryption::Customer { .. }))
            .count() as u64;
        match page.next_start_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    progress(SweepEvent::Start {
        objects: in_scope_total,
        resumed_after: resume.as_deref(),
    });

    let mut report = SweepReport {
        resumed: resume.is_some(),
        customer_key_objects,
        ..Default::default()
    };
    let mut after = resume;
    loop {
        let page = index.list(&plan.bucket, "", None, after.as_deref(), PAGE)?;
        for (key, listed) in &page.objects {
            if in_scope(plan, listed).is_none() {
                continue;
            }
            // A writer may have replaced or deleted the object since the page was read: lock
            // it, then work from its current entry.
            let _lock = service.lock_key(&plan.bucket, key).await?;
            let Some(entry) = index.get(&plan.bucket, key)? else {
                continue;
            };
            let entry = &entry;
            let Some(key_id) = in_scope(plan, entry) else {
                continue;
            };
            let (store, location) = service.locate(&plan.bucket, key, entry);
            let new_version = match plan.mode {
                SweepMode::Rewrap => store.rewrap(&location).await?,
                SweepMode::Full => {
                    // Copy onto itself: decrypt, then encrypt under a new data key and the
                    // current version of the same master key; the store replaces the object
                    // atomically.
                    let store = store.sealed_with(Sealing::Kms(key_id.clone()));
                    store.copy(&location, &location).await?;
                    match store.wrapped_by(&location).await? {
                        WrappedBy::Kms { key_version_id, .. } => Some(key_version_id),
                        WrappedBy::Customer { .. } => None,
                    }
                }
            };
            report.visited += 1;
            let changed = new_version.is_some();
            match new_version {
                Some(version) => {
                    let mut updated = entry.clone();
                    if let Encryption::Kms { key_version_id, .. } = &mut updated.encryption {
                        *key_version_id = version;
                    }
                    index.put_with_checkpoint(&plan.bucket, key, &updated, &name)?;
                    report.rewritten += 1;
                    report.bytes += entry.size;
                }
                None => index.set_checkpoint(&name, key)?,
            }
            progress(SweepEvent::Object {
                bytes: entry.size,
                changed,
            });
        }
        match page.next_start_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    index.clear_checkpoint(&name)?;
    Ok(report)
}
