//! [`Kms`]: the key-management service — opening a data directory and every management
//! operation on vaults, keys and key versions. Crypto operations are in
//! [`crate::envelope`], rotation and the scheduler in [`crate::rotation`].
//!
//! Each management call is one write transaction holding the change and its audit entry; a
//! failed call is audited in a transaction of its own.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::Durability;
use serde::{Deserialize, Serialize};

use crate::audit::{self, AuditEntry, AuditSubject, AuditVerification, Principal};
use crate::error::{KmsError, Result};
use crate::ids::{Ocid, ResourceType};
use crate::model::*;
use crate::protection::software::{RootKey, SoftwareProtection};
use crate::protection::{ExternalKeyState, KeyProtection};
use crate::store::{ReadTxn, Store, WriteTxn, META_REGION, META_ROOT_CHECK, META_TENANCY};
use crate::time::{Clock, SystemClock, Timestamp};

/// Root key file name inside the data directory (when `--root-key-file` is not given).
pub const ROOT_KEY_FILE: &str = "root.key";
/// Meta key naming the default vault created on first start.
const META_DEFAULT_VAULT: &str = "default_vault_id";
/// Meta key naming the default master key created on first start.
const META_DEFAULT_KEY: &str = "default_key_id";

/// Tells the KMS how much data still depends on a key version, so that disabling a version
/// that protects data is refused unless forced. The data path (object index, volumes)
/// implements it.
pub trait DataInventory: Send + Sync + std::fmt::Debug {
    /// Objects (or volumes) whose data key is wrapped by `key_version`.
    fn objects_protected_by(&self, key_version: &Ocid) -> Result<u64>;
}

/// How to open a [`Kms`].
#[derive(Debug, Clone)]
pub struct KmsConfig {
    /// The data directory (created with mode 0700 if missing).
    pub data_dir: PathBuf,
    /// Root key file; `None` means `<data_dir>/root.key`.
    pub root_key_file: Option<PathBuf>,
    /// Region name used in new ids (`local-1` by default).
    pub region: String,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
}

impl KmsConfig {
    /// Defaults for `data_dir`: its own root key, region `local-1`, the system clock.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        KmsConfig {
            data_dir: data_dir.into(),
            root_key_file: None,
            region: "local-1".into(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Parameters of [`Kms::create_vault`].
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
    pub external_key_manager: Option<crate::model::ExternalKeyManager>,
}

/// Parameters of [`Kms::create_key`].
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
            auto_rotation_interval_days: None,
            freeform_tags: FreeformTags::new(),
            external_key_id: None,
        }
    }
}

/// Changes made by [`Kms::update_vault`] / [`Kms::update_key`]; `None` leaves a field as is.
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

/// Whose version [`Kms::new_version`] makes.
struct VersionOwner<'a> {
    key_id: &'a Ocid,
    vault_id: &'a Ocid,
    compartment_id: &'a Ocid,
}

/// The key-management service over one data directory.
#[derive(Debug)]
pub struct Kms {
    pub(crate) store: Store,
    pub(crate) clock: Arc<dyn Clock>,
    region: String,
    tenancy: Ocid,
    protections: HashMap<ProtectionMode, Arc<dyn KeyProtection>>,
    /// Crypto-operation audit entries committed but not yet fsynced.
    audit_unflushed: AtomicU64,
    /// What the data path reports as still protected by each version.
    inventories: Vec<Arc<dyn DataInventory>>,
    /// Built on first use, dropped after each IAM change.
    iam_view: std::sync::RwLock<Option<Arc<crate::iam::IamView>>>,
    /// Crypto-call audit entries not yet written to the store (see [`Kms::queue_audit`]).
    audit_queue: std::sync::Mutex<Vec<PendingAudit>>,
    /// Held by the one thread writing queued audit entries.
    audit_writer: std::sync::Mutex<()>,
    /// The data directory.
    data_dir: std::path::PathBuf,
    /// Replication keys, loaded on first use.
    replication_identity: crate::replication::IdentityCell,
    /// Signalled when a change is queued for shipping to another region.
    pub(crate) replication_queued: std::sync::Condvar,
    pub(crate) replication_wakeup: std::sync::Mutex<u64>,
    /// Set while [`Kms::run_audit_writer`] runs: callers then only queue their entries.
    audit_background: std::sync::atomic::AtomicBool,
    /// Wakes the background audit writer (paired with `audit_queue`).
    audit_wake: std::sync::Condvar,
}

