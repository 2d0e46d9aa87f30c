//! Bring your own key, and key export, as OCI's Vault does them.
//!
//! - Every vault has one **wrapping key**: an RSA-4096 key pair, SOFTWARE-protected like any
//!   key version (its private key sealed under the root key), made on first use.
//! - **Import**: the owner wraps key material under the wrapping key's public key
//!   ([`KeyWrapping`]); sealstore unwraps it, checks that it is a key of the requested shape
//!   (AES of the shape's length; RSA or ECDSA as unencrypted PKCS#8 of the shape's size or
//!   curve), and stores it as a new key, or a new version of a key, under the key's protection
//!   mode. Imported versions have origin EXTERNAL. Anything that does not unwrap or does not fit
//!   is refused before anything is written.
//! - **Export**: a SOFTWARE key version's material, wrapped the same way under an RSA public key
//!   the caller gives. HSM and EXTERNAL material never leaves its boundary.
//!
//! The wrapped formats (docs/KMS_API.md, "Key import and export"):
//!
//! ```text
//! RSA_OAEP_SHA256      RSA-OAEP(SHA-256, MGF1-SHA-256, no label)(material)
//! RSA_OAEP_AES_SHA256  RSA-OAEP(SHA-256, MGF1-SHA-256, no label)(K) ‖ AES-KWP(K, material)
//!                      K: a fresh AES-256 key; the first part is exactly the RSA modulus long;
//!                      AES-KWP is AES key wrap with padding (RFC 5649, NIST SP 800-38F)
//! ```
//!
//! All cryptography is aws-lc's.

use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use sealstore_meta::Durability;
use zeroize::Zeroizing;

use crate::audit::{self, AuditSubject, Principal};
use crate::context::Context;
use crate::envelope::{check_usable, check_version_usable, material_of, Envelope};
use crate::error::{KmsError, Result};
use crate::ids::{Ocid, ResourceType};
use crate::keys::{CreateKey, Keys};
use crate::model::{
    Key, KeySpec, KeyState, KeyVersion, KeyWrapping, ProtectionMode, RsaEncryption, VaultState, WrappingKey,
};
use crate::protection::imported::{check_material, Imported};
use crate::protection::{public_key_pem, ExportedMaterial};
use crate::replication::outbox::refuse_replica;
use crate::time::Timestamp;

/// The wrapping keys' modulus length in bytes: RSA-4096, as OCI's.
const WRAPPING_KEY_LEN: u32 = 512;
/// The wrapping keys' shape.
const WRAPPING_KEY: KeySpec = KeySpec::Rsa { len: WRAPPING_KEY_LEN };
/// The temporary AES key of [`KeyWrapping::RsaOaepAesSha256`]: AES-256.
const TEMPORARY_KEY_LEN: usize = 32;
/// Longest material accepted for import (an RSA-4096 PKCS#8 is about 2.4 KiB).
const MAX_MATERIAL: usize = 8 * 1024;

/// Key material wrapped for import (OCI's `WrappedImportKey`).
#[derive(Debug, Clone)]
pub struct WrappedKey {
    /// How it is wrapped.
    pub algorithm: KeyWrapping,
    /// The wrapped bytes.
    pub material: Vec<u8>,
}

/// What [`Kms::export_key`](crate::Kms::export_key) exports.
#[derive(Debug, Clone, Copy)]
pub struct ExportRequest<'a> {
    /// The key.
    pub key_id: &'a Ocid,
    /// The version; the key's current version when absent.
    pub key_version_id: Option<&'a Ocid>,
    /// How the material is wrapped.
    pub algorithm: KeyWrapping,
    /// The caller's RSA public key (2048, 3072 or 4096 bits), a SubjectPublicKeyInfo PEM.
    pub public_key_pem: &'a str,
}

/// An exported key version (OCI's `ExportedKeyData`).
#[derive(Debug, Clone)]
pub struct ExportedKey {
    /// The key.
    pub key_id: Ocid,
    /// The version exported.
    pub key_version_id: Ocid,
    /// The key's vault.
    pub vault_id: Ocid,
    /// When the version was created.
    pub time_created: Timestamp,
    /// The material wrapped under the caller's public key.
    pub encrypted_key: Vec<u8>,
    /// How.
    pub algorithm: KeyWrapping,
}

