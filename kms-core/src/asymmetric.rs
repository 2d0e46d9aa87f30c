//! Asymmetric keys at work: sign and verify with RSA and ECDSA keys, RSA-OAEP encrypt and
//! decrypt, as OCI's crypto endpoint does them.
//!
//! Private-key operations (sign, decrypt) run in the key's protection backend; public-key
//! operations (verify, encrypt) use the public key kept on the key version, so that they give
//! exactly what an outside verifier with that public key gets. All cryptography is aws-lc's.

use aws_lc_rs::digest;
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256};
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use zeroize::Zeroizing;

use crate::audit::{AuditSubject, Principal};
use crate::context::Context;
use crate::envelope::{check_usable, check_version_usable, material_of, Decrypted, Encrypted, Envelope};
use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::{
    Curve, HashAlg, Key, KeySpec, KeyVersion, MessageType, RsaEncryption, SignatureScheme, SigningAlgorithm,
};
use crate::protection::public_key_der;
use crate::store::ReadTxn;

/// Longest `message` sign and verify take (OCI: 4096 bytes).
pub(crate) const MAX_MESSAGE: usize = 4096;

/// What to sign or verify.
#[derive(Debug, Clone, Copy)]
pub struct SignatureInput<'a> {
    /// The key.
    pub key_id: &'a Ocid,
    /// The key version; the key's current version when absent (sign only: verify needs it).
    pub key_version_id: Option<&'a Ocid>,
    /// The message, or its digest ([`MessageType::Digest`]).
    pub message: &'a [u8],
    /// Whether `message` is the message or its digest.
    pub message_type: MessageType,
    /// The signing algorithm.
    pub algorithm: SigningAlgorithm,
}

/// A signature made by [`Kms::sign`](crate::Kms::sign).
#[derive(Debug, Clone)]
pub struct Signed {
    /// The key.
    pub key_id: Ocid,
    /// The key version that signed.
    pub key_version_id: Ocid,
    /// The signature: PKCS#1 v1.5 or PSS bytes for RSA, DER `SEQUENCE { r, s }` for ECDSA.
    pub signature: Vec<u8>,
    /// The algorithm.
    pub algorithm: SigningAlgorithm,
}

fn aws_digest(hash: HashAlg) -> &'static digest::Algorithm {
    match hash {
        HashAlg::Sha224 => &digest::SHA224,
        HashAlg::Sha256 => &digest::SHA256,
        HashAlg::Sha384 => &digest::SHA384,
        HashAlg::Sha512 => &digest::SHA512,
    }
}

/// The digest a signature covers: the hash of a RAW message, or the DIGEST given, whose
/// length must be the hash's.
fn message_digest(input: &SignatureInput<'_>) -> Result<digest::Digest> {
    if input.message.len() > MAX_MESSAGE {
        return Err(KmsError::InvalidParameter(format!(
            "message is {} bytes; at most {MAX_MESSAGE} may be signed (send its digest with messageType DIGEST)",
            input.message.len()
        )));
    }
    let alg = aws_digest(input.algorithm.hash);
    match input.message_type {
        MessageType::Raw => Ok(digest::digest(alg, input.message)),
        MessageType::Digest => digest::Digest::import_less_safe(input.message, alg).map_err(|_| {
            KmsError::InvalidParameter(format!(
                "with messageType DIGEST the message is the {}-byte digest {} signs, not {} bytes",
                alg.output_len(),
                input.algorithm.as_str(),
                input.message.len()
            ))
        }),
    }
}