/// A crypto call's audit entry waiting for the next group commit.
#[derive(Debug)]
pub(crate) struct PendingAudit {
    pub time: Timestamp,
    pub principal: Principal,
    pub operation: &'static str,
    pub subject: AuditSubject,
    pub outcome: std::result::Result<(), String>,
}

/// Crypto-operation audit entries that may wait for a durable commit; [`Kms::flush_audit`]
/// runs by itself after this many (and at least every second under [`Kms::run_audit_writer`]).
pub const AUDIT_FLUSH_EVERY: u64 = 1024;
/// The background audit writer commits when this many entries wait…
const AUDIT_BATCH: usize = 256;
/// …or when the oldest has waited about this long.
const AUDIT_BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// What [`Kms::ensure_defaults`] found or made.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Defaults {
    /// The default vault.
    pub vault: Vault,
    /// The default master key.
    pub key: Key,
    /// True when this call created them.
    pub created: bool,
}

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 255 {
        return Err(KmsError::InvalidParameter(
            "displayName must be 1–255 characters".into(),
        ));
    }
    Ok(())
}

fn check_rotation_interval(days: u32) -> Result<()> {
    if !(MIN_ROTATION_INTERVAL_DAYS..=MAX_ROTATION_INTERVAL_DAYS).contains(&days) {
        return Err(KmsError::InvalidParameter(format!(
            "rotation interval must be {MIN_ROTATION_INTERVAL_DAYS}–{MAX_ROTATION_INTERVAL_DAYS} days, got {days}"
        )));
    }
    Ok(())
}

/// Validates a requested deletion time: 7–30 days after `now`, 30 days when absent.
fn deletion_time(now: Timestamp, requested: Option<Timestamp>) -> Result<Timestamp> {
    let Some(t) = requested else {
        return Ok(now.plus_days(MAX_DELETION_DAYS));
    };
    // A minute of slack so that "in 7 days" computed by a client a moment ago is accepted.
    let slack = 60_000;
    let earliest = now.plus_days(MIN_DELETION_DAYS).unix_millis() - slack;
    let latest = now.plus_days(MAX_DELETION_DAYS).unix_millis() + slack;
    if t.unix_millis() < earliest || t.unix_millis() > latest {
        return Err(KmsError::InvalidParameter(format!(
            "timeOfDeletion {t} must be between {MIN_DELETION_DAYS} and {MAX_DELETION_DAYS} days from now ({} to {})",
            now.plus_days(MIN_DELETION_DAYS),
            now.plus_days(MAX_DELETION_DAYS)
        )));
    }
    Ok(t)
}

pub(crate) fn auto_rotation_details(interval: u32, last_rotation: Timestamp) -> AutoKeyRotationDetails {
    AutoKeyRotationDetails {
        rotation_interval_in_days: interval,
        time_of_schedule_start: Some(last_rotation),
        time_of_next_rotation: Some(last_rotation.plus_days(interval.into())),
        time_of_last_rotation: None,
        last_rotation_status: None,
        last_rotation_message: None,
    }
}

impl Kms {
    /// Opens the data directory, creating it, its root key and its tenancy on first use.
    pub fn open(config: KmsConfig) -> Result<Kms> {
        create_private_dir(&config.data_dir)?;
        let root_path = config
            .root_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join(ROOT_KEY_FILE));
        let root = RootKey::load_or_create(&root_path)?;
        let store = Store::open(&config.data_dir)?;

