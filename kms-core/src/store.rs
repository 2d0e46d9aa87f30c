//! Persistence: the KMS namespace of the metadata store (`sealstore-meta`): the embedded
//! `kms.redb` file in the data directory by default, or a shared PostgreSQL database.
//!
//! Records are stored as `{"seq": n, "record": {…}}`: `seq` numbers records in the order they
//! were first stored (a counter in `meta`), so every listing comes back oldest first even when
//! several records were created in the same millisecond.
//!
//! Every management operation runs in one write transaction that also appends its audit
//! entry, so a crash (even `kill -9`) leaves either the whole change with its audit record or
//! neither. Records are JSON so that a human with `redb` or SQL tooling can read them.
//!
//! Durability: management changes commit with [`Durability::Immediate`] (fsync before the
//! call returns), together with their audit entry. Crypto operations change no state; their
//! audit entries are queued, written in groups (one transaction for whatever concurrent calls
//! queued meanwhile) with [`Durability::Deferred`], and made durable in batches by
//! [`crate::Kms::flush_audit`] (after 1024 entries, every second under `sealstore serve`, on
//! close, and by any management change). A crash can therefore lose at most the last second
//! of crypto-call audit entries — never a key, a version or a state change — and the chain
//! stays intact because entries and chain head roll back together.

use std::ops::ControlFlow;
use std::sync::Arc;

use sealstore_meta::{Durability, Engine, Location, Table};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::iam::{Group, Policy, User};
use crate::model::replication::{OutboxEntry, Region};
use crate::model::tenancy::TenancyMember;
use crate::model::{Compartment, Key, KeyVersion, Vault, WrappingKey};

/// The KMS namespace's tables (public so that inspection tools and tamper tests can find
/// them in the embedded file).
pub mod schema {
    use sealstore_meta::{Namespace, Table};

    /// Singletons: tenancy id, region, root-key check value, audit chain head.
    pub(crate) const META: Table = Table::str_to_bytes("meta");
    /// Compartment id → JSON [`crate::model::Compartment`].
    pub(crate) const COMPARTMENTS: Table = Table::str_to_bytes("compartments");
    /// Vault id → JSON [`crate::model::Vault`].
    pub(crate) const VAULTS: Table = Table::str_to_bytes("vaults");
    /// Key id → JSON [`crate::model::Key`].
    pub(crate) const KEYS: Table = Table::str_to_bytes("keys");
    /// `"{key id}/{version id}"` → JSON [`crate::model::KeyVersion`].
    pub(crate) const KEY_VERSIONS: Table = Table::str_to_bytes("key_versions");
    /// Version id → protected key material (as the protection backend returned it).
    pub const KEY_MATERIAL: Table = Table::str_to_bytes("key_material");
    /// Vault id → JSON [`crate::model::WrappingKey`] (its sealed private key is in
    /// `key_material` under the wrapping key's id).
    pub(crate) const WRAPPING_KEYS: Table = Table::str_to_bytes("wrapping_keys");
    /// User id → JSON [`crate::model::iam::User`] (with its API public keys).
    pub(crate) const IAM_USERS: Table = Table::str_to_bytes("iam_users");
    /// User id → JSON string: the user's console password as an Argon2id PHC hash (kept
    /// apart from the user record, which lists and the API show).
    pub(crate) const CONSOLE_PASSWORDS: Table = Table::str_to_bytes("console_passwords");
    /// Group id → JSON [`crate::model::iam::Group`] (with its members).
    pub(crate) const IAM_GROUPS: Table = Table::str_to_bytes("iam_groups");
    /// Policy id → JSON [`crate::model::iam::Policy`].
    pub(crate) const IAM_POLICIES: Table = Table::str_to_bytes("iam_policies");
    /// Region name → JSON [`Region`](crate::model::replication::Region) (registered replication peers).
    pub(crate) const REGIONS: Table = Table::str_to_bytes("regions");
    /// `"{region}/{vault id}"` → JSON [`OutboxEntry`](crate::model::replication::OutboxEntry): changes of a
    /// replicated vault not yet shipped to that region, written with the change itself.
    pub(crate) const REPLICATION_OUTBOX: Table = Table::str_to_bytes("replication_outbox");
    /// Member region name → JSON [`crate::model::tenancy::TenancyMember`]: the regions that
    /// joined this (home) region's tenancy, and what they acknowledged.
    pub(crate) const TENANCY_MEMBERS: Table = Table::str_to_bytes("tenancy_members");
    /// Sequence number → JSON [`crate::model::audit::AuditEntry`].
    pub const AUDIT: Table = Table::u64_to_bytes("audit");

