//! # sealstore
//!
//! The encryption front-end for object and block storage. This crate holds the parts the
//! `sealstore` binary is made of; key management itself lives in the `kms-core` crate.
//!
//! - [`crypto`]: data-path cryptography on aws-lc (from the `sealstore-format` crate, with the
//!   object and volume formats: pure code, no I/O).
//! - [`object`]: the encrypted object format and store.
//! - [`s3`]: the S3-compatible API over the object store.
//! - [`block`]: encrypted block volumes and their NBD server.
//! - [`key_service`]: the async key service every data path takes its data keys through.
//! - [`kms_api`]: the OCI-compatible KMS REST API over kms-core.
//! - [`console`]: the web console, served with the KMS API, over the same handlers.
//! - [`admin`]: the local admin protocol between the CLI and a running server.

#![warn(missing_docs)]
#![warn(unreachable_pub)]
// The one `unsafe` block of sealstore, the XTS FFI wrapper, is in sealstore-format.
#![forbid(unsafe_code)]

pub mod admin;
pub mod bench;
pub mod block;
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