/// The DER of an RSA public key given as a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC
/// KEY-----`), as callers of export send it.
pub(crate) fn rsa_public_key_der(pem: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    let bad = |why: &str| KmsError::InvalidParameter(format!("publicKey {why}"));
    let pem = pem.trim();
    let body = pem
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|rest| rest.strip_suffix("-----END PUBLIC KEY-----"))
        .ok_or_else(|| bad("must be a PEM public key (-----BEGIN PUBLIC KEY----- … -----END PUBLIC KEY-----)"))?;
    let b64: String = body.split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad("is not valid PEM: its body is not base64"))?;
    let key = PublicEncryptingKey::from_der(&der)
        .map_err(|_| bad("is not an RSA public key of 2048, 3072 or 4096 bits (SubjectPublicKeyInfo)"))?;
    if !matches!(key.key_size_bits(), 2048 | 3072 | 4096) {
        return Err(bad(&format!(
            "is RSA-{}; it must be RSA-2048, 3072 or 4096",
            key.key_size_bits()
        )));
    }
    Ok(der)
}

/// Wraps `material` under the RSA public key `public_key_der` (SubjectPublicKeyInfo) with
/// `algorithm` — what a key owner does before importing, and what export does with the caller's
/// key.
pub fn wrap_key_material(public_key_der: &[u8], algorithm: KeyWrapping, material: &[u8]) -> Result<Vec<u8>> {
    let key = PublicEncryptingKey::from_der(public_key_der)
        .ok()
        .and_then(|k| OaepPublicEncryptingKey::new(k).ok())
        .ok_or_else(|| KmsError::InvalidParameter("the wrapping public key is not an RSA public key".into()))?;
    let oaep = |plaintext: &[u8]| -> Result<Vec<u8>> {
        let mut out = vec![0u8; key.ciphertext_size()];
        let len = key
            .encrypt(&OAEP_SHA256_MGF1SHA256, plaintext, &mut out, None)
            .map_err(|_| {
                KmsError::InvalidParameter(format!(
                    "{} bytes of key material do not fit RSA-OAEP-SHA256 under an RSA-{} key; use RSA_OAEP_AES_SHA256",
                    plaintext.len(),
                    key.key_size_bits()
                ))
            })?
            .len();
        out.truncate(len);
        Ok(out)
    };
    match algorithm {
        KeyWrapping::RsaOaepSha256 => oaep(material),
        KeyWrapping::RsaOaepAesSha256 => {
            let mut temporary = Zeroizing::new([0u8; TEMPORARY_KEY_LEN]);
            aws_lc_rs::rand::fill(temporary.as_mut())
                .map_err(|_| KmsError::Protection("random source failed".into()))?;
            let mut out = oaep(temporary.as_ref())?;
            let kek = AesKek::new(&AES_256, temporary.as_ref())
                .map_err(|_| KmsError::Protection("AES key wrap setup failed".into()))?;
            let mut wrapped = vec![0u8; material.len() + 16];
            let len = kek
                .wrap_with_padding(material, &mut wrapped)
                .map_err(|_| KmsError::Protection("AES key wrap failed".into()))?
                .len();
            out.extend_from_slice(&wrapped[..len]);
            Ok(out)
        }
    }
}

