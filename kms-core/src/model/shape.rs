//! Key shapes and the algorithms that go with them, with OCI's wire names.
//!
//! [`KeyShape`] is the record as OCI spells it (`algorithm`, `length` in
//! bytes, `curveId`); [`KeySpec`] is the same shape once validated, which the rest of kms-core
//! matches on. [`SigningAlgorithm`], [`MessageType`] and [`RsaEncryption`] are the wire enums
//! of sign, verify and RSA encrypt/decrypt.

use crate::error::{KmsError, Result};

use super::KeyShape;

/// An elliptic curve of an ECDSA key (OCI's `curveId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (`NIST_P256`, 32-byte keys).
    P256,
    /// NIST P-384 (`NIST_P384`, 48-byte keys).
    P384,
    /// NIST P-521 (`NIST_P521`, 66-byte keys).
    P521,
}

impl Curve {
    /// Parses OCI's `curveId`.
    pub(crate) fn parse(s: &str) -> Option<Curve> {
        match s.to_ascii_uppercase().as_str() {
            "NIST_P256" => Some(Curve::P256),
            "NIST_P384" => Some(Curve::P384),
            "NIST_P521" => Some(Curve::P521),
            _ => None,
        }
    }

    /// The wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Curve::P256 => "NIST_P256",
            Curve::P384 => "NIST_P384",
            Curve::P521 => "NIST_P521",
        }
    }

    /// OCI's `length` for keys on this curve, in bytes.
    pub(crate) fn key_len(self) -> u32 {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

/// A validated key shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// AES with a 16, 24 or 32-byte key.
    Aes {
        /// Key length in bytes.
        len: u32,
    },
    /// RSA with a 256, 384 or 512-byte modulus (2048/3072/4096 bits).
    Rsa {
        /// Modulus length in bytes.
        len: u32,
    },
    /// ECDSA on a NIST curve.
    Ecdsa(Curve),
}

impl KeySpec {
    /// AES-256: the shape of keys that wrap data keys and protect the data path.
    pub const AES_256: KeySpec = KeySpec::Aes { len: 32 };

    /// The shape as OCI's record spells it.
    pub fn shape(self) -> KeyShape {
        match self {
            KeySpec::Aes { len } => KeyShape {
                algorithm: "AES".into(),
                length: len,
                curve_id: None,
            },
            KeySpec::Rsa { len } => KeyShape {
                algorithm: "RSA".into(),
                length: len,
                curve_id: None,
            },
            KeySpec::Ecdsa(curve) => KeyShape {
                algorithm: "ECDSA".into(),
                length: curve.key_len(),
                curve_id: Some(curve.as_str().into()),
            },
        }
    }

    /// Every shape OCI has, in the order people choose from.
    pub const ALL: [KeySpec; 9] = [
        KeySpec::Aes { len: 32 },
        KeySpec::Aes { len: 24 },
        KeySpec::Aes { len: 16 },
        KeySpec::Rsa { len: 256 },
        KeySpec::Rsa { len: 384 },
        KeySpec::Rsa { len: 512 },
        KeySpec::Ecdsa(Curve::P256),
        KeySpec::Ecdsa(Curve::P384),
        KeySpec::Ecdsa(Curve::P521),
    ];

    /// The short name `sealstore kms key create --shape` and the console's forms use:
    /// `AES-256`, `RSA-3072`, `ECDSA-P384`.
    pub fn name(self) -> String {
        match self {
            KeySpec::Ecdsa(curve) => format!("ECDSA-{}", curve.as_str().trim_start_matches("NIST_")),
            other => other.to_string(),
        }
    }

    /// Reads [`KeySpec::name`] (any case, `_` for `-`).
    pub fn from_name(name: &str) -> Option<KeySpec> {
        let wanted = name.to_ascii_uppercase().replace('_', "-");
        KeySpec::ALL.into_iter().find(|spec| spec.name() == wanted)
    }
}