    /// The KMS namespace: every table above, in `kms.redb` when embedded.
    pub const NAMESPACE: Namespace = Namespace {
        name: "kms",
        file: super::DB_FILE,
        tables: &[
            META,
            COMPARTMENTS,
            VAULTS,
            KEYS,
            KEY_VERSIONS,
            KEY_MATERIAL,
            WRAPPING_KEYS,
            AUDIT,
            IAM_USERS,
            IAM_GROUPS,
            IAM_POLICIES,
            REGIONS,
            REPLICATION_OUTBOX,
            CONSOLE_PASSWORDS,
            TENANCY_MEMBERS,
        ],
        // Sealed key material and the audit log: owner only.
        private: true,
    };
}

use schema::*;

/// Meta key for the tenancy id.
pub(crate) const META_TENANCY: &str = "tenancy_id";
/// Meta key for the tenancy's home region, on a member region (absent: this region is the
/// home of its tenancy).
pub(crate) const META_TENANCY_HOME: &str = "tenancy_home_region";
/// Meta key for the IAM revision (big-endian u64): moved by every IAM change in the home
/// region; on a member, the revision of the IAM state it applied last.
pub(crate) const META_IAM_REVISION: &str = "iam_revision";
/// Meta key for the region name.
pub(crate) const META_REGION: &str = "region";
/// Meta key for the root-key check value.
pub(crate) const META_ROOT_CHECK: &str = "root_key_check";
/// Meta key for the audit chain head.
pub(crate) const META_AUDIT_HEAD: &str = "audit_head";
/// Meta key for the next record sequence number.
const META_NEXT_SEQ: &str = "next_record_seq";

/// The database file name inside the data directory.
pub const DB_FILE: &str = "kms.redb";

/// The KMS namespace, opened.
#[derive(Debug)]
pub(crate) struct Store {
    engine: Arc<dyn Engine>,
    cache: RecordCache,
}

/// How long a record read from a store other servers share is used before it is read again:
/// the bound on how late a rotation, a disable or a deletion made through another server is
/// in force here (changes made through this server are in force at once).
pub(crate) const RECORD_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Rows of the tables every crypto operation reads — keys, versions, vaults, sealed material
/// — as snapshots read them, so that an operation on a known key reads nothing from the
/// store (on PostgreSQL, no round trip). An entry is used while no commit of this process has
/// changed a record since it was read (`generation`), and, on a shared store, for at most
/// [`RECORD_RECHECK`]. Write transactions never use it: what a change decides on is read from
/// the store.
#[derive(Debug)]
struct RecordCache {
    /// Moved by every commit here that changed a record (commits of audit entries alone do
    /// not).
    generation: std::sync::atomic::AtomicU64,
    rows: std::sync::Mutex<std::collections::HashMap<(&'static str, Vec<u8>), CachedRow>>,
    shared: bool,
}

#[derive(Debug)]
struct CachedRow {
    value: Vec<u8>,
    generation: u64,
    read_at: std::time::Instant,
}

/// Tables whose rows [`RecordCache`] keeps.
fn cached(table: Table) -> bool {
    [KEYS, KEY_VERSIONS, VAULTS, KEY_MATERIAL].contains(&table)
}

/// At most this many rows are cached (past it the cache starts again, empty).
const CACHED_ROWS: usize = 4096;

impl RecordCache {
    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        let rows = self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let row = rows.get(&(table.name(), key.to_vec()))?;
        let fresh = row.generation == self.generation() && (!self.shared || row.read_at.elapsed() < RECORD_RECHECK);
        fresh.then(|| row.value.clone())
    }

