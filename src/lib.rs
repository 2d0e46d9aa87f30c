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
//! - [`remote::RemoteKms`]: data keys from another sealstore's KMS API with signed
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
//! The rest of the crate — the `sealstore` binary's servers (S3, the KMS API, NBD, the web
//! console) — is `pub(crate)`. Two hidden modules are not part of the API either: `cli`, the
//! commands the binary runs, and `internals`, what the repository's own tests and benchmarks
//! reach.

#![warn(missing_docs)]
#![warn(unreachable_pub)]
// The one `unsafe` block of sealstore, the XTS FFI wrapper, is in sealstore-format.
#![forbid(unsafe_code)]

pub(crate) mod admin;
pub(crate) mod bench;
pub mod block;
/// The `sealstore` command line, which the binary runs: not part of the library's API.
// Its doc comments are clap's help text (`<FILE>`, `[s]`), not rustdoc.
#[doc(hidden)]
#[allow(rustdoc::all)]
pub mod cli;
pub(crate) mod console;
pub use sealstore_format::crypto;
pub(crate) mod external_kms;
pub(crate) mod fleet;
pub(crate) mod front_door;
pub(crate) mod http_client;
pub(crate) mod http_server;
pub(crate) mod json_file;
pub(crate) mod key_service;
pub(crate) mod kms_api;
pub use kms_api::remote;
pub mod object;
pub(crate) mod s3;

/// What this repository's integration tests (`tests/`) and benchmarks (`benches/`) reach
/// inside the crate: not part of the library's API, no semver promise.
#[doc(hidden)]
pub mod internals {
    pub use crate::bench::{crypto as bench_crypto, kms as bench_kms};
    pub use crate::block::volume::{check, read_header};
    pub use crate::object::error::ObjectError;
    pub use crate::object::gc::collect_garbage;
    pub use crate::object::service::{ObjectService, PutParams};
    /// The object index.
    pub mod index {
        pub use crate::object::index::*;
    }
    /// Where objects are stored.
    pub mod layout {
        pub use crate::object::layout::*;
    }
}