impl std::fmt::Display for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySpec::Aes { len } => write!(f, "AES-{}", len * 8),
            KeySpec::Rsa { len } => write!(f, "RSA-{}", len * 8),
            KeySpec::Ecdsa(curve) => write!(f, "ECDSA {}", curve.as_str()),
        }
    }
}

impl KeyShape {
    /// Validates the shape: AES 16/24/32 bytes, RSA 256/384/512 bytes, ECDSA 32/48/66 bytes
    /// with the matching `curveId`. Anything else is an invalid parameter saying what is.
    pub fn spec(&self) -> Result<KeySpec> {
        let bad = |why: String| {
            KmsError::InvalidParameter(format!(
                "keyShape {why}; OCI's shapes are AES with length 16, 24 or 32, RSA with length 256, 384 or 512 (bytes), and ECDSA with length 32, 48 or 66 and curveId NIST_P256, NIST_P384 or NIST_P521"
            ))
        };
        let algorithm = self.algorithm.to_ascii_uppercase();
        match (algorithm.as_str(), self.length, self.curve_id.as_deref()) {
            ("AES" | "RSA", _, Some(curve)) => Err(bad(format!("names curveId {curve}, which only ECDSA keys have"))),
            ("AES", len @ (16 | 24 | 32), None) => Ok(KeySpec::Aes { len }),
            ("RSA", len @ (256 | 384 | 512), None) => Ok(KeySpec::Rsa { len }),
            ("AES" | "RSA", len, None) => Err(bad(format!("has length {len}, which {algorithm} keys cannot have"))),
            ("ECDSA", len, Some(curve_id)) => {
                let curve = Curve::parse(curve_id).ok_or_else(|| bad(format!("names unknown curveId {curve_id}")))?;
                if curve.key_len() == len {
                    Ok(KeySpec::Ecdsa(curve))
                } else {
                    Err(bad(format!(
                        "has length {len}, but {curve_id} keys are {} bytes",
                        curve.key_len()
                    )))
                }
            }
            ("ECDSA", _, None) => Err(bad("is ECDSA without a curveId".into())),
            (other, _, _) => Err(bad(format!("names unknown algorithm {other}"))),
        }
    }
}

/// The hash function of a signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// How an RSA or ECDSA signature is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureScheme {
    /// RSASSA-PSS, MGF1 with the same hash, salt as long as the hash.
    RsaPss,
    /// RSASSA-PKCS1-v1_5.
    RsaPkcs1,
    /// ECDSA, DER-encoded `SEQUENCE { r, s }`.
    Ecdsa,
}

/// OCI's `signingAlgorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SigningAlgorithm {
    /// The signature scheme.
    pub scheme: SignatureScheme,
    /// The hash it signs.
    pub hash: HashAlg,
}

impl SigningAlgorithm {
    /// Every algorithm OCI lists, in its order.
    pub const ALL: [&'static str; 11] = [
        "SHA_224_RSA_PKCS_PSS",
        "SHA_256_RSA_PKCS_PSS",
        "SHA_384_RSA_PKCS_PSS",
        "SHA_512_RSA_PKCS_PSS",
        "SHA_224_RSA_PKCS1_V1_5",
        "SHA_256_RSA_PKCS1_V1_5",
        "SHA_384_RSA_PKCS1_V1_5",
        "SHA_512_RSA_PKCS1_V1_5",
        "ECDSA_SHA_256",
        "ECDSA_SHA_384",
        "ECDSA_SHA_512",
    ];

