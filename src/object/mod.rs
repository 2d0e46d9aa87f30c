//! Encrypted objects: the on-store format ([`format`]) and, built on it, the store that
//! encrypts every object with its own data key.

pub mod format;
pub mod index;
pub mod store;

pub use store::EncryptedStore;
