//! [`Kms`]: the key-management service's public face over one data directory.
//!
//! `Kms` owns the [`Context`] (store, clock, protection backends, audit writer) and hands
//! each call to the service that owns it: [`crate::vaults`], [`crate::keys`],
//! [`crate::iam`], [`crate::rotation`], [`crate::envelope`] and [`crate::replication`].
//! Each management call is one write transaction holding the change and its audit entry; a
//! failed call is audited in a transaction of its own.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::asymmetric::{Asymmetric, SignatureInput, Signed};
use crate::audit::{self, AuditEntry, AuditRefusal, AuditSubject, AuditVerification, Principal};
use crate::backup::{BackupKind, BackupSummary, Backups};
use crate::byok::{Byok, ExportRequest, ExportedKey, WrappedKey};
use crate::context::{Context, DataInventory, KmsConfig};
use crate::envelope::{AssociatedData, DataKey, Decrypted, Dek, Encrypted, Envelope, KeyProvider, KeyStatus};
use crate::error::{KmsError, Result};
use crate::iam::{ApiKey, CreateUser, Group, Iam, IamView, Policy, User};
use crate::ids::{Ocid, ResourceType};
use crate::keys::{CreateKey, Keys, Material};
use crate::model::tenancy::{IamState, TenancyInfo, TenancyMember};
use crate::model::*;
use crate::protection::{KeyProtection, Placement};
use crate::replication::tenancy::Tenancy;
use crate::replication::{
    OperationStatus, OutboxEntry, Region, ReplicaView, Replication, ReplicationIdentity, Shipment,
};
use crate::rotation::{ComplianceReport, Scheduler, SchedulerReport};
use crate::time::Timestamp;
use crate::vaults::{CreateVault, UpdateResource, Vaults};

/// Meta key naming the default vault created on first start.
const META_DEFAULT_VAULT: &str = "default_vault_id";
/// Meta key naming the default master key created on first start.
const META_DEFAULT_KEY: &str = "default_key_id";

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

/// The key-management service over one data directory.
///
/// One method per operation; each names the [`Principal`] making it (IAM policies and the
/// audit log). A program embedding it for itself acts as [`Principal::local_admin`]. It is
/// also a [`KeyProvider`](crate::KeyProvider), for data paths that want data keys.
///
/// ```
/// use kms_core::{AssociatedData, CreateKey, CreateVault, Kms, KmsConfig, Principal};
///
/// let dir = tempfile::tempdir()?;
/// let kms = Kms::open(KmsConfig::new(dir.path()))?;
/// let me = Principal::local_admin();
/// let vault = kms.create_vault(&me, CreateVault { display_name: "apps".into(), ..Default::default() })?;
/// let key = kms.create_key(&me, CreateKey::new(vault.id, "orders"))?;
///
/// let sealed = kms.encrypt(&me, &key.id, b"card 4242", &AssociatedData::none())?;
/// kms.create_key_version(&me, &key.id)?; // rotate: the old version still decrypts
/// let opened = kms.decrypt(&me, &sealed.ciphertext, &AssociatedData::none(), None)?;
/// assert_eq!(opened.plaintext.as_slice(), b"card 4242");
/// let moved = kms.rewrap(&me, &sealed.ciphertext, &AssociatedData::none(), None)?;
/// assert_ne!(moved.key_version_id, sealed.key_version_id);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// `examples/envelope.rs` in the repository goes through it step by step.
#[derive(Debug)]
pub struct Kms {
    ctx: Context,
}

impl Kms {
    /// Opens the data directory, creating it, its root key and its tenancy on first use.
    pub fn open(config: KmsConfig) -> Result<Kms> {
        Ok(Kms {
            ctx: Context::open(config)?,
        })
    }

    /// Adds (or replaces) the backend for one protection mode.
    pub fn register_protection(&mut self, backend: Arc<dyn KeyProtection>) {
        self.ctx.register_protection(backend)
    }

    /// Adds a source of "data still protected by this key version" (see [`DataInventory`]).
    pub fn register_inventory(&mut self, inventory: Arc<dyn DataInventory>) {
        self.ctx.register_inventory(inventory)
    }

