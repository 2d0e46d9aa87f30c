//! Encrypted block volumes: the volume file format ([`mod@format`]), reading and writing a
//! volume ([`volume`]), and serving volumes over NBD ([`nbd`]).

pub use sealstore_format::volume as format;
pub mod nbd;
pub mod volume;

pub use volume::{Volume, VolumeError};
