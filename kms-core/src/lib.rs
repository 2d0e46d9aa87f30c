//! # kms-core
//!
//! sealstore's key-management service as a library, modelled on OCI Vault/KMS: vaults,
//! AES-256 master keys with versions and rotation, envelope encryption with self-describing
//! ciphertexts, pluggable key protection, a hash-chained audit log and a compliance report.
//! No HTTP here: the binary puts the CLI and the OCI-compatible API in front of [`Kms`].
//!
//! Use it to embed key management in a program: [`Kms`] is the whole service (every call
//! names its [`Principal`]; a program acting for itself uses [`Principal::local_admin`]), and
//! [`KeyProvider`] is what data paths take their data keys through — implemented by [`Kms`]
//! and, in the `sealstore` crate, by a client of another sealstore's KMS API.
//! `examples/envelope.rs` (vault, key, data key, associated data, rotation, rewrap) and
//! `examples/remote_keys.rs` in the repository show it at work; `cargo run --example
//! envelope` runs the first. `examples/encrypted_store.rs` and `examples/volume.rs` embed a
//! [`Kms`] as the [`KeyProvider`] of sealstore's encrypted object store and volume.
//!
//! ## Layers
//!
//! Dependencies point down only (`scripts/module-graph` checks it):
//!
//! ```text
//! Kms (kms.rs)                      the public face: one method per operation, delegating
//! vaults keys iam rotation envelope replication     the services
//! context.rs                        store + clock + protection + audit writer; mutate()
//! store.rs  audit/  protection/     redb tables; the hash chain and its writer; backends
//! model/  ciphertext  ids  time  error              records and formats (leaves)
//! ```
//!
//! ```
//! use kms_core::{Kms, KmsConfig, CreateVault, CreateKey, Principal, AssociatedData};
//! # let data_dir = tempfile::tempdir()?;
//! let kms = Kms::open(KmsConfig::new(data_dir.path()))?; // e.g. "./sealstore-data"
//! let me = Principal::local_admin();
//! let vault = kms.create_vault(&me, CreateVault { display_name: "apps".into(), ..Default::default() })?;
//! let key = kms.create_key(&me, CreateKey::new(vault.id.clone(), "orders"))?;
//! let ct = kms.encrypt(&me, &key.id, b"secret", &AssociatedData::none())?;
//! let pt = kms.decrypt(&me, &ct.ciphertext, &AssociatedData::none(), None)?;
//! assert_eq!(&pt.plaintext[..], b"secret");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]
#![warn(unreachable_pub)]
#![forbid(unsafe_code)]

// Leaves: identifiers, time, errors, the persisted records and the ciphertext format.
pub mod ciphertext;
pub(crate) mod error;
pub(crate) mod ids;
pub mod model;
pub(crate) mod time;

// Storage and the audit chain over it; key protection backends.
pub(crate) mod asymmetric;
pub mod audit;
pub(crate) mod backup;
pub mod protection;
pub(crate) mod store;

// The services, over a shared context, and the facade that fronts them.
pub mod byok;
mod context;
pub(crate) mod envelope;
pub mod iam;
mod keys;
mod kms;
mod lifecycle;
pub mod replication;
pub(crate) mod rotation;
mod vaults;

pub use asymmetric::{SignatureInput, Signed};
pub use audit::{AuditEntry, AuditRefusal, AuditVerification, Principal};
pub use backup::{BackupKind, BackupSummary};
pub use context::{DataInventory, KmsConfig, DEFAULT_REGION, ROOT_KEY_FILE};
pub use envelope::{
    AssociatedData, AsyncKeyProvider, DataKey, Decrypted, Dek, Encrypted, KeyFuture, KeyProvider, KeyStatus,
};
pub use error::{Denial, KmsError, Refusal, Result};
pub use ids::{Ocid, ResourceType};
pub use keys::CreateKey;
pub use kms::{Defaults, Kms};
pub use model::*;
pub use protection::Placement;
pub use rotation::{ComplianceFinding, ComplianceReport, SchedulerReport, DEFAULT_MAX_KEY_AGE_DAYS};
/// The KMS's namespace of the metadata store (every table of it), for tools that move or
/// inspect metadata as a whole (`sealstore migrate-metadata`).
pub use store::schema::NAMESPACE as METADATA_NAMESPACE;
pub use time::{Clock, ManualClock, OffsetClock, SystemClock, Timestamp};
pub use vaults::{CreateVault, UpdateResource};

/// What this crate's integration tests (`tests/`), and sealstore's, reach inside it: not
/// part of the library's API, no semver promise.
#[doc(hidden)]
pub mod internals {
    pub use crate::backup::format as backup_format;
    pub use crate::envelope::{DEK_LEN, MAX_PLAINTEXT};
    pub use crate::store::{schema, DB_FILE};
}