/// Reverses [`wrap_key_material`] for a private key whose modulus is `modulus_len` bytes and
/// whose RSA-OAEP-SHA256 decryption is `decrypt`. Every failure is the caller's: a bad request.
pub(crate) fn unwrap_key_material(
    algorithm: KeyWrapping,
    wrapped: &[u8],
    modulus_len: usize,
    decrypt: impl FnOnce(&[u8]) -> Result<Zeroizing<Vec<u8>>>,
) -> Result<Zeroizing<Vec<u8>>> {
    let refused = |why: &str| {
        KmsError::InvalidParameter(format!(
            "wrappedImportKey.keyMaterial does not unwrap with {} under this vault's wrapping key: {why}",
            algorithm.as_str()
        ))
    };
    match algorithm {
        KeyWrapping::RsaOaepSha256 => {
            if wrapped.len() != modulus_len {
                return Err(refused(&format!(
                    "it is {} bytes; RSA-OAEP under the wrapping key gives exactly {modulus_len}",
                    wrapped.len()
                )));
            }
            decrypt(wrapped).map_err(|_| refused("RSA-OAEP decryption failed (wrong key, hash or algorithm?)"))
        }
        KeyWrapping::RsaOaepAesSha256 => {
            if wrapped.len() < modulus_len + 16 || wrapped.len() > modulus_len + MAX_MATERIAL + 16 {
                return Err(refused(&format!(
                    "it is {} bytes; expected the {modulus_len}-byte RSA-OAEP part followed by an AES key wrap of 16 to {} bytes",
                    wrapped.len(),
                    MAX_MATERIAL + 16
                )));
            }
            let (head, tail) = wrapped.split_at(modulus_len);
            let temporary =
                decrypt(head).map_err(|_| refused("RSA-OAEP decryption of the temporary AES key failed"))?;
            if temporary.len() != TEMPORARY_KEY_LEN {
                return Err(refused(&format!(
                    "the temporary key is {} bytes; it must be an AES-256 key (32 bytes)",
                    temporary.len()
                )));
            }
            let kek = AesKek::new(&AES_256, temporary.as_ref()).map_err(|_| refused("bad temporary key"))?;
            let mut out = Zeroizing::new(vec![0u8; tail.len()]);
            let len = kek
                .unwrap_with_padding(tail, &mut out)
                .map_err(|_| refused("the AES key wrap does not verify (altered, or wrapped under another key)"))?
                .len();
            out.truncate(len);
            Ok(out)
        }
    }
}

/// Wrapping keys, import and export over a [`Context`].
pub(crate) struct Byok<'a> {
    ctx: &'a Context,
}

impl<'a> Byok<'a> {
    pub(crate) fn new(ctx: &'a Context) -> Self {
        Byok { ctx }
    }

    /// The wrapping key of `vault_id`, made on first use (an RSA-4096 key generation).
    pub(crate) fn wrapping_key(&self, principal: &Principal, vault_id: &Ocid) -> Result<WrappingKey> {
        let vault = {
            let txn = self.ctx.read()?;
            if let Some(key) = txn.wrapping_key(vault_id)? {
                return Ok(key);
            }
            txn.vault(vault_id)?
        };
        if vault.lifecycle_state != VaultState::Active {
            return Err(KmsError::IncorrectState(format!(
                "vault {vault_id} is {:?}; keys can only be imported into an ACTIVE vault",
                vault.lifecycle_state
            )));
        }
        // Generated before the write transaction, which must stay short.
        let id = Ocid::generate(ResourceType::WrappingKey, self.ctx.region());
        let made = self
            .ctx
            .protection(ProtectionMode::Software)?
            .create_material_for(&id, WRAPPING_KEY)?;
        let public = made
            .public_key_der
            .ok_or_else(|| KmsError::Protection("an RSA key was made without its public key".into()))?;
        let txn = self.ctx.write()?;
        if let Some(key) = txn.wrapping_key(vault_id)? {
            return Ok(key); // another call made it meanwhile
        }
        let now = self.ctx.now();
        let key = WrappingKey {
            id,
            vault_id: vault.id.clone(),
            compartment_id: vault.compartment_id.clone(),
            lifecycle_state: KeyState::Enabled,
            public_key: public_key_pem(&public),
            time_created: now,
        };
        txn.put_key_material(&key.id, &made.stored)?;
        txn.put_wrapping_key(&key)?;
        let subject = AuditSubject {
            vault_id: Some(vault.id.clone()),
            ..Default::default()
        };
        audit::append(&txn, now, principal, "CreateWrappingKey", &subject, Ok(()))?;
        txn.commit()?;
        Ok(key)
    }

