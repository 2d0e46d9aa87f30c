//! [`Context`]: what every kms-core service works over — the store, the clock, the protection
//! backends, the audit writer — and the one way a management change is made
//! ([`Context::mutate`]: the change and its audit entry in one durable transaction).
//!
//! Services ([`crate::vaults`], [`crate::keys`], [`crate::iam`], [`crate::rotation`],
//! [`crate::envelope`], [`crate::replication`]) borrow a `Context`; [`crate::Kms`] owns one and
//! is the public face over them.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, RwLock};

use sealstore_meta::Durability;

use crate::audit::writer::{AuditWriter, PendingAudit};
use crate::audit::{self, AuditSubject, Principal};
use crate::backup::format::BackupKeyring;
use crate::error::{KmsError, Result};
use crate::iam::view::IamView;
use crate::ids::{Ocid, ResourceType};
use crate::model::{Compartment, CompartmentState, ProtectionMode};
use crate::protection::software::{RootKey, SoftwareProtection};
use crate::protection::KeyProtection;
use crate::replication::identity::ReplicationIdentity;
use crate::replication::outbox::{self, OutboxSignal};
use crate::store::{ReadTxn, Store, WriteTxn, META_REGION, META_ROOT_CHECK, META_TENANCY};
use crate::time::{Clock, SystemClock, Timestamp};

/// Root key file name inside the data directory (when `--root-key-file` is not given).
pub const ROOT_KEY_FILE: &str = "root.key";

/// Tells the KMS how much data still depends on a key version, so that disabling a version
/// that protects data is refused unless forced. The data path (object index, volumes)
/// implements it.
pub trait DataInventory: Send + Sync + std::fmt::Debug {
    /// Objects (or volumes) whose data key is wrapped by `key_version`.
    fn objects_protected_by(&self, key_version: &Ocid) -> Result<u64>;
}

/// The region of a data directory created without naming one.
pub const DEFAULT_REGION: &str = "local-1";

/// How to open a [`crate::Kms`].
///
/// ```
/// use kms_core::{Kms, KmsConfig};
///
/// let dir = tempfile::tempdir()?;
/// let mut config = KmsConfig::new(dir.path().join("data")); // created if missing
/// config.root_key_file = Some(dir.path().join("elsewhere.key")); // e.g. another mount
/// let kms = Kms::open(config)?;
/// # drop(kms);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct KmsConfig {
    /// The data directory (created with mode 0700 if missing).
    pub data_dir: PathBuf,
    /// Root key file; `None` means `<data_dir>/root.key`.
    pub root_key_file: Option<PathBuf>,
    /// The region this data directory serves. A region is fixed when the data directory is
    /// created (it is in every id made there): `None` takes the stored one (`local-1` for a
    /// new directory); `Some` names it, and opening a directory created for another region
    /// fails with [`KmsError::RegionMismatch`].
    pub region: Option<String>,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Where the KMS's records live: `None` is the embedded `kms.redb` in `data_dir`; a
    /// shared PostgreSQL location lets several servers serve one KMS. The root key (and the
    /// data directory's other files) stay in `data_dir` either way.
    pub metadata: Option<sealstore_meta::Location>,
}

impl KmsConfig {
    /// Defaults for `data_dir`: its own root key, its stored region (`local-1` when new), the
    /// system clock.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        KmsConfig {
            data_dir: data_dir.into(),
            root_key_file: None,
            region: None,
            clock: Arc::new(SystemClock),
            metadata: None,
        }
    }
}

/// How long a server sharing its store with others trusts its IAM view before checking the
/// stored IAM revision again: the bound on how late an IAM change made through another server
/// is in force here. (Key and vault states are read from the store by every operation.)
pub(crate) const IAM_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// An IAM view with the IAM revision it was built from and when that was last checked.
#[derive(Debug)]
struct CachedIamView {
    view: Arc<IamView>,
    revision: u64,
    checked: std::time::Instant,
}