    /// Parses OCI's wire name (case-insensitively, as the CLI sends it upper-case anyway).
    pub fn parse(s: &str) -> Result<SigningAlgorithm> {
        use HashAlg::*;
        use SignatureScheme::*;
        let (scheme, hash) = match s.to_ascii_uppercase().as_str() {
            "SHA_224_RSA_PKCS_PSS" => (RsaPss, Sha224),
            "SHA_256_RSA_PKCS_PSS" => (RsaPss, Sha256),
            "SHA_384_RSA_PKCS_PSS" => (RsaPss, Sha384),
            "SHA_512_RSA_PKCS_PSS" => (RsaPss, Sha512),
            "SHA_224_RSA_PKCS1_V1_5" => (RsaPkcs1, Sha224),
            "SHA_256_RSA_PKCS1_V1_5" => (RsaPkcs1, Sha256),
            "SHA_384_RSA_PKCS1_V1_5" => (RsaPkcs1, Sha384),
            "SHA_512_RSA_PKCS1_V1_5" => (RsaPkcs1, Sha512),
            "ECDSA_SHA_256" => (Ecdsa, Sha256),
            "ECDSA_SHA_384" => (Ecdsa, Sha384),
            "ECDSA_SHA_512" => (Ecdsa, Sha512),
            _ => {
                return Err(KmsError::InvalidParameter(format!(
                    "signingAlgorithm '{s}' is not one of {}",
                    Self::ALL.join(", ")
                )))
            }
        };
        Ok(SigningAlgorithm { scheme, hash })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        use HashAlg::*;
        use SignatureScheme::*;
        match (self.scheme, self.hash) {
            (RsaPss, Sha224) => Self::ALL[0],
            (RsaPss, Sha256) => Self::ALL[1],
            (RsaPss, Sha384) => Self::ALL[2],
            (RsaPss, Sha512) => Self::ALL[3],
            (RsaPkcs1, Sha224) => Self::ALL[4],
            (RsaPkcs1, Sha256) => Self::ALL[5],
            (RsaPkcs1, Sha384) => Self::ALL[6],
            (RsaPkcs1, Sha512) => Self::ALL[7],
            (Ecdsa, Sha224) => "ECDSA_SHA_224",
            (Ecdsa, Sha256) => Self::ALL[8],
            (Ecdsa, Sha384) => Self::ALL[9],
            (Ecdsa, Sha512) => Self::ALL[10],
        }
    }

    /// Refuses an algorithm that keys of shape `spec` cannot sign with.
    pub(crate) fn check_for(self, spec: KeySpec) -> Result<()> {
        let fits = matches!(
            (self.scheme, spec),
            (SignatureScheme::RsaPss | SignatureScheme::RsaPkcs1, KeySpec::Rsa { .. })
                | (SignatureScheme::Ecdsa, KeySpec::Ecdsa(_))
        );
        if fits {
            Ok(())
        } else {
            Err(KmsError::InvalidParameter(format!(
                "signingAlgorithm {} does not apply to {spec} keys",
                self.as_str()
            )))
        }
    }
}

/// OCI's `messageType`: whether `message` is the message or its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageType {
    /// The message itself (hashed by the service).
    #[default]
    Raw,
    /// The digest of the message under the algorithm's hash.
    Digest,
}

impl MessageType {
    /// Parses `RAW` or `DIGEST` (case-insensitively).
    pub fn parse(s: &str) -> Result<MessageType> {
        match s.to_ascii_uppercase().as_str() {
            "RAW" => Ok(MessageType::Raw),
            "DIGEST" => Ok(MessageType::Digest),
            _ => Err(KmsError::InvalidParameter(format!(
                "messageType must be RAW or DIGEST, not '{s}'"
            ))),
        }
    }
}

/// OCI's RSA `encryptionAlgorithm`: RSA-OAEP with MGF1 over the same hash and an empty label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaEncryption {
    /// `RSA_OAEP_SHA_1`.
    OaepSha1,
    /// `RSA_OAEP_SHA_256`.
    OaepSha256,
}

impl RsaEncryption {
    /// Parses the wire name; `None` for anything else (AES_256_GCM included).
    pub fn parse(s: &str) -> Option<RsaEncryption> {
        match s.to_ascii_uppercase().as_str() {
            "RSA_OAEP_SHA_1" => Some(RsaEncryption::OaepSha1),
            "RSA_OAEP_SHA_256" => Some(RsaEncryption::OaepSha256),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RsaEncryption::OaepSha1 => "RSA_OAEP_SHA_1",
            RsaEncryption::OaepSha256 => "RSA_OAEP_SHA_256",
        }
    }
}