    /// Unwraps `wrapped` under `vault_id`'s wrapping key and checks it fits `spec`.
    fn unwrap(&self, vault_id: &Ocid, wrapped: &WrappedKey, spec: KeySpec) -> Result<Imported> {
        let (key, stored) = {
            let txn = self.ctx.read()?;
            refuse_replica(&txn.vault(vault_id)?)?;
            let key = txn.wrapping_key(vault_id)?.ok_or_else(|| {
                KmsError::InvalidParameter(format!(
                    "vault {vault_id} has no wrapping key yet, so nothing can have been wrapped under it: get it first (`oci kms management wrapping-key get`)"
                ))
            })?;
            let stored = material_of(&txn, &key.id)?;
            (key, stored)
        };
        let software = self.ctx.protection(ProtectionMode::Software)?;
        let secret = unwrap_key_material(
            wrapped.algorithm,
            &wrapped.material,
            WRAPPING_KEY_LEN as usize,
            |ciphertext| software.rsa_decrypt(&key.id, &stored, RsaEncryption::OaepSha256, ciphertext),
        )?;
        check_material(spec, secret)
    }

    /// A refused import is audited like any other refused change.
    fn audited<T>(
        &self,
        principal: &Principal,
        operation: &str,
        subject: AuditSubject,
        work: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let result = work();
        if let Err(err) = &result {
            if !matches!(err, KmsError::Store(_)) {
                self.ctx.audit_only(
                    principal,
                    operation,
                    &subject,
                    Err(err.to_string()),
                    Durability::Immediate,
                )?;
            }
        }
        result
    }

    /// Creates a key whose first version is the imported material.
    pub(crate) fn import_key(&self, principal: &Principal, req: CreateKey, wrapped: &WrappedKey) -> Result<Key> {
        let subject = AuditSubject {
            vault_id: Some(req.vault_id.clone()),
            ..Default::default()
        };
        let spec = req.key_shape.as_ref().map_or(Ok(KeySpec::AES_256), |s| s.spec())?;
        let imported = self.audited(principal, "ImportKey", subject, || {
            self.unwrap(&req.vault_id, wrapped, spec)
        })?;
        Keys::new(self.ctx).import_key(principal, req, imported)
    }

    /// Rotates `key_id` to a version made of the imported material.
    pub(crate) fn import_key_version(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        wrapped: &WrappedKey,
    ) -> Result<KeyVersion> {
        let key = self.ctx.read()?.key(key_id)?;
        let subject = AuditSubject {
            vault_id: Some(key.vault_id.clone()),
            key_id: Some(key.id.clone()),
            ..Default::default()
        };
        let imported = self.audited(principal, "ImportKeyVersion", subject, || {
            self.unwrap(&key.vault_id, wrapped, key.key_shape.spec()?)
        })?;
        Keys::new(self.ctx).import_key_version(principal, key_id, imported)
    }