/// The shared state of one open data directory.
#[derive(Debug)]
pub(crate) struct Context {
    store: Store,
    clock: Arc<dyn Clock>,
    region: String,
    /// Changes once at most: when this region joins a tenancy whose home is another region.
    tenancy: RwLock<Ocid>,
    data_dir: PathBuf,
    protections: HashMap<ProtectionMode, Arc<dyn KeyProtection>>,
    /// What the data path reports as still protected by each version.
    inventories: Vec<Arc<dyn DataInventory>>,
    audit: AuditWriter,
    /// Built on first use, dropped after each IAM change made here; on a shared store,
    /// checked against the stored IAM revision at most [`IAM_RECHECK`] after its last check.
    iam_view: RwLock<Option<CachedIamView>>,
    /// Moved by every invalidation of the IAM view, so that a view built from a snapshot
    /// taken before an IAM change is not cached after it.
    iam_generation: std::sync::atomic::AtomicU64,
    /// Replication keys, loaded on first use.
    replication_identity: OnceLock<ReplicationIdentity>,
    /// Signalled when a change is queued for shipping to another region.
    replication_signal: OutboxSignal,
    /// Key → its protection mode, learnt on first use (a key's mode never changes).
    key_modes: RwLock<HashMap<Ocid, ProtectionMode>>,
    /// Seals and opens KMS backups (derived from the root key).
    backup_keyring: BackupKeyring,
}

impl Context {
    /// Opens the data directory, creating it, its root key and its tenancy on first use.
    pub(crate) fn open(config: KmsConfig) -> Result<Context> {
        create_private_dir(&config.data_dir)?;
        let root_path = config
            .root_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join(ROOT_KEY_FILE));
        let root = RootKey::load_or_create(&root_path)?;
        let store = Store::open(
            &config
                .metadata
                .clone()
                .unwrap_or_else(|| sealstore_meta::Location::Dir(config.data_dir.clone())),
        )?;

        let txn = store.write(Durability::Immediate)?;
        match txn.meta(META_ROOT_CHECK)? {
            Some(check) => root.verify_check_value(&check)?,
            None => txn.set_meta(META_ROOT_CHECK, &root.check_value()?)?,
        }
        let region = match (txn.meta(META_REGION)?, config.region) {
            (Some(stored), requested) => {
                let stored = String::from_utf8_lossy(&stored).into_owned();
                match requested {
                    Some(requested) if requested != stored => {
                        return Err(KmsError::RegionMismatch { stored, requested })
                    }
                    _ => stored,
                }
            }
            (None, requested) => {
                let region = requested.unwrap_or_else(|| DEFAULT_REGION.to_owned());
                txn.set_meta(META_REGION, region.as_bytes())?;
                region
            }
        };
        let tenancy = match txn.meta(META_TENANCY)? {
            Some(t) => Ocid::parse(ResourceType::Tenancy, &String::from_utf8_lossy(&t))?,
            None => {
                let id = Ocid::generate(ResourceType::Tenancy, &region);
                txn.set_meta(META_TENANCY, id.as_str().as_bytes())?;
                txn.put_compartment(&Compartment {
                    id: id.clone(),
                    compartment_id: id.clone(),
                    name: "root".into(),
                    description: "The tenancy (root compartment)".into(),
                    lifecycle_state: CompartmentState::Active,
                    time_created: config.clock.now(),
                })?;
                id
            }
        };
        txn.commit()?;

