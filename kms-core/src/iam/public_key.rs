//! API signing keys as users register them: RSA public keys in PEM, and OCI's fingerprint.

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::Engine;
use md5::{Digest, Md5};

use crate::error::{KmsError, Result};

/// A public key in PEM form, checked to be an RSA key usable for request signatures.
#[derive(Debug, Clone)]
pub(crate) struct PublicKeyPem {
    pem: String,
    der: Vec<u8>,
}

impl PublicKeyPem {
    /// Parses `-----BEGIN PUBLIC KEY-----` PEM (SubjectPublicKeyInfo, RSA 2048–8192 bits).
    pub(crate) fn parse(pem: &str) -> Result<PublicKeyPem> {
        let bad = |why: &str| KmsError::InvalidParameter(format!("API public key: {why}"));
        let body = pem
            .trim()
            .strip_prefix("-----BEGIN PUBLIC KEY-----")
            .and_then(|rest| rest.split("-----END PUBLIC KEY-----").next())
            .ok_or_else(|| bad("expected PEM text starting with -----BEGIN PUBLIC KEY----- (openssl rsa -pubout)"))?;
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| bad(&format!("the PEM body is not base64: {e}")))?;
        ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &der)
            .map_err(|e| bad(&format!("not an RSA public key of 2048–8192 bits ({e})")))?;
        Ok(PublicKeyPem {
            pem: pem.trim().to_owned() + "\n",
            der,
        })
    }

    /// The DER SubjectPublicKeyInfo.
    pub(crate) fn der(&self) -> &[u8] {
        &self.der
    }

    /// The PEM text, as registered.
    pub(crate) fn pem(&self) -> &str {
        &self.pem
    }

    /// OCI's fingerprint: MD5 of the DER SubjectPublicKeyInfo as `aa:bb:…`.
    pub(crate) fn fingerprint(&self) -> String {
        Md5::digest(&self.der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}