    /// Keeps `value`, read by a snapshot begun at `generation` (or later).
    fn put(&self, table: Table, key: &[u8], value: &[u8], generation: u64) {
        let mut rows = self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if rows.len() >= CACHED_ROWS {
            rows.clear();
        }
        rows.insert(
            (table.name(), key.to_vec()),
            CachedRow {
                value: value.to_vec(),
                generation,
                read_at: std::time::Instant::now(),
            },
        );
    }
}

impl Store {
    /// Opens (creating if needed) the KMS namespace at `location`.
    pub(crate) fn open(location: &Location) -> Result<Store> {
        let engine = location.open(&NAMESPACE)?;
        Ok(Store {
            cache: RecordCache {
                generation: std::sync::atomic::AtomicU64::new(0),
                rows: std::sync::Mutex::default(),
                shared: engine.is_shared(),
            },
            engine,
        })
    }

    /// Starts a read transaction (a consistent snapshot, taken when it first reads what the
    /// cache does not have).
    pub(crate) fn read(&self) -> Result<ReadTxn<'_>> {
        Ok(ReadTxn {
            generation: self.cache.generation(),
            store: self,
            inner: std::cell::OnceCell::new(),
        })
    }

    /// Starts a write transaction committing with `durability`.
    pub(crate) fn write(&self, durability: Durability) -> Result<WriteTxn<'_>> {
        Ok(WriteTxn {
            inner: self.engine.write(durability)?,
            changed: std::cell::Cell::new(false),
            generation: &self.cache.generation,
        })
    }

    /// See [`Engine::lease`].
    pub(crate) fn lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool> {
        Ok(self.engine.lease(name, holder, ttl)?)
    }

    /// Whether other servers write this store too (see [`Engine::is_shared`]): what this one
    /// caches must then be checked against the store, not only dropped on its own changes.
    pub(crate) fn is_shared(&self) -> bool {
        self.engine.is_shared()
    }
}