/// How key material travels wrapped under an RSA public key: imported under a vault's
/// wrapping key (`wrappingAlgorithm`), exported under a caller's key (`algorithm`). The format
/// of each is in docs/KMS_API.md, "Key import and export".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWrapping {
    /// `RSA_OAEP_SHA256`: RSA-OAEP (SHA-256, MGF1-SHA-256, no label) of the material itself;
    /// only AES keys fit.
    RsaOaepSha256,
    /// `RSA_OAEP_AES_SHA256`: RSA-OAEP-SHA-256 of a fresh AES-256 key, followed by the material
    /// wrapped under that key with AES key wrap with padding (RFC 5649).
    RsaOaepAesSha256,
}

impl KeyWrapping {
    /// Parses the wire name (upper-case as the CLI sends it; any case accepted).
    pub fn parse(s: &str) -> Result<KeyWrapping> {
        match s.to_ascii_uppercase().as_str() {
            "RSA_OAEP_SHA256" => Ok(KeyWrapping::RsaOaepSha256),
            "RSA_OAEP_AES_SHA256" => Ok(KeyWrapping::RsaOaepAesSha256),
            _ => Err(KmsError::InvalidParameter(format!(
                "wrapping algorithm must be RSA_OAEP_AES_SHA256 or RSA_OAEP_SHA256, not '{s}'"
            ))),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyWrapping::RsaOaepSha256 => "RSA_OAEP_SHA256",
            KeyWrapping::RsaOaepAesSha256 => "RSA_OAEP_AES_SHA256",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(algorithm: &str, length: u32, curve: Option<&str>) -> KeyShape {
        KeyShape {
            algorithm: algorithm.into(),
            length,
            curve_id: curve.map(Into::into),
        }
    }

    #[test]
    fn shapes_as_oci() {
        for len in [16, 24, 32] {
            assert_eq!(shape("AES", len, None).spec().unwrap(), KeySpec::Aes { len });
        }
        for len in [256, 384, 512] {
            assert_eq!(shape("rsa", len, None).spec().unwrap(), KeySpec::Rsa { len });
        }
        assert_eq!(
            shape("ECDSA", 66, Some("NIST_P521")).spec().unwrap(),
            KeySpec::Ecdsa(Curve::P521)
        );
        for bad in [
            shape("AES", 64, None),
            shape("RSA", 128, None),
            shape("AES", 32, Some("NIST_P256")),
            shape("ECDSA", 32, None),
            shape("ECDSA", 48, Some("NIST_P256")),
            shape("ECDSA", 32, Some("P-256")),
            shape("DES", 8, None),
        ] {
            assert!(matches!(bad.spec(), Err(KmsError::InvalidParameter(_))), "{bad:?}");
        }
        for spec in [KeySpec::AES_256, KeySpec::Rsa { len: 384 }, KeySpec::Ecdsa(Curve::P384)] {
            assert_eq!(spec.shape().spec().unwrap(), spec);
        }
    }

    #[test]
    fn short_names_round_trip() {
        for spec in KeySpec::ALL {
            assert_eq!(KeySpec::from_name(&spec.name().to_lowercase()), Some(spec));
        }
        assert_eq!(KeySpec::Ecdsa(Curve::P384).name(), "ECDSA-P384");
        assert_eq!(KeySpec::from_name("rsa_3072"), Some(KeySpec::Rsa { len: 384 }));
        assert_eq!(KeySpec::from_name("AES-64"), None);
    }

    #[test]
    fn signing_algorithms_round_trip_and_fit_their_shapes() {
        for name in SigningAlgorithm::ALL {
            let alg = SigningAlgorithm::parse(&name.to_lowercase()).unwrap();
            assert_eq!(alg.as_str(), name);
            let rsa = alg.check_for(KeySpec::Rsa { len: 256 }).is_ok();
            let ec = alg.check_for(KeySpec::Ecdsa(Curve::P256)).is_ok();
            assert!(rsa != ec);
            assert!(alg.check_for(KeySpec::AES_256).is_err());
        }
        assert!(SigningAlgorithm::parse("ECDSA_SHA_1").is_err());
    }
}