    /// Exports a SOFTWARE key version wrapped under the caller's RSA public key.
    pub(crate) fn export_key(&self, principal: &Principal, req: ExportRequest<'_>) -> Result<ExportedKey> {
        let subject = AuditSubject {
            key_id: Some(req.key_id.clone()),
            ..Default::default()
        };
        Envelope::new(self.ctx).crypto_op(principal, "ExportKey", subject, |subject| {
            let caller_key = rsa_public_key_der(req.public_key_pem)?;
            let txn = self.ctx.read()?;
            let key = txn.key(req.key_id)?;
            subject.vault_id = Some(key.vault_id.clone());
            check_usable(&txn, &key)?;
            let version = txn.key_version(&key.id, req.key_version_id.unwrap_or(&key.current_key_version))?;
            subject.key_version_id = Some(version.id.clone());
            check_version_usable(&version)?;
            if key.protection_mode != ProtectionMode::Software {
                return Err(KmsError::InvalidParameter(format!(
                    "key {} is {}: only SOFTWARE keys can be exported (as in OCI); its material never leaves its protection boundary",
                    key.id,
                    key.protection_mode.as_str()
                )));
            }
            let stored = material_of(&txn, &version.id)?;
            let ExportedMaterial::Secret(raw) = self
                .ctx
                .protection(key.protection_mode)?
                .export_material(&version.id, &stored)?
            else {
                return Err(KmsError::Protection(format!(
                    "key version {} has no material to export",
                    version.id
                )));
            };
            let encrypted_key = wrap_key_material(&caller_key, req.algorithm, &raw)?;
            Ok(ExportedKey {
                key_id: key.id.clone(),
                key_version_id: version.id.clone(),
                vault_id: key.vault_id.clone(),
                time_created: version.time_created,
                encrypted_key,
                algorithm: req.algorithm,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Curve;
    use crate::protection::software::ecdsa_native;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey};
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};

    fn rsa_pair(size: KeySize) -> (Vec<u8>, Vec<u8>) {
        let pair = RsaKeyPair::generate(size).unwrap();
        let pkcs8 = pair.as_der().unwrap().as_ref().to_vec();
        let public = pair.public_key().as_der().unwrap().as_ref().to_vec();
        (pkcs8, public)
    }

    fn decrypter(pkcs8: &[u8]) -> impl Fn(&[u8]) -> Result<Zeroizing<Vec<u8>>> + '_ {
        move |ciphertext| {
            let key = OaepPrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(pkcs8).unwrap()).unwrap();
            let mut out = Zeroizing::new(vec![0u8; key.min_output_size()]);
            let len = key
                .decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, &mut out, None)
                .map_err(|_| KmsError::InvalidCiphertext("oaep".into()))?
                .len();
            out.truncate(len);
            Ok(out)
        }
    }

    #[test]
    fn both_formats_round_trip_and_refuse_any_flipped_byte() {
        let (private, public) = rsa_pair(KeySize::Rsa2048);
        let material = b"0123456789abcdef0123456789abcdef";
        for algorithm in [KeyWrapping::RsaOaepSha256, KeyWrapping::RsaOaepAesSha256] {
            let wrapped = wrap_key_material(&public, algorithm, material).unwrap();
            let expected = match algorithm {
                KeyWrapping::RsaOaepSha256 => 256,
                KeyWrapping::RsaOaepAesSha256 => 256 + material.len() + 8,
            };
            assert_eq!(wrapped.len(), expected, "{algorithm:?}");
            let back = unwrap_key_material(algorithm, &wrapped, 256, decrypter(&private)).unwrap();
            assert_eq!(back.as_slice(), material);
            for i in [0, 100, 255, wrapped.len() - 1] {
                let mut bad = wrapped.clone();
                bad[i] ^= 1;
                let err = unwrap_key_material(algorithm, &bad, 256, decrypter(&private)).unwrap_err();
                assert!(
                    matches!(err, KmsError::InvalidParameter(_)),
                    "{algorithm:?} byte {i}: {err}"
                );
            }
            let err = unwrap_key_material(algorithm, &wrapped[..wrapped.len() - 8], 256, decrypter(&private));
            assert!(err.is_err());
        }
    }

    #[test]
    fn rsa_private_keys_need_the_aes_format() {
        let (_, public) = rsa_pair(KeySize::Rsa2048);
        let (pkcs8, _) = rsa_pair(KeySize::Rsa2048);
        let err = wrap_key_material(&public, KeyWrapping::RsaOaepSha256, &pkcs8).unwrap_err();
        assert!(err.to_string().contains("RSA_OAEP_AES_SHA256"), "{err}");
        assert!(wrap_key_material(&public, KeyWrapping::RsaOaepAesSha256, &pkcs8).is_ok());
    }

    #[test]
    fn caller_keys_are_pem_rsa_of_oci_sizes() {
        let (_, public) = rsa_pair(KeySize::Rsa2048);
        let pem = public_key_pem(&public);
        assert_eq!(rsa_public_key_der(&pem).unwrap(), public);
        assert!(rsa_public_key_der("file://k.pem").is_err());
        let ec = EcdsaKeyPair::generate(ecdsa_native(Curve::P256).0).unwrap();
        let ec_pem = public_key_pem(ec.public_key().as_der().unwrap().as_ref());
        assert!(rsa_public_key_der(&ec_pem).is_err());
    }
}