/// A record as stored: its insertion number and the record.
#[derive(Serialize, serde::Deserialize)]
struct Stored<T> {
    seq: u64,
    record: T,
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<Stored<T>> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Records in insertion order.
fn in_insertion_order<T>(mut rows: Vec<Stored<T>>) -> Vec<T> {
    rows.sort_by_key(|r| r.seq);
    rows.into_iter().map(|r| r.record).collect()
}

/// Key of a version row: versions of one key are a contiguous range.
fn version_row(key_id: &Ocid, version_id: &Ocid) -> String {
    format!("{key_id}/{version_id}")
}

/// Reads shared by read and write transactions.
macro_rules! reads {
    () => {
        fn get_stored<T: DeserializeOwned>(&self, table: Table, id: &str) -> Result<Option<Stored<T>>> {
            self.row(table, id.as_bytes())?.map(|v| decode(&v)).transpose()
        }

        fn get<T: DeserializeOwned>(&self, table: Table, id: &str) -> Result<Option<T>> {
            Ok(self.get_stored(table, id)?.map(|s| s.record))
        }

        /// Every record of `table` in `range`, oldest first.
        fn all_in<T: DeserializeOwned>(&self, table: Table, range: sealstore_meta::KeyRange<'_>) -> Result<Vec<T>> {
            let rows = sealstore_meta::collect(self.raw()?, table, range)?;
            let out = rows.iter().map(|(_, v)| decode(v)).collect::<Result<Vec<_>>>()?;
            Ok(in_insertion_order(out))
        }

        /// Every record of `table`, oldest first.
        fn all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>> {
            self.all_in(table, sealstore_meta::ALL)
        }

        /// A meta value.
        pub(crate) fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
            self.row(META, name.as_bytes())
        }

        /// A compartment by id.
        pub(crate) fn compartment(&self, id: &Ocid) -> Result<Compartment> {
            self.get(COMPARTMENTS, id.as_str())?
                .ok_or_else(|| KmsError::not_found("compartment", id.as_str()))
        }

        /// Every compartment.
        pub(crate) fn compartments(&self) -> Result<Vec<Compartment>> {
            self.all(COMPARTMENTS)
        }

        /// A user's console password hash, if one is set.
        pub(crate) fn console_password(&self, user: &Ocid) -> Result<Option<String>> {
            self.get(CONSOLE_PASSWORDS, user.as_str())
        }

        /// A vault by id.
        pub(crate) fn vault(&self, id: &Ocid) -> Result<Vault> {
            self.get(VAULTS, id.as_str())?
                .ok_or_else(|| KmsError::not_found("vault", id.as_str()))
        }

        /// Every vault.
        pub(crate) fn vaults(&self) -> Result<Vec<Vault>> {
            self.all(VAULTS)
        }

        /// A key by id.
        pub(crate) fn key(&self, id: &Ocid) -> Result<Key> {
            self.get(KEYS, id.as_str())?
                .ok_or_else(|| KmsError::not_found("key", id.as_str()))
        }

        /// Every key.
        pub(crate) fn keys(&self) -> Result<Vec<Key>> {
            self.all(KEYS)
        }

        /// A version of `key_id`.
        pub(crate) fn key_version(&self, key_id: &Ocid, version_id: &Ocid) -> Result<KeyVersion> {
            self.get(KEY_VERSIONS, &version_row(key_id, version_id))?
                .ok_or_else(|| KmsError::not_found("key version", version_id.as_str()))
        }

        /// Every version of `key_id`, oldest first.
        pub(crate) fn key_versions(&self, key_id: &Ocid) -> Result<Vec<KeyVersion>> {
            let start = format!("{key_id}/");
            let end = format!("{key_id}0"); // '0' is the byte after '/'
            self.all_in(
                KEY_VERSIONS,
                sealstore_meta::between(start.as_bytes(), end.as_bytes()),
            )
        }

        /// A registered replication peer.
        pub(crate) fn region(&self, name: &str) -> Result<Option<Region>> {
            self.get(REGIONS, name)
        }

        /// Every registered replication peer.
        pub(crate) fn regions(&self) -> Result<Vec<Region>> {
            self.all(REGIONS)
        }

        /// Changes waiting to be shipped, oldest entry first.
        pub(crate) fn outbox(&self) -> Result<Vec<OutboxEntry>> {
            self.all(REPLICATION_OUTBOX)
        }

        /// The pending changes of `vault` for `region`.
        pub(crate) fn outbox_entry(&self, region: &str, vault: &Ocid) -> Result<Option<OutboxEntry>> {
            self.get(REPLICATION_OUTBOX, &format!("{region}/{vault}"))
        }

        /// The wrapping key of `vault`, once made.
        pub(crate) fn wrapping_key(&self, vault: &Ocid) -> Result<Option<WrappingKey>> {
            self.get(WRAPPING_KEYS, vault.as_str())
        }

        /// The protected material of a version, if it still exists.
        pub(crate) fn key_material(&self, version_id: &Ocid) -> Result<Option<Vec<u8>>> {
            self.row(KEY_MATERIAL, version_id.as_str().as_bytes())
        }

        /// The home region of this region's tenancy, when this region is a member (`None`:
        /// it is the home).
        pub(crate) fn tenancy_home(&self) -> Result<Option<String>> {
            Ok(self
                .meta(META_TENANCY_HOME)?
                .map(|v| String::from_utf8_lossy(&v).into_owned()))
        }

        /// The IAM revision (the `META_IAM_REVISION` setting); 0 before the first change.
        pub(crate) fn iam_revision(&self) -> Result<u64> {
            match self.meta(META_IAM_REVISION)? {
                None => Ok(0),
                Some(b) => Ok(u64::from_be_bytes(
                    b.as_slice()
                        .try_into()
                        .map_err(|_| KmsError::Store("corrupt IAM revision".into()))?,
                )),
            }
        }

        /// The regions that joined this region's tenancy, oldest first.
        pub(crate) fn tenancy_members(&self) -> Result<Vec<TenancyMember>> {
            self.all(TENANCY_MEMBERS)
        }

        /// One member region of this region's tenancy.
        pub(crate) fn tenancy_member(&self, region: &str) -> Result<Option<TenancyMember>> {
            self.get(TENANCY_MEMBERS, region)
        }

        /// Every IAM user, oldest first.
        pub(crate) fn users(&self) -> Result<Vec<User>> {
            self.all(IAM_USERS)
        }

        /// Every IAM group, oldest first.
        pub(crate) fn groups(&self) -> Result<Vec<Group>> {
            self.all(IAM_GROUPS)
        }

        /// Every IAM policy, oldest first.
        pub(crate) fn policies(&self) -> Result<Vec<Policy>> {
            self.all(IAM_POLICIES)
        }

        /// Audit entries with sequence numbers in `from..` (raw JSON bytes), in order.
        pub(crate) fn audit_rows(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
            let mut out = Vec::new();
            if limit == 0 {
                return Ok(out);
            }
            self.raw()?
                .scan(AUDIT, sealstore_meta::from(&from.to_be_bytes()), &mut |k, v| {
                    let seq = u64::from_be_bytes(
                        k.try_into()
                            .map_err(|_| sealstore_meta::Error::Corrupt("audit sequence number".into()))?,
                    );
                    out.push((seq, v.to_vec()));
                    Ok(if out.len() >= limit {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                })?;
            Ok(out)
        }
    };
}

/// A read-only snapshot: the store's, begun at its first read the cache cannot answer.
pub(crate) struct ReadTxn<'s> {
    store: &'s Store,
    /// The cache's generation when the snapshot was asked for (before it began).
    generation: u64,
    inner: std::cell::OnceCell<Box<dyn sealstore_meta::ReadTxn + 's>>,
}

impl<'s> ReadTxn<'s> {
    /// The store's snapshot, begun now if it was not yet.
    fn raw(&self) -> Result<&(dyn sealstore_meta::ReadTxn + 's)> {
        if self.inner.get().is_none() {
            // A second call cannot have set it meanwhile: a snapshot is not shared by threads.
            let _ = self.inner.set(self.store.engine.read()?);
        }
        match self.inner.get() {
            Some(inner) => Ok(&**inner),
            None => Err(KmsError::Store("the store's snapshot could not be kept".into())),
        }
    }