        let txn = store.write(Durability::Immediate)?;
        match txn.meta(META_ROOT_CHECK)? {
            Some(check) => root.verify_check_value(&check)?,
            None => txn.set_meta(META_ROOT_CHECK, &root.check_value()?)?,
        }
        let region = match txn.meta(META_REGION)? {
            Some(r) => String::from_utf8_lossy(&r).into_owned(),
            None => {
                txn.set_meta(META_REGION, config.region.as_bytes())?;
                config.region.clone()
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

        let mut kms = Kms {
            store,
            clock: config.clock,
            region,
            tenancy,
            protections: HashMap::new(),
            audit_unflushed: AtomicU64::new(0),
            inventories: Vec::new(),
            iam_view: std::sync::RwLock::new(None),
            audit_queue: std::sync::Mutex::new(Vec::new()),
            audit_writer: std::sync::Mutex::new(()),
            audit_background: std::sync::atomic::AtomicBool::new(false),
            data_dir: config.data_dir.clone(),
            replication_identity: Default::default(),
            replication_queued: std::sync::Condvar::new(),
            replication_wakeup: std::sync::Mutex::new(0),
            audit_wake: std::sync::Condvar::new(),
        };
        kms.register_protection(Arc::new(SoftwareProtection::new(root)));
        Ok(kms)
    }

    /// Adds (or replaces) the backend for one protection mode.
    pub fn register_protection(&mut self, backend: Arc<dyn KeyProtection>) {
        self.protections.insert(backend.mode(), backend);
    }

    /// Adds a source of "data still protected by this key version" (see [`DataInventory`]).
    pub fn register_inventory(&mut self, inventory: Arc<dyn DataInventory>) {
        self.inventories.push(inventory);
    }

    /// Objects and volumes that still depend on `key_version`, over every registered
    /// inventory.
    pub fn data_protected_by(&self, key_version: &Ocid) -> Result<u64> {
        self.inventories
            .iter()
            .map(|i| i.objects_protected_by(key_version))
            .sum()
    }

    /// The tenancy (root compartment) id of this data directory.
    pub fn tenancy_id(&self) -> &Ocid {
        &self.tenancy
    }

    /// The region name of this data directory.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The current time by this service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

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

    /// As [`Kms::mutate`], for work that may turn out to be unnecessary once the transaction
    /// sees the current state (the scheduler re-checks what it planned): `Ok(None)` commits
    /// nothing and audits nothing.
    pub(crate) fn mutate_if_needed<T>(
        &self,
        principal: &Principal,
        operation: &str,
        mut subject: AuditSubject,
        change: impl FnOnce(&WriteTxn, Timestamp, &mut AuditSubject) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let now = self.clock.now();
        let txn = self.store.write(Durability::Immediate)?;
        let outcome = self
            .refuse_if_replica(&txn, &subject)
            .and_then(|()| change(&txn, now, &mut subject));
        match outcome {
            Ok(None) => Ok(None),
            Ok(Some(value)) => {
                // A change to a replicated vault is queued for shipping in its own transaction.
                let queued = match Self::changed_vault(&txn, &subject) {
                    Some(vault) => self.queue_replication(&txn, now, &vault)?,
                    None => false,
                };
                audit::append(&txn, now, principal, operation, &subject, Ok(()))?;
                txn.commit()?;
                if queued {
                    self.notify_replication();
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

    /// Queues a crypto call's audit entry and writes the queue (group commit).
    ///
    /// Crypto calls change no state, so their entries need not be durable before the call
    /// returns (see [`crate::store`]); writing each in a write transaction of its own would
    /// serialize every concurrent call on the store's write lock. Instead the entry joins a
    /// queue, and whichever caller finds no writer busy writes everything queued in one
    /// transaction. A writer re-checks the queue after letting go, so no entry is left behind.
    ///
    /// In a server, [`Kms::run_audit_writer`] does the writing on its own thread, so that
    /// crypto calls never wait for the store at all.
    pub(crate) fn queue_audit(&self, entry: PendingAudit) -> Result<()> {
        {
            let mut queue = self.audit_queue.lock().expect("audit queue poisoned");
            queue.push(entry);
            if self.audit_background.load(Ordering::Acquire) {
                if queue.len() == 1 || queue.len() == AUDIT_BATCH {
                    self.audit_wake.notify_one();
                }
                return Ok(());
            }
        }
        loop {
            let Ok(writer) = self.audit_writer.try_lock() else {
                return Ok(()); // the busy writer will see our entry
            };
            self.write_queued_audit(false)?;
            drop(writer);
            if self.audit_queue.lock().expect("audit queue poisoned").is_empty() {
                break;
            }
        }
        if self.audit_unflushed.load(Ordering::Relaxed) >= AUDIT_FLUSH_EVERY {
            self.flush_audit()?;
        }
        Ok(())
    }

    /// Writes every queued audit entry in one transaction; the caller holds `audit_writer`.
    /// With `durable`, the commit fsyncs, making every earlier entry durable too.
    fn write_queued_audit(&self, durable: bool) -> Result<()> {
        let batch = std::mem::take(&mut *self.audit_queue.lock().expect("audit queue poisoned"));
        if batch.is_empty() && !durable {
            return Ok(());
        }
        let txn = self.store.write(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        for e in &batch {
            audit::append(&txn, e.time, &e.principal, e.operation, &e.subject, e.outcome.clone())?;
        }
        txn.commit()?;
        if !durable {
            self.audit_unflushed.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes crypto-call audit entries as they are queued, on the calling thread, until
    /// `stop` is set (and the writer woken by [`Kms::wake_audit_writer`]): one transaction
    /// per batch, made durable every [`AUDIT_FLUSH_EVERY`] entries or every second, and once
    /// more on the way out. Meanwhile crypto calls only queue their entries. For servers:
    /// the durability is the same as without it (see [`Kms::queue_audit`]).
    pub fn run_audit_writer(&self, stop: &std::sync::atomic::AtomicBool) -> Result<()> {
        const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
        self.audit_background.store(true, Ordering::Release);
        let mut last_flush = std::time::Instant::now();
        let result = (|| loop {
            {
                let queue = self.audit_queue.lock().expect("audit queue poisoned");
                let wait = FLUSH_INTERVAL.saturating_sub(last_flush.elapsed());
                let (queue, _) = self
                    .audit_wake
                    .wait_timeout_while(queue, wait, |q| q.is_empty() && !stop.load(Ordering::Acquire))
                    .expect("audit queue poisoned");
                // Commits cost the same for one entry or hundreds: gather a batch.
                let _unused = self
                    .audit_wake
                    .wait_timeout_while(queue, AUDIT_BATCH_WAIT, |q| {
                        q.len() < AUDIT_BATCH && !stop.load(Ordering::Acquire)
                    })
                    .expect("audit queue poisoned");
            }
            {
                let _writer = self.audit_writer.lock().expect("audit writer poisoned");
                self.write_queued_audit(false)?;
            }
            if stop.load(Ordering::Acquire)
                || self.audit_unflushed.load(Ordering::Relaxed) >= AUDIT_FLUSH_EVERY
                || last_flush.elapsed() >= FLUSH_INTERVAL
            {
                self.flush_audit()?;
                last_flush = std::time::Instant::now();
            }
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
        })();
        self.audit_background.store(false, Ordering::Release);
        // Whatever was queued while stopping is written by the last caller or the next flush.
        result.and_then(|()| self.flush_audit())
    }

    /// Whether [`Kms::run_audit_writer`] runs, so that crypto calls never touch the store's
    /// write side.
    pub fn audit_writer_running(&self) -> bool {
        self.audit_background.load(Ordering::Acquire)
    }

    /// Wakes [`Kms::run_audit_writer`] (after setting its `stop`).
    pub fn wake_audit_writer(&self) {
        let _queue = self.audit_queue.lock().expect("audit queue poisoned");
        self.audit_wake.notify_all();
    }

    /// Makes every audit entry recorded so far durable (one fsync), if any is pending.
    pub fn flush_audit(&self) -> Result<()> {
        let _writer = self.audit_writer.lock().expect("audit writer poisoned");
        let queued = !self.audit_queue.lock().expect("audit queue poisoned").is_empty();
        if self.audit_unflushed.swap(0, Ordering::Relaxed) > 0 || queued {
            self.write_queued_audit(true)?;
        }
        Ok(())
    }

    /// Writes queued audit entries (without fsync) so that a read of the log sees them.
    pub(crate) fn write_pending_audit(&self) -> Result<()> {
        let _writer = self.audit_writer.lock().expect("audit writer poisoned");
        self.write_queued_audit(false)
    }

    /// The current users, groups, policies and compartment tree, for checking requests.
    pub fn iam_view(&self) -> Result<Arc<crate::iam::IamView>> {
        if let Some(view) = self.iam_view.read().expect("IAM view lock poisoned").as_ref() {
            return Ok(view.clone());
        }
        let view = Arc::new(self.build_iam_view()?);
        *self.iam_view.write().expect("IAM view lock poisoned") = Some(view.clone());
        Ok(view)
    }

    /// Drops the cached [`crate::iam::IamView`] after an IAM or compartment change.
    pub(crate) fn invalidate_iam_view(&self) {
        *self.iam_view.write().expect("IAM view lock poisoned") = None;
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub(crate) fn replication_identity_cell(&self) -> &crate::replication::IdentityCell {
        &self.replication_identity
    }

    pub(crate) fn read(&self) -> Result<ReadTxn> {
        self.store.read()
    }

    // ----- compartments -----

    /// Every compartment, oldest (the tenancy) first.
    pub fn list_compartments(&self) -> Result<Vec<Compartment>> {
        // Insertion order: the tenancy, created with the data directory, comes first.
        self.read()?.compartments()
    }

    fn active_compartment(txn: &WriteTxn, id: &Ocid) -> Result<Compartment> {
        let c = txn.compartment(id)?;
        if c.lifecycle_state != CompartmentState::Active {
            return Err(KmsError::IncorrectState(format!("compartment {id} is not active")));
        }
        Ok(c)
    }

    // ----- vaults -----

    /// Creates a vault.
    pub fn create_vault(&self, principal: &Principal, req: CreateVault) -> Result<Vault> {
        self.mutate(
            principal,
            "CreateVault",
            AuditSubject::default(),
            |txn, now, subject| self.create_vault_in(txn, now, &req, subject),
        )
    }

    fn create_vault_in(
        &self,
        txn: &WriteTxn,
        now: Timestamp,
        req: &CreateVault,
        subject: &mut AuditSubject,
    ) -> Result<Vault> {
        check_name(&req.display_name)?;
        let compartment_id = req.compartment_id.clone().unwrap_or_else(|| self.tenancy.clone());
        Self::active_compartment(txn, &compartment_id)?;
        let vault_type = req.vault_type.unwrap_or(VaultType::Default);
        let external_key_manager = match (vault_type, &req.external_key_manager) {
            (VaultType::External, Some(m)) => {
                self.protection(ProtectionMode::External)?;
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
            id: Ocid::generate(ResourceType::Vault, &self.region),
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
        };
        subject.vault_id = Some(vault.id.clone());
        txn.put_vault(&vault)?;
        Ok(vault)
    }

    /// A vault by id.
    pub fn get_vault(&self, id: &Ocid) -> Result<Vault> {
        self.read()?.vault(id)
    }

    /// Vaults, oldest first; only those in `compartment` when given.
    pub fn list_vaults(&self, compartment: Option<&Ocid>) -> Result<Vec<Vault>> {
        let vaults = self.read()?.vaults()?;
        Ok(vaults
            .into_iter()
            .filter(|v| compartment.is_none_or(|c| &v.compartment_id == c))
            .collect())
    }

    /// Renames or retags a vault.
    pub fn update_vault(&self, principal: &Principal, id: &Ocid, update: UpdateResource) -> Result<Vault> {
        let subject = AuditSubject {
            vault_id: Some(id.clone()),
            ..Default::default()
        };
        self.mutate(principal, "UpdateVault", subject, |txn, _, _| {
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
    pub fn schedule_vault_deletion(&self, principal: &Principal, id: &Ocid, at: Option<Timestamp>) -> Result<Vault> {
        let subject = AuditSubject {
            vault_id: Some(id.clone()),
            ..Default::default()
        };
        self.mutate(principal, "ScheduleVaultDeletion", subject, |txn, now, _| {
            let mut vault = txn.vault(id)?;
            if vault.lifecycle_state != VaultState::Active {
                return Err(KmsError::IncorrectState(format!(
                    "vault {id} is {:?}; only an ACTIVE vault can be scheduled for deletion",
                    vault.lifecycle_state
                )));
            }
            vault.time_of_deletion = Some(deletion_time(now, at)?);
            vault.lifecycle_state = VaultState::PendingDeletion;
            txn.put_vault(&vault)?;
            Ok(vault)
        })
    }

    /// Cancels a scheduled vault deletion; its keys become usable again.
    pub fn cancel_vault_deletion(&self, principal: &Principal, id: &Ocid) -> Result<Vault> {
        let subject = AuditSubject {
            vault_id: Some(id.clone()),
            ..Default::default()
        };
        self.mutate(principal, "CancelVaultDeletion", subject, |txn, _, _| {
            let mut vault = txn.vault(id)?;
            if vault.lifecycle_state != VaultState::PendingDeletion {
                return Err(KmsError::IncorrectState(format!(
                    "vault {id} is {:?}, not PENDING_DELETION",
                    vault.lifecycle_state
                )));
            }
            vault.lifecycle_state = VaultState::Active;
            vault.time_of_deletion = None;
            txn.put_vault(&vault)?;
            Ok(vault)
        })
    }

    // ----- keys -----

    /// Creates an AES-256 master key with its first version.
    pub fn create_key(&self, principal: &Principal, req: CreateKey) -> Result<Key> {
        let subject = AuditSubject {
            vault_id: Some(req.vault_id.clone()),
            ..Default::default()
        };
        // An external key's versions come from its key manager: asked before the write
        // transaction, which must not wait on the network.
        let vault = self.get_vault(&req.vault_id)?;
        let external = match (&vault.external_key_manager, &req.external_key_id) {
            (Some(manager), Some(key_id)) => {
                let state = self.protection(ProtectionMode::External)?.external_key(manager, key_id)?;
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
        self.mutate(principal, "CreateKey", subject, |txn, now, subject| {
            self.create_key_in(txn, now, &req, external.as_ref(), subject)
        })
    }

    fn create_key_in(
        &self,
        txn: &WriteTxn,
        now: Timestamp,
        req: &CreateKey,
        external: Option<&(
            crate::model::ExternalKeyManager,
            String,
            crate::protection::ExternalKeyState,
        )>,
        subject: &mut AuditSubject,
    ) -> Result<Key> {
        check_name(&req.display_name)?;
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
        Self::active_compartment(txn, &compartment_id)?;
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
        let backend = self.protection(mode)?;
        let key_id = Ocid::generate(ResourceType::Key, &self.region);
        let owner = VersionOwner {
            key_id: &key_id,
            vault_id: &vault.id,
            compartment_id: &compartment_id,
        };
        let version = match external {
            None => {
                let version = self.new_version(&owner, now, false, None);
                txn.put_key_material(&version.id, &backend.create_material(&version.id)?)?;
                txn.put_key_version(&version)?;
                version
            }
            Some(external) => self.add_external_versions(txn, now, &owner, external, &[])?.1,
        };
        let key = Key {
            id: key_id.clone(),
            compartment_id,
            vault_id: vault.id.clone(),
            display_name: req.display_name.clone(),
            key_shape: KeyShape::aes256(),
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
        };
        subject.key_id = Some(key.id.clone());
        subject.key_version_id = Some(version.id.clone());
        txn.put_key(&key)?;
        Ok(key)
    }

    /// A key by id.
    pub fn get_key(&self, id: &Ocid) -> Result<Key> {
        self.read()?.key(id)
    }

    /// Keys, oldest first; filtered by vault and compartment when given.
    pub fn list_keys(&self, vault: Option<&Ocid>, compartment: Option<&Ocid>) -> Result<Vec<Key>> {
        let keys = self.read()?.keys()?;
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
    pub fn update_key(&self, principal: &Principal, id: &Ocid, update: UpdateResource) -> Result<Key> {
        let subject = AuditSubject {
            key_id: Some(id.clone()),
            ..Default::default()
        };
        self.mutate(principal, "UpdateKey", subject, |txn, _, subject| {
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
        self.mutate(principal, op, subject, |txn, _, subject| {
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
    pub fn enable_key(&self, principal: &Principal, id: &Ocid) -> Result<Key> {
        self.set_key_state(principal, id, "EnableKey", KeyState::Disabled, KeyState::Enabled)
    }

    /// Disables a key: every encrypt and decrypt under it is refused until it is enabled.
    pub fn disable_key(&self, principal: &Principal, id: &Ocid) -> Result<Key> {
        self.set_key_state(principal, id, "DisableKey", KeyState::Enabled, KeyState::Disabled)
    }

    /// Schedules a key's deletion 7–30 days ahead; it is unusable until cancelled.
    pub fn schedule_key_deletion(&self, principal: &Principal, id: &Ocid, at: Option<Timestamp>) -> Result<Key> {
        let subject = AuditSubject {
            key_id: Some(id.clone()),
            ..Default::default()
        };
        self.mutate(principal, "ScheduleKeyDeletion", subject, |txn, now, subject| {
            let mut key = Self::key_for_change(txn, id, subject)?;
            if !matches!(key.lifecycle_state, KeyState::Enabled | KeyState::Disabled) {
                return Err(KmsError::IncorrectState(format!(
                    "key {id} is {:?}",
                    key.lifecycle_state
                )));
            }
            key.time_of_deletion = Some(deletion_time(now, at)?);
            key.lifecycle_state = KeyState::PendingDeletion;
            txn.put_key(&key)?;
            Ok(key)
        })
    }

    /// Cancels a scheduled key deletion; the key comes back ENABLED.
    pub fn cancel_key_deletion(&self, principal: &Principal, id: &Ocid) -> Result<Key> {
        let subject = AuditSubject {
            key_id: Some(id.clone()),
            ..Default::default()
        };
        self.mutate(principal, "CancelKeyDeletion", subject, |txn, _, subject| {
            let mut key = Self::key_for_change(txn, id, subject)?;
            if key.lifecycle_state != KeyState::PendingDeletion {
                return Err(KmsError::IncorrectState(format!(
                    "key {id} is {:?}, not PENDING_DELETION",
                    key.lifecycle_state
                )));
            }
            key.lifecycle_state = KeyState::Enabled;
            key.time_of_deletion = None;
            txn.put_key(&key)?;
            Ok(key)
        })
    }

    // ----- key versions -----

    /// Rotates a key: creates a new version that becomes primary. Older versions keep
    /// decrypting but never encrypt again.
    pub fn create_key_version(&self, principal: &Principal, key_id: &Ocid) -> Result<KeyVersion> {
        let subject = AuditSubject {
            key_id: Some(key_id.clone()),
            ..Default::default()
        };
        self.mutate(principal, "CreateKeyVersion", subject, |txn, now, subject| {
            let version = self.rotate_in(txn, now, key_id, false, subject)?;
            Ok(version)
        })
    }

    /// Picks up the versions an EXTERNAL key gained in its key manager (each becomes a key
    /// version here, the manager's current one the primary). Returns the new versions.
    pub fn refresh_external_key(&self, principal: &Principal, key_id: &Ocid) -> Result<Vec<KeyVersion>> {
        let key = self.get_key(key_id)?;
        let (Some(external_key_id), Some(manager)) = (
            key.external_key_id.clone(),
            self.get_vault(&key.vault_id)?.external_key_manager,
        ) else {
            return Err(KmsError::InvalidParameter(format!(
                "key {key_id} is not EXTERNAL; its versions are made here"
            )));
        };
        let state = self
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
        self.mutate(principal, "RefreshExternalKey", subject, |txn, now, _| {
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
            id: Ocid::generate(ResourceType::KeyVersion, &self.region),
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
        }
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
            let reference = crate::protection::ExternalVersionRef {
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

    /// [`Kms::refresh_external_key`] for every usable EXTERNAL key; the number of new
    /// versions, and the keys whose key manager could not be asked (with why).
    pub fn refresh_external_keys(&self, principal: &Principal) -> Result<(usize, Vec<(Ocid, KmsError)>)> {
        let mut added = 0;
        let mut failed = Vec::new();
        let replicas: std::collections::HashSet<Ocid> = self
            .list_vaults(None)?
            .into_iter()
            .filter(|v| {
                matches!(
                    v.replication,
                    Some(crate::replication::VaultReplication::Replica { .. })
                )
            })
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
        let backend = self.protection(key.protection_mode)?;
        let owner = VersionOwner {
            key_id: &key.id,
            vault_id: &key.vault_id,
            compartment_id: &key.compartment_id,
        };
        let version = self.new_version(&owner, now, automatic, None);
        subject.key_version_id = Some(version.id.clone());
        txn.put_key_material(&version.id, &backend.create_material(&version.id)?)?;
        txn.put_key_version(&version)?;
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
    pub fn get_key_version(&self, key_id: &Ocid, version_id: &Ocid) -> Result<KeyVersion> {
        self.read()?.key_version(key_id, version_id)
    }

    /// Every version of a key, oldest first.
    pub fn list_key_versions(&self, key_id: &Ocid) -> Result<Vec<KeyVersion>> {
        let txn = self.read()?;
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
        self.mutate(principal, op, subject, |txn, _, subject| {
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
    pub fn schedule_key_version_deletion(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        version_id: &Ocid,
        at: Option<Timestamp>,
    ) -> Result<KeyVersion> {
        let protected = self.data_protected_by(version_id)?;
        let subject = AuditSubject {
            key_id: Some(key_id.clone()),
            key_version_id: Some(version_id.clone()),
            ..Default::default()
        };
        self.mutate(principal, "ScheduleKeyVersionDeletion", subject, |txn, now, subject| {
            let key = Self::key_for_change(txn, key_id, subject)?;
            let mut version = txn.key_version(key_id, version_id)?;
            if !matches!(
                version.lifecycle_state,
                KeyVersionState::Enabled | KeyVersionState::Disabled
            ) {
                return Err(KmsError::IncorrectState(format!(
                    "key version {version_id} is {:?}",
                    version.lifecycle_state
                )));
            }
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
            version.time_of_deletion = Some(deletion_time(now, at)?);
            version.lifecycle_state = KeyVersionState::PendingDeletion;
            txn.put_key_version(&version)?;
            Ok(version)
        })
    }

    /// Cancels a version's scheduled deletion; it comes back ENABLED.
    pub fn cancel_key_version_deletion(
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
        self.mutate(principal, "CancelKeyVersionDeletion", subject, |txn, _, subject| {
            Self::key_for_change(txn, key_id, subject)?;
            let mut version = txn.key_version(key_id, version_id)?;
            if version.lifecycle_state != KeyVersionState::PendingDeletion {
                return Err(KmsError::IncorrectState(format!(
                    "key version {version_id} is {:?}, not PENDING_DELETION",
                    version.lifecycle_state
                )));
            }
            version.lifecycle_state = KeyVersionState::Enabled;
            version.time_of_deletion = None;
            txn.put_key_version(&version)?;
            Ok(version)
        })
    }

    /// Disables an old version (after a suspected compromise): ciphertexts made by it stop
    /// decrypting until it is enabled again. The primary version cannot be disabled, and a
    /// version that registered inventories say still protects data is refused unless `force`
    /// (re-encrypt that data first: `sealstore reencrypt`).
    pub fn disable_key_version(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        version_id: &Ocid,
        force: bool,
    ) -> Result<KeyVersion> {
        if !force {
            let protected = self.data_protected_by(version_id)?;
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
                self.audit_only(
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
    pub fn enable_key_version(&self, principal: &Principal, key_id: &Ocid, version_id: &Ocid) -> Result<KeyVersion> {
        self.set_version_state(
            principal,
            key_id,
            version_id,
            "EnableKeyVersion",
            KeyVersionState::Enabled,
        )
    }

    // ----- defaults, audit -----

    /// Creates the default vault and master key on first start; returns the existing ones
    /// afterwards.
    pub fn ensure_defaults(&self, principal: &Principal) -> Result<Defaults> {
        let txn = self.read()?;
        if let (Some(v), Some(k)) = (txn.meta(META_DEFAULT_VAULT)?, txn.meta(META_DEFAULT_KEY)?) {
            let vault = txn.vault(&Ocid::parse(ResourceType::Vault, &String::from_utf8_lossy(&v))?)?;
            let key = txn.key(&Ocid::parse(ResourceType::Key, &String::from_utf8_lossy(&k))?)?;
            return Ok(Defaults {
                vault,
                key,
                created: false,
            });
        }
        drop(txn);
        // One transaction, so a crash never leaves a default vault without its key.
        self.mutate(
            principal,
            "CreateDefaults",
            AuditSubject::default(),
            |txn, now, subject| {
                if let (Some(v), Some(k)) = (txn.meta(META_DEFAULT_VAULT)?, txn.meta(META_DEFAULT_KEY)?) {
                    let vault = txn.vault(&Ocid::parse(ResourceType::Vault, &String::from_utf8_lossy(&v))?)?;
                    let key = txn.key(&Ocid::parse(ResourceType::Key, &String::from_utf8_lossy(&k))?)?;
                    return Ok(Defaults {
                        vault,
                        key,
                        created: false,
                    });
                }
                let vault = self.create_vault_in(
                    txn,
                    now,
                    &CreateVault {
                        display_name: "default".into(),
                        ..Default::default()
                    },
                    subject,
                )?;
                let key = self.create_key_in(txn, now, &CreateKey::new(vault.id.clone(), "default"), None, subject)?;
                txn.set_meta(META_DEFAULT_VAULT, vault.id.as_str().as_bytes())?;
                txn.set_meta(META_DEFAULT_KEY, key.id.as_str().as_bytes())?;
                Ok(Defaults {
                    vault,
                    key,
                    created: true,
                })
            },
        )
    }

    /// Audit entries from sequence number `from` (1 is the first), at most `limit`.
    pub fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.write_pending_audit()?;
        audit::entries(&self.read()?, from.max(1), limit)
    }

    /// Walks the audit chain and reports the first break, if any.
    pub fn verify_audit(&self) -> Result<AuditVerification> {
        self.write_pending_audit()?;
        audit::verify(&self.read()?)
    }
}

impl Drop for Kms {
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
