//! # sealstore
//!
//! The encryption front-end for object and block storage, as a library: encrypt what a
//! program stores with keys it manages itself or that another machine's sealstore keeps.
//! Key management itself is the `kms-core` crate; the formats and data-path cryptography are
//! `sealstore-format` (re-exported here as [`crypto`]).
//!
//! What a program uses:
//!
//! - [`object::EncryptedStore`]: any [`object_store::ObjectStore`] (local files, S3, memory)
//!   with every object sealed under its own data key; ranged reads decrypt only what they
//!   touch. [`object::backend::open_backend`] opens the inner store from a URL.
//! - [`block::Volume`]: an encrypted block volume (AES-256-XTS sectors) in a file.
//! - [`kms_api::remote::RemoteKms`]: data keys from another sealstore's KMS API with signed
//!   requests, as a [`kms_core::KeyProvider`] — the same trait an embedded [`kms_core::Kms`]
//!   implements, so either stands behind the stores above.
//! - [`crypto`]: AES-256-GCM, sealed segments and AES-256-XTS with shapes hard to misuse.
//!
//! The examples in the repository's `examples/` directory are short programs over these, each
//! run by `scripts/test` (`cargo run --example NAME`): `envelope` (kms-core alone),
//! `encrypted_store` (local files, and S3 given `AWS_ENDPOINT`), `volume`, `remote_keys`
//! (starts a `sealstore serve` and takes its data keys through the KMS API) and
//! `parquet_over_encrypted_store` (the `parquet` crate reading through `EncryptedStore`;
//! `--features example-parquet`).
//!
//! The rest of the crate is the `sealstore` binary's servers (S3, the KMS API, NBD, the web
//! console) and commands; it is not a stable API.

#![warn(missing_docs)]
#![warn(unreachable_pub)]
// The one `unsafe` block of sealstore, the XTS FFI wrapper, is in sealstore-format.
#![forbid(unsafe_code)]

pub mod admin;
pub mod bench;
pub mod block;
/// The `sealstore` command line, which the binary runs: not part of the library's API.
#[doc(hidden)]
pub mod cli;
pub mod console;
pub use sealstore_format::crypto;
pub mod external_kms;
pub mod front_door;
pub mod http_client;
pub mod http_server;
pub mod json_file;
pub mod key_service;
pub mod kms_api;
pub mod object;
pub mod s3;
