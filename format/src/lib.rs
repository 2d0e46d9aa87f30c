//! # sealstore-format
//!
//! What sealstore writes, and the cryptography that writes it, with no I/O: the rest of
//! sealstore (stores, servers, the CLI) reads and writes bytes and hands them here.
//!
//! - [`crypto`]: data-path cryptography on aws-lc — AES-256-GCM keys and nonces, sealed
//!   segments and the streams of them, AES-256-XTS sectors.
//! - [`object`]: the sealed-object format (spec: `docs/FORMATS.md`).
//! - [`customer_key`]: customer-provided keys (SSE-C): their check value and the wrapping of
//!   an object's data key under them.
//! - [`volume`]: the volume header (spec: `docs/FORMATS.md`).
//!
//! The `sealstore` crate re-exports what its users need of it (`sealstore::crypto`); depend on
//! this crate directly to read or check sealstore's formats without its stores and servers.
//! In the repository, `examples/encrypted_store.rs` writes sealed objects ([`object`],
//! [`crypto::stream`]) and `examples/volume.rs` a volume ([`volume`], [`crypto::xts`]), both
//! through the `sealstore` crate; `examples/remote_keys.rs` seals data with
//! [`crypto::gcm::GcmKey`] directly under a data key from a KMS.

#![warn(missing_docs)]
#![warn(unreachable_pub)]
// No `unsafe` but in the XTS FFI wrapper, which allows it for itself (crypto/xts.rs).
#![deny(unsafe_code)]

pub mod crypto;
pub mod customer_key;
pub mod object;
pub mod volume;