    /// One row: from the cache when it holds a fresh copy, else from the snapshot (and then
    /// kept, for the tables the cache keeps).
    fn row(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if !cached(table) {
            return Ok(self.raw()?.get(table, key)?);
        }
        if let Some(value) = self.store.cache.get(table, key) {
            return Ok(Some(value));
        }
        let value = self.raw()?.get(table, key)?;
        if let Some(value) = &value {
            self.store.cache.put(table, key, value, self.generation);
        }
        Ok(value)
    }
}

// The same reads as a write transaction's; a snapshot needs only some of them.
#[allow(dead_code)]
impl ReadTxn<'_> {
    reads!();
}

/// A write transaction; dropped without [`WriteTxn::commit`] it rolls back.
pub(crate) struct WriteTxn<'s> {
    inner: Box<dyn sealstore_meta::WriteTxn + 's>,
    /// Whether it changed a record (not only audit entries and the chain head).
    changed: std::cell::Cell<bool>,
    /// Moved when a commit changed records: cached rows read before are stale.
    generation: &'s std::sync::atomic::AtomicU64,
}

impl<'s> WriteTxn<'s> {
    fn raw(&self) -> Result<&(dyn sealstore_meta::ReadTxn + 's)> {
        Ok(&*self.inner)
    }

    /// One row, from the transaction (never the cache).
    fn row(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.get(table, key)?)
    }

    /// Every change goes through here or [`WriteTxn::unset`]: it tells the record cache.
    fn set(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        if table != AUDIT && !(table == META && key == META_AUDIT_HEAD.as_bytes()) {
            self.changed.set(true);
        }
        Ok(self.inner.insert(table, key, value)?)
    }

    fn unset(&self, table: Table, key: &[u8]) -> Result<()> {
        self.changed.set(true);
        self.inner.remove(table, key)?;
        Ok(())
    }
}

