//! Encrypted objects: the on-store format ([`mod@format`]), the store that encrypts every
//! object with its own data key ([`store`]), customer-provided keys ([`customer_key`]), the
//! metadata index ([`index`]), buckets and their objects ([`service`], one file per job), the
//! layer's errors ([`error`]: [`EncryptedStoreError`], [`ObjectError`]) and the re-encryption
//! sweep ([`sweep`]).

pub mod backend;
pub mod backup_buckets;
pub use sealstore_format::customer_key;
pub mod encryption;
pub mod error;
pub use sealstore_format::object as format;
pub mod gc;
pub mod index;
pub mod layout;
pub mod locks;
pub mod service;
pub mod store;
pub mod sweep;

pub use error::{EncryptedStoreError, ObjectError};
pub use service::{InventoryRow, ObjectService, OpenObject, PutParams, WriteCondition};
pub use store::{EncryptedStore, Naming, Sealing, WrappedBy};
