//! Cryptographic building blocks of the data path. Primitives come from aws-lc (aws-lc-rs,
//! and for XTS its raw EVP API); this module only gives them shapes that are hard to misuse.

pub mod gcm;
pub mod segment;
pub mod stream;
// The one place with `unsafe`: aws-lc's XTS is only reachable through its raw EVP API.
#[allow(unsafe_code)]
pub mod xts;
