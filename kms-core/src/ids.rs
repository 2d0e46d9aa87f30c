//! OCI-style resource identifiers (`ocid1.<type>.oc1.<region>.<unique>`).
//!
//! sealstore keeps OCI's id shape so that its OCI-compatible API maps 1:1 and tools that
//! recognise OCIDs by prefix keep working. The unique part is 160 random bits in lower-case
//! base32, which is URL-safe and never needs percent-encoding.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{KmsError, Result};

/// The resource types sealstore mints ids for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    /// The tenancy (root compartment).
    Tenancy,
    /// A compartment below the tenancy.
    Compartment,
    /// A vault.
    Vault,
    /// A master encryption key.
    Key,
    /// A version of a master encryption key.
    KeyVersion,
    /// An IAM user (signs API requests with its API keys).
    User,
    /// An IAM group of users, named in policies.
    Group,
    /// An IAM policy: statements granting groups access.
    Policy,
    /// A vault's wrapping key: the RSA key that imported key material is wrapped under.
    WrappingKey,
}

impl ResourceType {
    fn as_str(self) -> &'static str {
        match self {
            ResourceType::Tenancy => "tenancy",
            ResourceType::Compartment => "compartment",
            ResourceType::Vault => "vault",
            ResourceType::Key => "key",
            ResourceType::KeyVersion => "keyversion",
            ResourceType::User => "user",
            ResourceType::Group => "group",
            ResourceType::Policy => "policy",
            ResourceType::WrappingKey => "wrappingkey",
        }
    }
}

/// An OCI-style id. Cheap to clone; compared and ordered as a string.
///
/// ```
/// use kms_core::{Ocid, ResourceType};
///
/// let key = Ocid::parse(ResourceType::Key, "ocid1.key.oc1.local-1.abc123")?;
/// assert_eq!(key.as_str(), "ocid1.key.oc1.local-1.abc123");
/// assert!(Ocid::parse(ResourceType::Vault, key.as_str()).is_err()); // not a vault id
/// # Ok::<(), kms_core::KmsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ocid(String);

impl Ocid {
    /// Mints a fresh random id of `kind` in `region`.
    pub fn generate(kind: ResourceType, region: &str) -> Ocid {
        let mut unique = [0u8; 20];
        aws_lc_rs::rand::fill(&mut unique).expect("system random source failed");
        let unique = data_encoding::BASE32_NOPAD.encode(&unique).to_ascii_lowercase();
        Ocid(format!("ocid1.{}.oc1.{}.{}", kind.as_str(), region, unique))
    }

    /// Parses an id received from outside, checking it is an OCID of the expected type.
    pub fn parse(kind: ResourceType, s: &str) -> Result<Ocid> {
        let prefix = format!("ocid1.{}.", kind.as_str());
        let well_formed = s.starts_with(&prefix)
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
        if well_formed {
            Ok(Ocid(s.to_owned()))
        } else {
            Err(KmsError::InvalidParameter(format!(
                "'{s}' is not a {} id (expected ocid1.{}.…)",
                kind.as_str(),
                kind.as_str()
            )))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ocid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_are_unique() {
        let a = Ocid::generate(ResourceType::Key, "local-1");
        let b = Ocid::generate(ResourceType::Key, "local-1");
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("ocid1.key.oc1.local-1."));
        assert_eq!(Ocid::parse(ResourceType::Key, a.as_str()).unwrap(), a);
    }

    #[test]
    fn wrong_type_or_junk_is_rejected() {
        let v = Ocid::generate(ResourceType::Vault, "local-1");
        assert!(Ocid::parse(ResourceType::Key, v.as_str()).is_err());
        assert!(Ocid::parse(ResourceType::Key, "ocid1.key.oc1..a/b").is_err());
        assert!(Ocid::parse(ResourceType::Key, "").is_err());
    }
}