        let mut core = Context {
            store,
            clock: config.clock,
            region,
            tenancy: RwLock::new(tenancy),
            data_dir: config.data_dir,
            protections: HashMap::new(),
            inventories: Vec::new(),
            audit: AuditWriter::default(),
            iam_view: RwLock::new(None),
            iam_generation: std::sync::atomic::AtomicU64::new(0),
            replication_identity: OnceLock::new(),
            replication_signal: OutboxSignal::default(),
            key_modes: RwLock::default(),
            backup_keyring: root.backup_keyring(),
        };
        core.register_protection(Arc::new(SoftwareProtection::new(root)));
        Ok(core)
    }

    /// Adds (or replaces) the backend for one protection mode.
    pub(crate) fn register_protection(&mut self, backend: Arc<dyn KeyProtection>) {
        self.protections.insert(backend.mode(), backend);
    }

    /// Adds a source of "data still protected by this key version".
    pub(crate) fn register_inventory(&mut self, inventory: Arc<dyn DataInventory>) {
        self.inventories.push(inventory);
    }

    /// Objects and volumes that still depend on `key_version`, over every inventory.
    pub(crate) fn data_protected_by(&self, key_version: &Ocid) -> Result<u64> {
        self.inventories
            .iter()
            .map(|i| i.objects_protected_by(key_version))
            .sum()
    }

    pub(crate) fn tenancy_id(&self) -> Ocid {
        self.tenancy.read().expect("tenancy lock poisoned").clone()
    }

    /// Serves `tenancy` from now on (this region joined it; the store says so already).
    pub(crate) fn set_tenancy_id(&self, tenancy: Ocid) {
        *self.tenancy.write().expect("tenancy lock poisoned") = tenancy;
        self.invalidate_iam_view();
    }

    pub(crate) fn region(&self) -> &str {
        &self.region
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The backend of `mode`, or why this server cannot serve it.
    pub(crate) fn protection(&self, mode: ProtectionMode) -> Result<&Arc<dyn KeyProtection>> {
        self.protections.get(&mode).ok_or_else(|| {
            KmsError::InvalidParameter(format!(
                "protection mode {} is not configured on this server (available: {})",
                mode.as_str(),
                self.protections
                    .keys()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// The protection mode of `key_id`, or `None` when there is no such key. Read once per
    /// key, then remembered.
    pub(crate) fn key_protection_mode(&self, key_id: &Ocid) -> Result<Option<ProtectionMode>> {
        if let Some(mode) = self.key_modes.read().expect("key mode cache poisoned").get(key_id) {
            return Ok(Some(*mode));
        }
        let mode = match self.read()?.key(key_id) {
            Ok(key) => key.protection_mode,
            Err(KmsError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.key_modes
            .write()
            .expect("key mode cache poisoned")
            .insert(key_id.clone(), mode);
        Ok(Some(mode))
    }

    pub(crate) fn read(&self) -> Result<ReadTxn<'_>> {
        self.store.read()
    }

    /// A durable write transaction outside [`Context::mutate`], for changes that are not a
    /// principal's management call (replication bookkeeping, the scheduler's purges).
    pub(crate) fn write(&self) -> Result<WriteTxn<'_>> {
        self.store.write(Durability::Immediate)
    }

    /// Runs `change` in one durable write transaction with its audit entry; audits a failure
    /// separately. `subject` may be filled in by `change` as it learns ids.
    pub(crate) fn mutate<T>(
        &self,
        principal: &Principal,
        operation: &str,
        subject: AuditSubject,
        change: impl FnOnce(&WriteTxn, Timestamp, &mut AuditSubject) -> Result<T>,
    ) -> Result<T> {
        self.mutate_if_needed(principal, operation, subject, |txn, now, subject| {
            change(txn, now, subject).map(Some)
        })
        .map(|done| done.expect("change always reports work"))
    }

    /// As [`Context::mutate`], for work that may turn out to be unnecessary once the transaction
    /// sees the current state (the scheduler re-checks what it planned): `Ok(None)` commits
    /// nothing and audits nothing.
    ///
    /// Changes to a replica are refused (it is managed in its primary region), and a change
    /// to a replicated vault queues it for shipping in the same transaction.
    pub(crate) fn mutate_if_needed<T>(
        &self,
        principal: &Principal,
        operation: &str,
        mut subject: AuditSubject,
        change: impl FnOnce(&WriteTxn, Timestamp, &mut AuditSubject) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let now = self.clock.now();
        let txn = self.store.write(Durability::Immediate)?;
        let outcome = outbox::refuse_if_replica(&txn, &subject).and_then(|()| change(&txn, now, &mut subject));
        match outcome {
            Ok(None) => Ok(None),
            Ok(Some(value)) => {
                let queued = match outbox::changed_vault(&txn, &subject) {
                    Some(vault) => outbox::queue(&txn, now, &vault, &subject)?,
                    None => false,
                };
                audit::append(&txn, now, principal, operation, &subject, Ok(()))?;
                txn.commit()?;
                if queued {
                    self.replication_signal.notify();
                }
                Ok(Some(value))
            }
            Err(err) => {
                drop(txn);
                // The caller needs the original error; a failure to record it is logged.
                if let Err(audit_err) = self.audit_only(
                    principal,
                    operation,
                    &subject,
                    Err(err.to_string()),
                    Durability::Immediate,
                ) {
                    tracing::error!(operation, error = %audit_err, "could not audit a failed operation");
                }
                Err(err)
            }
        }
    }

    /// Appends an audit entry on its own.
    pub(crate) fn audit_only(
        &self,
        principal: &Principal,
        operation: &str,
        subject: &AuditSubject,
        outcome: std::result::Result<(), String>,
        durability: Durability,
    ) -> Result<()> {
        let txn = self.store.write(durability)?;
        audit::append(&txn, self.clock.now(), principal, operation, subject, outcome)?;
        txn.commit()
    }

    /// See [`crate::Kms::is_shared`].
    pub(crate) fn is_shared(&self) -> bool {
        self.store.is_shared()
    }

    /// See [`crate::Kms::lease`].
    pub(crate) fn lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool> {
        self.store.lease(name, holder, ttl)
    }

    /// Queues a crypto call's audit entry for the next group commit (see
    /// [`crate::audit::writer`]).
    pub(crate) fn queue_audit(&self, entry: PendingAudit) -> Result<()> {
        self.audit.queue(&self.store, entry)
    }

    /// Writes queued audit entries until `stop` (see [`AuditWriter::run`]).
    pub(crate) fn run_audit_writer(&self, stop: &AtomicBool) -> Result<()> {
        self.audit.run(&self.store, stop)
    }

    pub(crate) fn audit_writer_running(&self) -> bool {
        self.audit.running()
    }

    pub(crate) fn wake_audit_writer(&self) {
        self.audit.wake()
    }

    pub(crate) fn flush_audit(&self) -> Result<()> {
        self.audit.flush(&self.store)
    }

    /// Writes queued audit entries (without fsync) so that a read of the log sees them.
    pub(crate) fn write_pending_audit(&self) -> Result<()> {
        self.audit.write_pending(&self.store)
    }

    /// The current IAM snapshot, built from the store on first use after a change (and, on a
    /// shared store, when the stored IAM revision moved: see [`IAM_RECHECK`]).
    pub(crate) fn iam_view(&self) -> Result<Arc<IamView>> {
        let shared = self.store.is_shared();
        let cached_revision = match self.iam_view.read().expect("IAM view lock poisoned").as_ref() {
            Some(c) if !shared || c.checked.elapsed() < IAM_RECHECK => return Ok(c.view.clone()),
            Some(c) => Some(c.revision),
            None => None,
        };
        let generation = self.iam_generation.load(std::sync::atomic::Ordering::SeqCst);
        let txn = self.read()?;
        let revision = txn.iam_revision()?;
        let mut cache = self.iam_view.write().expect("IAM view lock poisoned");
        if let Some(c) = cache
            .as_mut()
            .filter(|c| Some(c.revision) == cached_revision && c.revision == revision)
        {
            c.checked = std::time::Instant::now();
            return Ok(c.view.clone());
        }
        // Built from the same snapshot as the revision it is filed under.
        let view = Arc::new(IamView::load(&txn, &self.tenancy_id())?);
        if self.iam_generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            *cache = Some(CachedIamView {
                view: view.clone(),
                revision,
                checked: std::time::Instant::now(),
            });
        }
        Ok(view)
    }

    /// Drops the cached [`IamView`] after an IAM or compartment change.
    pub(crate) fn invalidate_iam_view(&self) {
        let mut cache = self.iam_view.write().expect("IAM view lock poisoned");
        self.iam_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *cache = None;
    }

    /// This region's replication keys, made on first use.
    pub(crate) fn replication_identity(&self) -> Result<&ReplicationIdentity> {
        if let Some(id) = self.replication_identity.get() {
            return Ok(id);
        }
        let identity = ReplicationIdentity::load_or_create(&self.data_dir)?;
        Ok(self.replication_identity.get_or_init(|| identity))
    }

    /// The keys of this deployment's KMS backups.
    pub(crate) fn backup_keyring(&self) -> &BackupKeyring {
        &self.backup_keyring
    }

    pub(crate) fn replication_signal(&self) -> &OutboxSignal {
        &self.replication_signal
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Err(e) = self.flush_audit() {
            tracing::error!(error = %e, "could not flush the audit log on close");
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| KmsError::io(format!("creating data directory {}", dir.display()), e))
}
