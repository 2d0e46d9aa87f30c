//! Encrypted objects. The public part is [`EncryptedStore`] (with [`Naming`], [`Sealing`],
//! [`WrappedBy`] and its error, [`EncryptedStoreError`]) and [`backend::open_backend`], which
//! opens the store underneath from a URL.
//!
//! Inside the crate: the on-store format (`format`, from sealstore-format), customer-provided
//! keys (`customer_key`), the metadata index (`index`), buckets and their objects (`service`,
//! one file per job), the layer's other error (`ObjectError`) and the re-encryption sweep
//! (`sweep`).

pub mod backend;
pub(crate) mod backup_buckets;
pub(crate) use sealstore_format::customer_key;
pub(crate) mod encryption;
pub(crate) mod error;
pub(crate) use sealstore_format::object as format;
pub(crate) mod gc;
pub(crate) mod index;
pub(crate) mod layout;
pub(crate) mod locks;
pub(crate) mod service;
pub(crate) mod store;
pub(crate) mod sweep;

pub(crate) use error::ObjectError;
pub use error::{EncryptedStoreError, IntegrityProblem};
pub(crate) use service::{InventoryRow, ObjectService, OpenObject, PutParams, WriteCondition};
pub use store::{EncryptedStore, Naming, Sealing, WrappedBy};