// The same reads as a snapshot's; a write transaction needs only some of them.
#[allow(dead_code)]
impl WriteTxn<'_> {
    reads!();
}

impl WriteTxn<'_> {
    /// Inserts or replaces a record; a replaced record keeps its place in insertion order.
    fn put<T: Serialize>(&self, table: Table, id: &str, value: &T) -> Result<()> {
        let seq = match self.get_stored::<serde::de::IgnoredAny>(table, id)? {
            Some(existing) => existing.seq,
            None => self.next_seq()?,
        };
        let bytes = serde_json::to_vec(&Stored { seq, record: value })?;
        self.set(table, id.as_bytes(), &bytes)?;
        Ok(())
    }

    fn next_seq(&self) -> Result<u64> {
        let seq = match self.meta(META_NEXT_SEQ)? {
            Some(b) => u64::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| KmsError::Store("corrupt record counter".into()))?,
            ),
            None => 1,
        };
        self.set_meta(META_NEXT_SEQ, &(seq + 1).to_be_bytes())?;
        Ok(seq)
    }

    /// Sets a meta value.
    pub(crate) fn set_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        self.set(META, name.as_bytes(), value)?;
        Ok(())
    }

    /// Inserts or replaces a compartment.
    pub(crate) fn put_compartment(&self, c: &Compartment) -> Result<()> {
        self.put(COMPARTMENTS, c.id.as_str(), c)
    }

    /// Removes a compartment record (a member region replacing its IAM state by the
    /// home's).
    pub(crate) fn delete_compartment(&self, id: &Ocid) -> Result<()> {
        self.unset(COMPARTMENTS, id.as_str().as_bytes())?;
        Ok(())
    }

    /// Inserts or replaces a vault.
    pub(crate) fn put_vault(&self, v: &Vault) -> Result<()> {
        self.put(VAULTS, v.id.as_str(), v)
    }

    /// Inserts or replaces a key.
    pub(crate) fn put_key(&self, k: &Key) -> Result<()> {
        self.put(KEYS, k.id.as_str(), k)
    }

    /// Inserts or replaces a key version.
    pub(crate) fn put_key_version(&self, v: &KeyVersion) -> Result<()> {
        self.put(KEY_VERSIONS, &version_row(&v.key_id, &v.id), v)
    }

    /// Removes a vault record (a replica region's copy, when its replica is deleted).
    pub(crate) fn delete_vault(&self, id: &Ocid) -> Result<()> {
        self.unset(VAULTS, id.as_str().as_bytes())?;
        Ok(())
    }

    /// Removes a key record (see [`WriteTxn::delete_vault`]).
    pub(crate) fn delete_key(&self, id: &Ocid) -> Result<()> {
        self.unset(KEYS, id.as_str().as_bytes())?;
        Ok(())
    }

    /// Removes a key version record (see [`WriteTxn::delete_vault`]).
    pub(crate) fn delete_key_version(&self, key_id: &Ocid, version_id: &Ocid) -> Result<()> {
        self.unset(KEY_VERSIONS, version_row(key_id, version_id).as_bytes())?;
        Ok(())
    }

    /// Inserts or replaces an IAM user.
    pub(crate) fn put_user(&self, u: &User) -> Result<()> {
        self.put(IAM_USERS, u.id.as_str(), u)
    }

    /// Inserts or replaces an IAM group.
    pub(crate) fn put_group(&self, g: &Group) -> Result<()> {
        self.put(IAM_GROUPS, g.id.as_str(), g)
    }

    /// Inserts or replaces an IAM policy.
    pub(crate) fn put_policy(&self, p: &Policy) -> Result<()> {
        self.put(IAM_POLICIES, p.id.as_str(), p)
    }

    /// Sets (`Some`) or removes a user's console password hash.
    pub(crate) fn set_console_password(&self, user: &Ocid, phc: Option<&str>) -> Result<()> {
        match phc {
            Some(phc) => self.put(CONSOLE_PASSWORDS, user.as_str(), &phc),
            None => self.delete_iam_record(CONSOLE_PASSWORDS, user),
        }
    }

    /// Removes an IAM user, group or policy record (`table` is one of the IAM tables).
    pub(crate) fn delete_iam_record(&self, table: Table, id: &Ocid) -> Result<()> {
        self.unset(table, id.as_str().as_bytes())?;
        Ok(())
    }

    /// Inserts or replaces a replication peer.
    pub(crate) fn put_region(&self, r: &Region) -> Result<()> {
        self.put(REGIONS, &r.name, r)
    }

    /// Forgets a replication peer.
    pub(crate) fn delete_region(&self, name: &str) -> Result<()> {
        self.unset(REGIONS, name.as_bytes())?;
        Ok(())
    }

    /// Sets the IAM revision.
    pub(crate) fn set_iam_revision(&self, revision: u64) -> Result<()> {
        self.set_meta(META_IAM_REVISION, &revision.to_be_bytes())
    }

    /// Inserts or replaces a member region of this region's tenancy.
    pub(crate) fn put_tenancy_member(&self, m: &TenancyMember) -> Result<()> {
        self.put(TENANCY_MEMBERS, &m.region, m)
    }

    /// Inserts or replaces an outbox entry.
    pub(crate) fn put_outbox(&self, e: &OutboxEntry) -> Result<()> {
        self.put(REPLICATION_OUTBOX, &format!("{}/{}", e.region, e.vault_id), e)
    }

    /// Removes an outbox entry (shipped, or replication stopped).
    pub(crate) fn delete_outbox(&self, region: &str, vault: &Ocid) -> Result<()> {
        self.unset(REPLICATION_OUTBOX, format!("{region}/{vault}").as_bytes())?;
        Ok(())
    }

    /// Records `vault`'s wrapping key (its sealed private key goes in with
    /// [`WriteTxn::put_key_material`]).
    pub(crate) fn put_wrapping_key(&self, key: &WrappingKey) -> Result<()> {
        self.put(WRAPPING_KEYS, key.vault_id.as_str(), key)
    }

    /// Stores a version's protected material.
    pub(crate) fn put_key_material(&self, version_id: &Ocid, material: &[u8]) -> Result<()> {
        self.set(KEY_MATERIAL, version_id.as_str().as_bytes(), material)?;
        Ok(())
    }

    /// Destroys a version's material: after this no operation can use that version again.
    pub(crate) fn delete_key_material(&self, version_id: &Ocid) -> Result<()> {
        self.unset(KEY_MATERIAL, version_id.as_str().as_bytes())?;
        Ok(())
    }

    /// Appends audit rows (sequence number, entry), in one open of their table.
    pub(crate) fn put_audit_rows(&self, rows: &[(u64, Vec<u8>)]) -> Result<()> {
        let keys: Vec<[u8; 8]> = rows.iter().map(|(seq, _)| seq.to_be_bytes()).collect();
        let rows: Vec<(&[u8], &[u8])> = keys.iter().zip(rows).map(|(k, (_, row))| (&k[..], &row[..])).collect();
        // Audit entries alone leave the record cache as it is.
        self.inner.insert_many(AUDIT, &rows)?;
        Ok(())
    }

    /// Makes the transaction's changes durable (as its durability level promises).
    pub(crate) fn commit(self) -> Result<()> {
        let changed = self.changed.get();
        let committed = self.inner.commit();
        // Even when the commit's outcome is unknown (an unreachable server), cached rows
        // read before it may be stale now.
        if changed {
            self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        committed?;
        Ok(())
    }
}