/// aws-lc-rs's verification algorithm for `algorithm` on keys of shape `spec`.
fn verification(spec: KeySpec, algorithm: SigningAlgorithm) -> Result<&'static dyn VerificationAlgorithm> {
    use HashAlg::*;
    use SignatureScheme::*;
    Ok(match (spec, algorithm.scheme, algorithm.hash) {
        (KeySpec::Rsa { .. }, RsaPss, Sha256) => &signature::RSA_PSS_2048_8192_SHA256,
        (KeySpec::Rsa { .. }, RsaPss, Sha384) => &signature::RSA_PSS_2048_8192_SHA384,
        (KeySpec::Rsa { .. }, RsaPss, Sha512) => &signature::RSA_PSS_2048_8192_SHA512,
        (KeySpec::Rsa { .. }, RsaPkcs1, Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (KeySpec::Rsa { .. }, RsaPkcs1, Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (KeySpec::Rsa { .. }, RsaPkcs1, Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (KeySpec::Ecdsa(Curve::P256), Ecdsa, Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
        (KeySpec::Ecdsa(Curve::P256), Ecdsa, Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
        (KeySpec::Ecdsa(Curve::P256), Ecdsa, Sha512) => &signature::ECDSA_P256_SHA512_ASN1,
        (KeySpec::Ecdsa(Curve::P384), Ecdsa, Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
        (KeySpec::Ecdsa(Curve::P384), Ecdsa, Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
        (KeySpec::Ecdsa(Curve::P384), Ecdsa, Sha512) => &signature::ECDSA_P384_SHA512_ASN1,
        (KeySpec::Ecdsa(Curve::P521), Ecdsa, Sha256) => &signature::ECDSA_P521_SHA256_ASN1,
        (KeySpec::Ecdsa(Curve::P521), Ecdsa, Sha384) => &signature::ECDSA_P521_SHA384_ASN1,
        (KeySpec::Ecdsa(Curve::P521), Ecdsa, Sha512) => &signature::ECDSA_P521_SHA512_ASN1,
        (KeySpec::Rsa { .. }, RsaPss | RsaPkcs1, Sha224) => return Err(crate::protection::unsupported_rsa(algorithm)),
        _ => {
            return Err(KmsError::InvalidParameter(format!(
                "signingAlgorithm {} does not apply to {spec} keys",
                algorithm.as_str()
            )))
        }
    })
}

/// The SubjectPublicKeyInfo DER of `version`.
fn public_key_of(version: &KeyVersion) -> Result<Vec<u8>> {
    let pem = version
        .public_key
        .as_deref()
        .ok_or_else(|| KmsError::InvalidParameter(format!("key version {} has no public key", version.id)))?;
    public_key_der(pem)
}

/// Sign, verify and RSA encryption over a [`Context`].
pub(crate) struct Asymmetric<'a> {
    ctx: &'a Context,
}

impl<'a> Asymmetric<'a> {
    pub(crate) fn new(ctx: &'a Context) -> Self {
        Asymmetric { ctx }
    }

    /// The usable key `key_id` of an asymmetric shape, and its version `version` (the current
    /// one when absent), which must be ENABLED.
    fn key_and_version(
        &self,
        txn: &ReadTxn,
        key_id: &Ocid,
        version: Option<&Ocid>,
        subject: &mut AuditSubject,
    ) -> Result<(Key, KeySpec, KeyVersion)> {
        let key = txn.key(key_id)?;
        subject.vault_id = Some(key.vault_id.clone());
        check_usable(txn, &key)?;
        let spec = key.key_shape.spec()?;
        let version = txn.key_version(key_id, version.unwrap_or(&key.current_key_version))?;
        subject.key_version_id = Some(version.id.clone());
        check_version_usable(&version)?;
        Ok((key, spec, version))
    }

    /// Signs a message or digest with an RSA or ECDSA key.
    pub(crate) fn sign(&self, principal: &Principal, input: SignatureInput<'_>) -> Result<Signed> {
        let subject = AuditSubject {
            key_id: Some(input.key_id.clone()),
            ..Default::default()
        };
        Envelope::new(self.ctx).crypto_op(principal, "Sign", subject, |subject| {
            let txn = self.ctx.read()?;
            let (key, spec, version) = self.key_and_version(&txn, input.key_id, input.key_version_id, subject)?;
            input.algorithm.check_for(spec)?;
            // No check that aws-lc can verify it: an HSM signs RSA with SHA-224, which aws-lc
            // cannot; the SOFTWARE backend refuses that itself.
            let digest = message_digest(&input)?;
            let material = material_of(&txn, &version.id)?;
            let signature = self.ctx.protection(key.protection_mode)?.sign(
                &version.id,
                &material,
                input.algorithm,
                digest.as_ref(),
            )?;
            Ok(Signed {
                key_id: key.id,
                key_version_id: version.id,
                signature,
                algorithm: input.algorithm,
            })
        })
    }

    /// Whether `signature` is a valid signature of the input by the named key version: `false`
    /// for a signature that does not verify, an error only for a bad request.
    pub(crate) fn verify(&self, principal: &Principal, input: SignatureInput<'_>, signature: &[u8]) -> Result<bool> {
        let subject = AuditSubject {
            key_id: Some(input.key_id.clone()),
            ..Default::default()
        };
        Envelope::new(self.ctx).crypto_op(principal, "Verify", subject, |subject| {
            let version_id = input
                .key_version_id
                .ok_or_else(|| KmsError::InvalidParameter("verify needs keyVersionId".into()))?;
            let txn = self.ctx.read()?;
            let (key, spec, version) = self.key_and_version(&txn, input.key_id, Some(version_id), subject)?;
            input.algorithm.check_for(spec)?;
            let digest = message_digest(&input)?;
            if matches!(spec, KeySpec::Rsa { .. }) && input.algorithm.hash == HashAlg::Sha224 {
                // aws-lc has no SHA-224 RSA signatures: the backend checks them if it can (an
                // HSM, with the public key object in its token), or refuses.
                let material = material_of(&txn, &version.id)?;
                return self.ctx.protection(key.protection_mode)?.verify(
                    &version.id,
                    &material,
                    input.algorithm,
                    digest.as_ref(),
                    signature,
                );
            }
            let algorithm = verification(spec, input.algorithm)?;
            let public = public_key_of(&version)?;
            Ok(UnparsedPublicKey::new(algorithm, &public)
                .verify_digest(&digest, signature)
                .is_ok())
        })
    }

    /// Encrypts `plaintext` to an RSA key version's public key with RSA-OAEP.
    pub(crate) fn rsa_encrypt(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        key_version_id: Option<&Ocid>,
        algorithm: RsaEncryption,
        plaintext: &[u8],
    ) -> Result<Encrypted> {
        let subject = AuditSubject {
            key_id: Some(key_id.clone()),
            ..Default::default()
        };
        Envelope::new(self.ctx).crypto_op(principal, "Encrypt", subject, |subject| {
            let txn = self.ctx.read()?;
            let (key, spec, version) = self.key_and_version(&txn, key_id, key_version_id, subject)?;
            require_rsa(&key, spec, algorithm)?;
            let public = PublicEncryptingKey::from_der(&public_key_of(&version)?)
                .ok()
                .and_then(|k| OaepPublicEncryptingKey::new(k).ok())
                .ok_or_else(|| {
                    KmsError::Store(format!("the public key of key version {} is unreadable", version.id))
                })?;
            let mut out = vec![0u8; public.ciphertext_size()];
            let len = public
                .encrypt(oaep(algorithm), plaintext, &mut out, None)
                .map_err(|_| {
                    KmsError::InvalidParameter(format!(
                        "plaintext of {} bytes is too long for {} with an RSA-{} key",
                        plaintext.len(),
                        algorithm.as_str(),
                        public.key_size_bits()
                    ))
                })?
                .len();
            out.truncate(len);
            Ok(Encrypted {
                ciphertext: out,
                key_id: key.id,
                key_version_id: version.id,
            })
        })
    }

    /// Decrypts an RSA-OAEP ciphertext with an RSA key version's private key (the current one
    /// unless `key_version_id` names another: RSA ciphertexts do not name their version).
    pub(crate) fn rsa_decrypt(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        key_version_id: Option<&Ocid>,
        algorithm: RsaEncryption,
        ciphertext: &[u8],
    ) -> Result<Decrypted> {
        let subject = AuditSubject {
            key_id: Some(key_id.clone()),
            ..Default::default()
        };
        Envelope::new(self.ctx).crypto_op(principal, "Decrypt", subject, |subject| {
            let txn = self.ctx.read()?;
            let (key, spec, version) = self.key_and_version(&txn, key_id, key_version_id, subject)?;
            require_rsa(&key, spec, algorithm)?;
            let material = material_of(&txn, &version.id)?;
            let plaintext: Zeroizing<Vec<u8>> =
                self.ctx
                    .protection(key.protection_mode)?
                    .rsa_decrypt(&version.id, &material, algorithm, ciphertext)?;
            Ok(Decrypted {
                plaintext,
                key_id: key.id,
                key_version_id: version.id,
            })
        })
    }
}

fn oaep(algorithm: RsaEncryption) -> &'static aws_lc_rs::rsa::OaepAlgorithm {
    match algorithm {
        RsaEncryption::OaepSha1 => &OAEP_SHA1_MGF1SHA1,
        RsaEncryption::OaepSha256 => &OAEP_SHA256_MGF1SHA256,
    }
}

fn require_rsa(key: &Key, spec: KeySpec, algorithm: RsaEncryption) -> Result<()> {
    match spec {
        KeySpec::Rsa { .. } => Ok(()),
        _ => Err(KmsError::InvalidParameter(format!(
            "encryptionAlgorithm {} is for RSA keys; key {} is {spec}",
            algorithm.as_str(),
            key.id
        ))),
    }
}
