//! EXTERNAL protection: master keys that live in a key manager outside sealstore, which
//! keeps only references to them (protocol: `docs/EXTERNAL_KMS.md`).
//!
//! - [`token`]: the OAuth2 bearer tokens (RS256 JWTs) sealstore signs and the key manager
//!   checks, and the JWKS that publishes sealstore's key.
//! - [`client`]: the key-protection backend that calls the key manager, with short timeouts.
//! - [`server`]: `sealstore ekm serve`, a reference key manager to run and test against.

pub(crate) mod client;
pub(crate) mod server;
pub(crate) mod token;
