//! Encrypted block volumes: [`Volume`] reads and writes one (and [`VolumeError`] says why
//! not). Inside the crate: the volume file format (`format`, from sealstore-format), the
//! volume itself (`volume`), and serving volumes over NBD (`nbd`).

pub(crate) use sealstore_format::volume as format;
pub(crate) mod nbd;
pub(crate) mod volume;

pub use volume::{Volume, VolumeError};