    /// Objects and volumes that still depend on `key_version`, over every registered
    /// inventory.
    pub fn data_protected_by(&self, key_version: &Ocid) -> Result<u64> {
        self.ctx.data_protected_by(key_version)
    }

    /// The tenancy (root compartment) id of this data directory.
    pub fn tenancy_id(&self) -> Ocid {
        self.ctx.tenancy_id()
    }

    /// The region name of this data directory.
    pub fn region(&self) -> &str {
        self.ctx.region()
    }

    /// The current time by this service's clock.
    pub fn now(&self) -> Timestamp {
        self.ctx.now()
    }

    fn vaults(&self) -> Vaults<'_> {
        Vaults::new(&self.ctx)
    }

    fn keys(&self) -> Keys<'_> {
        Keys::new(&self.ctx)
    }

    fn iam(&self) -> Iam<'_> {
        Iam::new(&self.ctx)
    }

    fn scheduler(&self) -> Scheduler<'_> {
        Scheduler::new(&self.ctx)
    }

    fn envelope(&self) -> Envelope<'_> {
        Envelope::new(&self.ctx)
    }

    fn asymmetric(&self) -> Asymmetric<'_> {
        Asymmetric::new(&self.ctx)
    }

    fn replication(&self) -> Replication<'_> {
        Replication::new(&self.ctx)
    }

    fn tenancy(&self) -> Tenancy<'_> {
        Tenancy::new(&self.ctx)
    }

    fn backups(&self) -> Backups<'_> {
        Backups::new(&self.ctx)
    }

    // ----- audit -----

    /// Writes crypto-call audit entries as they are queued, on the calling thread, until
    /// `stop` is set (and the writer woken by [`Kms::wake_audit_writer`]): one transaction
    /// per batch, made durable every `AUDIT_FLUSH_EVERY` entries or
    /// every second, and once more on the way out. Meanwhile crypto calls only queue their
    /// entries. For servers: the durability is the same as without it.
    pub fn run_audit_writer(&self, stop: &AtomicBool) -> Result<()> {
        self.ctx.run_audit_writer(stop)
    }

    /// Whether [`Kms::run_audit_writer`] runs, so that crypto calls never touch the store's
    /// write side.
    pub fn audit_writer_running(&self) -> bool {
        self.ctx.audit_writer_running()
    }

    /// Wakes [`Kms::run_audit_writer`] (after setting its `stop`).
    pub fn wake_audit_writer(&self) {
        self.ctx.wake_audit_writer()
    }

    /// Makes every audit entry recorded so far durable (one fsync), if any is pending.
    pub fn flush_audit(&self) -> Result<()> {
        self.ctx.flush_audit()
    }

    // ----- IAM snapshot, replication signals -----

    /// The current users, groups, policies and compartment tree, for checking requests.
    pub fn iam_view(&self) -> Result<Arc<IamView>> {
        self.ctx.iam_view()
    }

    /// This region's replication identity (made on first use).
    pub fn replication_identity(&self) -> Result<&ReplicationIdentity> {
        self.ctx.replication_identity()
    }

    /// Wakes [`Kms::wait_for_replication_work`] (after the commit that queued work, or to
    /// let a shipper see that it should stop).
    pub fn notify_replication(&self) {
        self.ctx.replication_signal().notify()
    }

    /// A counter that moves whenever work is queued: read it before looking at the outbox,
    /// then [`Kms::wait_for_replication_work`] returns at once if work came meanwhile.
    pub fn replication_generation(&self) -> u64 {
        self.ctx.replication_signal().generation()
    }

    /// Waits up to `timeout` for work queued after generation `seen`.
    pub fn wait_for_replication_work(&self, seen: u64, timeout: Duration) {
        self.ctx.replication_signal().wait(seen, timeout)
    }

    /// Takes or renews the lease `name` of the KMS's store for `holder` until `ttl` from now:
    /// true when `holder` holds it (always, on a store no other server shares). Servers
    /// sharing one store run a background task only while they hold its lease.
    pub fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        self.ctx.lease(name, holder, ttl)
    }

    /// Whether other servers share this KMS's store (a fleet on PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.ctx.is_shared()
    }

    // ----- defaults -----

    /// Creates the default vault and master key on first start; returns the existing ones
    /// afterwards.
    pub fn ensure_defaults(&self, principal: &Principal) -> Result<Defaults> {
        let txn = self.ctx.read()?;
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
        self.ctx.mutate(
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
                let vault = self.vaults().create_vault_in(
                    txn,
                    now,
                    &CreateVault {
                        display_name: "default".into(),
                        ..Default::default()
                    },
                    subject,
                )?;
                let key = self.keys().create_key_in(
                    txn,
                    now,
                    &CreateKey::new(vault.id.clone(), "default"),
                    None,
                    &Material::Generate,
                    subject,
                )?;
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
        self.ctx.write_pending_audit()?;
        audit::entries(&self.ctx.read()?, from.max(1), limit)
    }

    /// Records a call refused before it ran (not authenticated, not authorized, a failed or
    /// locked-out sign-in) in the audit chain, result DENIED, through the group-committed
    /// writer: a flood of refusals costs no fsync each.
    pub fn audit_refusal(&self, refusal: AuditRefusal) -> Result<()> {
        self.ctx.queue_audit(crate::audit::writer::PendingAudit {
            time: self.ctx.now(),
            principal: Principal::new(refusal.principal),
            operation: refusal.operation.into(),
            subject: refusal.subject,
            outcome: Err(refusal.reason),
            refused: Some(crate::audit::writer::Refused {
                principal_name: refusal.principal_name,
                source: refusal.source,
            }),
        })
    }

    /// Walks the audit chain and reports the first break, if any.
    pub fn verify_audit(&self) -> Result<AuditVerification> {
        self.ctx.write_pending_audit()?;
        audit::verify(&self.ctx.read()?)
    }

    // ----- delegated to the services -----

    /// Every compartment, oldest (the tenancy) first.
    pub fn list_compartments(&self) -> Result<Vec<Compartment>> {
        self.vaults().list_compartments()
    }

    /// Creates a vault.
    pub fn create_vault(&self, principal: &Principal, req: CreateVault) -> Result<Vault> {
        self.vaults().create_vault(principal, req)
    }

    /// A vault by id.
    pub fn get_vault(&self, id: &Ocid) -> Result<Vault> {
        self.vaults().get_vault(id)
    }

    /// Vaults, oldest first; only those in `compartment` when given.
    pub fn list_vaults(&self, compartment: Option<&Ocid>) -> Result<Vec<Vault>> {
        self.vaults().list_vaults(compartment)
    }

    /// Renames or retags a vault.
    pub fn update_vault(&self, principal: &Principal, id: &Ocid, update: UpdateResource) -> Result<Vault> {
        self.vaults().update_vault(principal, id, update)
    }

    /// Schedules a vault's deletion 7–30 days ahead (30 when `at` is `None`). Its keys are
    /// unusable from now until the deletion is cancelled; at the deadline they are destroyed.
    pub fn schedule_vault_deletion(&self, principal: &Principal, id: &Ocid, at: Option<Timestamp>) -> Result<Vault> {
        self.vaults().schedule_vault_deletion(principal, id, at)
    }

    /// Cancels a scheduled vault deletion; its keys become usable again.
    pub fn cancel_vault_deletion(&self, principal: &Principal, id: &Ocid) -> Result<Vault> {
        self.vaults().cancel_vault_deletion(principal, id)
    }

    /// Creates a master key of the requested shape (AES-256 by default) with its first version.
    pub fn create_key(&self, principal: &Principal, req: CreateKey) -> Result<Key> {
        self.keys().create_key(principal, req)
    }

    /// A key by id.
    pub fn get_key(&self, id: &Ocid) -> Result<Key> {
        self.keys().get_key(id)
    }

    /// Keys, oldest first; filtered by vault and compartment when given.
    pub fn list_keys(&self, vault: Option<&Ocid>, compartment: Option<&Ocid>) -> Result<Vec<Key>> {
        self.keys().list_keys(vault, compartment)
    }

    /// Renames, retags or changes auto-rotation of a key.
    pub fn update_key(&self, principal: &Principal, id: &Ocid, update: UpdateResource) -> Result<Key> {
        self.keys().update_key(principal, id, update)
    }

    /// Enables a disabled key.
    pub fn enable_key(&self, principal: &Principal, id: &Ocid) -> Result<Key> {
        self.keys().enable_key(principal, id)
    }

    /// Disables a key: every encrypt and decrypt under it is refused until it is enabled.
    pub fn disable_key(&self, principal: &Principal, id: &Ocid) -> Result<Key> {
        self.keys().disable_key(principal, id)
    }

    /// Schedules a key's deletion 7–30 days ahead; it is unusable until cancelled.
    pub fn schedule_key_deletion(&self, principal: &Principal, id: &Ocid, at: Option<Timestamp>) -> Result<Key> {
        self.keys().schedule_key_deletion(principal, id, at)
    }

    /// Cancels a scheduled key deletion; the key comes back ENABLED.
    pub fn cancel_key_deletion(&self, principal: &Principal, id: &Ocid) -> Result<Key> {
        self.keys().cancel_key_deletion(principal, id)
    }

    /// Rotates a key: creates a new version that becomes primary. Older versions keep
    /// decrypting but never encrypt again.
    pub fn create_key_version(&self, principal: &Principal, key_id: &Ocid) -> Result<KeyVersion> {
        self.keys().create_key_version(principal, key_id)
    }

    /// Picks up the versions an EXTERNAL key gained in its key manager (each becomes a key
    /// version here, the manager's current one the primary). Returns the new versions.
    pub fn refresh_external_key(&self, principal: &Principal, key_id: &Ocid) -> Result<Vec<KeyVersion>> {
        self.keys().refresh_external_key(principal, key_id)
    }

    /// [`Kms::refresh_external_key`] for every usable EXTERNAL key; the number of new
    /// versions, and the keys whose key manager could not be asked (with why).
    pub fn refresh_external_keys(&self, principal: &Principal) -> Result<(usize, Vec<(Ocid, KmsError)>)> {
        self.keys().refresh_external_keys(principal)
    }

    /// A version of a key.
    pub fn get_key_version(&self, key_id: &Ocid, version_id: &Ocid) -> Result<KeyVersion> {
        self.keys().get_key_version(key_id, version_id)
    }

    /// Every version of a key, oldest first.
    pub fn list_key_versions(&self, key_id: &Ocid) -> Result<Vec<KeyVersion>> {
        self.keys().list_key_versions(key_id)
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
        self.keys()
            .schedule_key_version_deletion(principal, key_id, version_id, at)
    }

    /// Cancels a version's scheduled deletion; it comes back ENABLED.
    pub fn cancel_key_version_deletion(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        version_id: &Ocid,
    ) -> Result<KeyVersion> {
        self.keys().cancel_key_version_deletion(principal, key_id, version_id)
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
        self.keys().disable_key_version(principal, key_id, version_id, force)
    }

    /// Enables a disabled version again.
    pub fn enable_key_version(&self, principal: &Principal, key_id: &Ocid, version_id: &Ocid) -> Result<KeyVersion> {
        self.keys().enable_key_version(principal, key_id, version_id)
    }

    /// Creates the Administrators group and its tenancy-wide policy if they are missing.
    pub fn ensure_iam_defaults(&self, principal: &Principal) -> Result<()> {
        self.iam().ensure_iam_defaults(principal)
    }

    /// Creates an API user, optionally with a first public key and group memberships.
    pub fn create_user(&self, principal: &Principal, req: CreateUser) -> Result<User> {
        self.iam().create_user(principal, req)
    }

    /// Adds an API public key to a user (up to three, as OCI).
    pub fn add_api_key(&self, principal: &Principal, user_name: &str, pem: &str) -> Result<ApiKey> {
        self.iam().add_api_key(principal, user_name, pem)
    }

    /// Deletes a user (and its group memberships); its signatures stop working at once.
    pub fn delete_user(&self, principal: &Principal, user_name: &str) -> Result<User> {
        self.iam().delete_user(principal, user_name)
    }

    /// Sets the console password of a user, as an Argon2id PHC hash made by the caller (the
    /// password itself never reaches the KMS), or removes it (`None`): the user can then no
    /// longer sign in to the console.
    pub fn set_console_password(&self, principal: &Principal, user_name: &str, phc: Option<&str>) -> Result<User> {
        self.iam().set_console_password(principal, user_name, phc)
    }

    /// A user's console password hash, if set.
    pub fn console_password(&self, user: &Ocid) -> Result<Option<String>> {
        self.iam().console_password(user)
    }

    /// Every user, oldest first.
    pub fn list_users(&self) -> Result<Vec<User>> {
        self.iam().list_users()
    }

    /// Creates a group.
    pub fn create_group(&self, principal: &Principal, name: &str, description: &str) -> Result<Group> {
        self.iam().create_group(principal, name, description)
    }

    /// Adds a user to a group (by names).
    pub fn add_user_to_group(&self, principal: &Principal, group_name: &str, user_name: &str) -> Result<Group> {
        self.iam().add_user_to_group(principal, group_name, user_name)
    }

    /// Deletes a group (its policies' statements then match nobody).
    pub fn delete_group(&self, principal: &Principal, name: &str) -> Result<Group> {
        self.iam().delete_group(principal, name)
    }

    /// Every group, oldest first.
    pub fn list_groups(&self) -> Result<Vec<Group>> {
        self.iam().list_groups()
    }

    /// Creates a policy; every statement must parse and name existing compartments.
    pub fn create_policy(
        &self,
        principal: &Principal,
        name: &str,
        description: &str,
        statements: Vec<String>,
    ) -> Result<Policy> {
        self.iam().create_policy(principal, name, description, statements)
    }

    /// Deletes a policy.
    pub fn delete_policy(&self, principal: &Principal, name: &str) -> Result<Policy> {
        self.iam().delete_policy(principal, name)
    }

    /// Every policy, oldest first.
    pub fn list_policies(&self) -> Result<Vec<Policy>> {
        self.iam().list_policies()
    }

    /// Creates a compartment below `parent` (a name or id; the tenancy when absent). Names
    /// are unique among siblings.
    pub fn create_compartment(
        &self,
        principal: &Principal,
        name: &str,
        description: &str,
        parent: Option<&str>,
    ) -> Result<Compartment> {
        self.iam().create_compartment(principal, name, description, parent)
    }

    /// Lists every enabled key (in an active vault) whose primary version is older than
    /// `max_age_days`.
    pub fn compliance_report(&self, max_age_days: i64) -> Result<ComplianceReport> {
        self.scheduler().compliance_report(max_age_days)
    }

    /// One scheduler pass: rotates keys whose auto-rotation is due and purges vaults and keys
    /// whose deletion time has passed. Safe to call at any frequency.
    pub fn run_scheduled(&self) -> Result<SchedulerReport> {
        self.scheduler().run_scheduled()
    }

    /// Where a crypto call on `key_id` may run (the one place that decides, for the data
    /// path's key service and the KMS API alike): [`Placement::Inline`] for a SOFTWARE key
    /// while [`Kms::run_audit_writer`] runs, [`Placement::Blocking`] otherwise.
    pub fn placement(&self, key_id: &Ocid) -> Placement {
        self.envelope().placement(key_id)
    }

    /// Encrypts at most [`MAX_PLAINTEXT`](crate::envelope::MAX_PLAINTEXT) bytes under `key_id`'s primary version.
    pub fn encrypt(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        plaintext: &[u8],
        aad: &AssociatedData,
    ) -> Result<Encrypted> {
        self.envelope().encrypt(principal, key_id, plaintext, aad)
    }

    /// As [`Kms::encrypt`], naming the version explicitly (it must be the primary).
    pub fn encrypt_with_version(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        key_version_id: Option<&Ocid>,
        plaintext: &[u8],
        aad: &AssociatedData,
    ) -> Result<Encrypted> {
        self.envelope()
            .encrypt_with_version(principal, key_id, key_version_id, plaintext, aad)
    }

    /// Signs a message or its digest with an RSA or ECDSA key (its current version unless the
    /// input names one).
    pub fn sign(&self, principal: &Principal, input: SignatureInput<'_>) -> Result<Signed> {
        self.asymmetric().sign(principal, input)
    }

    /// Whether `signature` verifies under the key version the input names (required): `Ok(false)`
    /// for a signature that does not match.
    pub fn verify(&self, principal: &Principal, input: SignatureInput<'_>, signature: &[u8]) -> Result<bool> {
        self.asymmetric().verify(principal, input, signature)
    }

    /// Encrypts `plaintext` with RSA-OAEP to an RSA key version's public key (the current one
    /// unless named); the ciphertext is the raw OAEP block.
    pub fn rsa_encrypt(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        key_version_id: Option<&Ocid>,
        algorithm: RsaEncryption,
        plaintext: &[u8],
    ) -> Result<Encrypted> {
        self.asymmetric()
            .rsa_encrypt(principal, key_id, key_version_id, algorithm, plaintext)
    }

    /// Decrypts a raw RSA-OAEP ciphertext with an RSA key version (the current one unless named).
    pub fn rsa_decrypt(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        key_version_id: Option<&Ocid>,
        algorithm: RsaEncryption,
        ciphertext: &[u8],
    ) -> Result<Decrypted> {
        self.asymmetric()
            .rsa_decrypt(principal, key_id, key_version_id, algorithm, ciphertext)
    }

    /// The wrapping key of `vault_id`, which key material to import is wrapped under; made on
    /// first use (RSA-4096, SOFTWARE-protected).
    pub fn wrapping_key(&self, principal: &Principal, vault_id: &Ocid) -> Result<WrappingKey> {
        Byok::new(&self.ctx).wrapping_key(principal, vault_id)
    }

    /// Bring your own key: creates a key of `req`'s shape whose first version is the material
    /// `wrapped` under the vault's wrapping key (origin EXTERNAL). Material that does not
    /// unwrap, or does not fit the shape, is refused and nothing is created.
    pub fn import_key(&self, principal: &Principal, req: CreateKey, wrapped: &WrappedKey) -> Result<Key> {
        Byok::new(&self.ctx).import_key(principal, req, wrapped)
    }

    /// Bring your own key: rotates `key_id` to a new version made of the material `wrapped`
    /// under its vault's wrapping key, which becomes the current version.
    pub fn import_key_version(&self, principal: &Principal, key_id: &Ocid, wrapped: &WrappedKey) -> Result<KeyVersion> {
        Byok::new(&self.ctx).import_key_version(principal, key_id, wrapped)
    }

    /// Exports a SOFTWARE key version's material wrapped under the caller's RSA public key.
    pub fn export_key(&self, principal: &Principal, req: ExportRequest<'_>) -> Result<ExportedKey> {
        Byok::new(&self.ctx).export_key(principal, req)
    }

    /// Encrypts under `key_version_id`, which may be any ENABLED version of the key, not only
    /// the primary: for key managers whose callers choose the version (sealstore's reference
    /// external key manager, which EXTERNAL keys elsewhere reference version by version).
    pub fn encrypt_under_version(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        key_version_id: &Ocid,
        plaintext: &[u8],
        aad: &AssociatedData,
    ) -> Result<Encrypted> {
        self.envelope()
            .encrypt_under_version(principal, key_id, key_version_id, plaintext, aad)
    }

    /// Decrypts a ciphertext made by [`Kms::encrypt`] or [`Kms::generate_data_key`].
    pub fn decrypt(
        &self,
        principal: &Principal,
        ciphertext: &[u8],
        aad: &AssociatedData,
        expected_key: Option<&Ocid>,
    ) -> Result<Decrypted> {
        self.envelope().decrypt(principal, ciphertext, aad, expected_key)
    }

    /// Generates a 256-bit DEK wrapped by `key_id`'s primary version; the plaintext copy is
    /// returned only when `include_plaintext`.
    pub fn generate_data_key(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        aad: &AssociatedData,
        include_plaintext: bool,
    ) -> Result<DataKey> {
        self.envelope()
            .generate_data_key(principal, key_id, aad, include_plaintext)
    }

    /// Re-encrypts a ciphertext under the current primary version of its key (or of
    /// `target_key` when given). The plaintext never leaves kms-core.
    pub fn rewrap(
        &self,
        principal: &Principal,
        ciphertext: &[u8],
        aad: &AssociatedData,
        target_key: Option<&Ocid>,
    ) -> Result<Encrypted> {
        self.envelope().rewrap(principal, ciphertext, aad, target_key)
    }

    /// Registers (or updates) a peer region.
    pub fn add_region(&self, principal: &Principal, region: Region) -> Result<Region> {
        self.replication().add_region(principal, region)
    }

    /// Registered peer regions.
    pub fn list_regions(&self) -> Result<Vec<Region>> {
        self.replication().list_regions()
    }

    /// Forgets a peer region (refused while a vault replicates to it).
    pub fn remove_region(&self, principal: &Principal, name: &str) -> Result<()> {
        self.replication().remove_region(principal, name)
    }

    /// Starts replicating `vault_id` to `region`: refused for replicas, vaults not ACTIVE,
    /// unknown regions and vaults holding HSM keys (whose material cannot leave the token).
    pub fn create_replica(&self, principal: &Principal, vault_id: &Ocid, region: &str) -> Result<Vault> {
        self.replication().create_replica(principal, vault_id, region)
    }

    /// Deletes the replica of `vault_id` in `region`: DELETING until the destination
    /// confirms (it stops serving the vault and destroys its material), then DELETED.
    pub fn delete_replica(&self, principal: &Principal, vault_id: &Ocid, region: &str) -> Result<Vault> {
        self.replication().delete_replica(principal, vault_id, region)
    }

    /// The replicas of `vault_id`, with their lag.
    pub fn replicas(&self, vault_id: &Ocid) -> Result<Vec<ReplicaView>> {
        self.replication().replicas(vault_id)
    }

    /// Whether operation number `operation` of `vault_id` (a replication id's, see
    /// [`crate::replication::parse_replication_id`]) reached each replica region.
    pub fn replication_status(&self, vault_id: &Ocid, operation: u64) -> Result<Vec<OperationStatus>> {
        self.replication().replication_status(vault_id, operation)
    }

    /// What waits to be shipped.
    pub fn replication_outbox(&self) -> Result<Vec<OutboxEntry>> {
        self.replication().replication_outbox()
    }

    /// The region and what to ship for `entry` (a state with material wrapped for that
    /// region, or a replica's removal); `None` when the entry had nothing left to ship.
    pub fn replication_shipment(&self, entry: &OutboxEntry) -> Result<Option<(Region, Shipment)>> {
        self.replication().replication_shipment(entry)
    }

    /// Records that the destination acknowledged `shipped`, sent for `entry` (the replica
    /// becomes CREATED, or DELETED after a removal).
    pub fn replication_shipped(&self, entry: &OutboxEntry, shipped: &Shipment) -> Result<()> {
        self.replication().replication_shipped(entry, shipped)
    }

    /// Ships the whole state of `vault_id` to `region` next time (its replica lacks material
    /// an incremental state left out).
    pub fn replication_resend(&self, vault_id: &Ocid, region: &str) -> Result<()> {
        self.replication().replication_resend(vault_id, region)
    }

    /// Applies what `from` (a registered region whose signature the caller checked)
    /// shipped: a vault state (the vault becomes or stays a replica of `from`, with exactly
    /// its keys, versions and material), or a replica's removal.
    pub fn apply_replication(&self, from: &str, shipment: Shipment) -> Result<()> {
        self.replication().apply_shipment(from, shipment)
    }

    // ----- backup and restore (docs/KMS_BACKUP.md) -----

    /// Backs up a key (ENABLED or DISABLED) with every version and its material, sealed so
    /// that only this deployment restores it; `deliver` stores the backup (UTF-8 text) where
    /// the caller wants it. Audited as `BackupKey`, with delivery's outcome.
    pub fn backup_key(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        deliver: impl FnOnce(&[u8]) -> Result<()>,
    ) -> Result<Key> {
        self.backups().backup_key(principal, key_id, deliver)
    }

    /// Backs up an ACTIVE vault, and its keys that are not deleted when `include_keys`, as
    /// [`Kms::backup_key`] does a key. Audited as `BackupVault`.
    pub fn backup_vault(
        &self,
        principal: &Principal,
        vault_id: &Ocid,
        include_keys: bool,
        deliver: impl FnOnce(&[u8]) -> Result<()>,
    ) -> Result<Vault> {
        self.backups().backup_vault(principal, vault_id, include_keys, deliver)
    }

    /// Authenticates a backup of `kind` and says what it would restore (each key's
    /// compartment: its own when it exists here, else `fallback`), for permission checks.
    pub fn backup_summary(&self, backup: &[u8], kind: BackupKind, fallback: &Ocid) -> Result<BackupSummary> {
        self.backups().summary(backup, kind, fallback)
    }

    /// Restores a key backup into `vault_id`: the key keeps its id, versions and material and
    /// names its origin in `restoredFromKeyId`. [`KmsError::AlreadyExists`] when the key
    /// exists and is not DELETED; an altered backup or one of another deployment is refused
    /// and restores nothing.
    pub fn restore_key(&self, principal: &Principal, vault_id: &Ocid, backup: &[u8]) -> Result<Key> {
        self.backups().restore_key(principal, vault_id, backup)
    }

    /// Restores a vault backup (with the keys it holds) into `compartment`, as
    /// [`Kms::restore_key`] does a key.
    pub fn restore_vault(&self, principal: &Principal, compartment: &Ocid, backup: &[u8]) -> Result<Vault> {
        self.backups().restore_vault(principal, compartment, backup)
    }

    // ----- one tenancy across regions -----

    /// This region's tenancy, its home region and (on the home) its member regions.
    pub fn tenancy_info(&self) -> Result<TenancyInfo> {
        self.tenancy().info()
    }

    /// In the home region: admits the registered peer `region` (whose replication signature
    /// the caller checked) as a member of this tenancy; answers the IAM state it adopts.
    pub fn admit_tenancy_member(&self, region: &str) -> Result<IamState> {
        self.tenancy().admit_member(region)
    }

    /// Whether this region may join the tenancy of `home` (checked before asking it).
    pub fn check_join_tenancy(&self, home: &str) -> Result<()> {
        self.tenancy().check_join(home)
    }

    /// Makes this region a member of the tenancy whose home region `home` answered `state`
    /// (see [`Kms::admit_tenancy_member`]): its tenancy id and IAM become the home's.
    pub fn join_tenancy(&self, principal: &Principal, home: &str, state: IamState) -> Result<TenancyInfo> {
        self.tenancy().join(principal, home, state)
    }

    /// In a member region: applies the IAM state its home region `from` shipped.
    pub fn apply_iam_state(&self, from: &str, state: IamState) -> Result<()> {
        self.tenancy().apply_iam(from, state)
    }

    /// The tenancy's whole IAM state as this region holds it (what the home ships).
    pub fn iam_state(&self) -> Result<IamState> {
        self.tenancy().iam_state()
    }

    /// In the home region: members that have not acknowledged the latest IAM change.
    pub fn iam_pending_members(&self) -> Result<Vec<(Region, TenancyMember)>> {
        self.tenancy().pending_members()
    }

    /// In the home region: `region` acknowledged IAM revision `revision`.
    pub fn iam_shipped(&self, region: &str, revision: u64) -> Result<()> {
        self.tenancy().iam_shipped(region, revision)
    }
}

impl KeyProvider for Kms {
    fn generate_data_key(&self, key_id: &Ocid, aad: &[u8]) -> Result<DataKey> {
        self.envelope().data_path_key(key_id, aad)
    }

    fn unwrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<Dek> {
        self.envelope().unwrap_data_key(wrapped, aad)
    }

    fn rewrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<(Vec<u8>, Ocid)> {
        self.envelope().rewrap_data_key(wrapped, aad)
    }

    fn key_status(&self, key_id: &Ocid) -> Result<KeyStatus> {
        self.envelope().key_status(key_id)
    }

    fn key_version_state(&self, key_id: &Ocid, key_version_id: &Ocid) -> Result<KeyVersionState> {
        self.envelope().key_version_state(key_id, key_version_id)
    }

    fn keys_named(&self, name: &str) -> Result<Vec<Ocid>> {
        self.envelope().keys_named(name)
    }

    fn placement(&self, key_id: &Ocid) -> Placement {
        Kms::placement(self, key_id)
    }
}
