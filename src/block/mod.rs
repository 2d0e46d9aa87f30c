//! Encrypted block volumes: the volume file format ([`format`]) and reading and writing a
//! volume ([`volume`]). Served over NBD in a later step.

pub mod format;
pub mod volume;

pub use volume::{Volume, VolumeError};
