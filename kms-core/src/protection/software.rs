//! SOFTWARE protection: key material generated here and sealed at rest with AES-256-GCM under
//! the data directory's root key.
//!
//! The root key is a 32-byte file (`root.key`, mode 0600) created on first start, or supplied
//! with `--root-key-file`. Unsealed master keys live only in memory, inside aws-lc key
//! contexts, and are cached per version so that a crypto call costs one AES-GCM operation.
//!
//! What is sealed is the raw key for AES keys (16, 24 or 32 bytes) and the unencrypted PKCS#8
//! v1 DER of the private key for RSA and ECDSA keys (always longer than 32 bytes, and naming
//! its own algorithm and curve): AES-256 material written before asymmetric keys existed
//! reads unchanged.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, RwLock};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_192_GCM, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, RsaEncoding, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
};
use zeroize::Zeroizing;

use super::{unsupported_rsa, KeyProtection, NewMaterial, Placement};
use crate::backup::format::BackupKeyring;
use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::{Curve, HashAlg, KeySpec, ProtectionMode, RsaEncryption, SignatureScheme, SigningAlgorithm};

/// Length of every AES-256 key handled here.
pub(crate) const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Domain separation for sealed key material.
const MATERIAL_AAD_PREFIX: &[u8] = b"sealstore/key-material/v1:";
/// Sealed under the root key and kept in the store to detect a wrong root key early.
const ROOT_CHECK_AAD: &[u8] = b"sealstore/root-key-check/v1";

/// AES-256-GCM with a fresh random 96-bit nonce per call; output `nonce ‖ ciphertext ‖ tag`.
///
/// Random nonces are safe here: each key encrypts far fewer than 2^32 messages (keys are
/// rotated, and every call is a small payload or a DEK), the bound NIST SP 800-38D sets.
pub(crate) fn gcm_seal(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| KmsError::Protection("random source failed".into()))?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[NONCE_LEN..],
        )
        .map_err(|_| KmsError::Protection("AES-GCM seal failed".into()))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens [`gcm_seal`] output; any change to it or to `aad` fails.
pub(crate) fn gcm_open(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(KmsError::InvalidCiphertext("sealed payload is too short".into()));
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).expect("nonce slice has NONCE_LEN bytes");
    let mut buf = Zeroizing::new(body.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| {
            KmsError::InvalidCiphertext("authentication failed: the ciphertext or its associated data was altered, or it belongs to another key".into())
        })?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// An AES-GCM key of the length of `bytes` (16, 24 or 32).
fn aes_key(bytes: &[u8]) -> Result<LessSafeKey> {
    let algorithm = match bytes.len() {
        16 => &AES_128_GCM,
        24 => &AES_192_GCM,
        _ => &AES_256_GCM,
    };
    let unbound = UnboundKey::new(algorithm, bytes).map_err(|_| KmsError::Protection("bad AES key length".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// The signing algorithm an ECDSA key pair on `curve` is loaded with: the curve's own hash.
/// Other hashes are signed through [`ecdsa_digest`].
pub(crate) fn ecdsa_native(curve: Curve) -> (&'static EcdsaSigningAlgorithm, &'static digest::Algorithm) {
    match curve {
        Curve::P256 => (&ECDSA_P256_SHA256_ASN1_SIGNING, &digest::SHA256),
        Curve::P384 => (&ECDSA_P384_SHA384_ASN1_SIGNING, &digest::SHA384),
        Curve::P521 => (&ECDSA_P521_SHA512_ASN1_SIGNING, &digest::SHA512),
    }
}

/// The digest ECDSA signs, sized for the key pair's native hash (FIPS 186-5 §6.4.1: the
/// leftmost bits of the hash, as many as the group order has). A longer hash keeps its leftmost
/// bytes (P-256 and P-384 orders are byte-aligned, and no hash is longer than P-521's order);
/// a shorter one gets leading zero bytes, which leave its integer value — all ECDSA uses —
/// unchanged. aws-lc makes the signature.
fn ecdsa_digest(curve: Curve, digest: &[u8]) -> Result<Digest> {
    let (_, native) = ecdsa_native(curve);
    let n = native.output_len();
    let mut sized = [0u8; 64];
    if digest.len() >= n {
        sized[..n].copy_from_slice(&digest[..n]);
    } else {
        sized[n - digest.len()..n].copy_from_slice(digest);
    }
    Digest::import_less_safe(&sized[..n], native).map_err(|_| KmsError::Protection("ECDSA digest import failed".into()))
}

/// aws-lc-rs's RSA signature encoding for `algorithm`, and the digest algorithm it signs.
pub(crate) fn rsa_encoding(
    algorithm: SigningAlgorithm,
) -> Result<(&'static dyn RsaEncoding, &'static digest::Algorithm)> {
    Ok(match (algorithm.scheme, algorithm.hash) {
        (SignatureScheme::RsaPss, HashAlg::Sha256) => (&signature::RSA_PSS_SHA256, &digest::SHA256),
        (SignatureScheme::RsaPss, HashAlg::Sha384) => (&signature::RSA_PSS_SHA384, &digest::SHA384),
        (SignatureScheme::RsaPss, HashAlg::Sha512) => (&signature::RSA_PSS_SHA512, &digest::SHA512),
        (SignatureScheme::RsaPkcs1, HashAlg::Sha256) => (&signature::RSA_PKCS1_SHA256, &digest::SHA256),
        (SignatureScheme::RsaPkcs1, HashAlg::Sha384) => (&signature::RSA_PKCS1_SHA384, &digest::SHA384),
        (SignatureScheme::RsaPkcs1, HashAlg::Sha512) => (&signature::RSA_PKCS1_SHA512, &digest::SHA512),
        _ => return Err(unsupported_rsa(algorithm)),
    })
}

/// An unsealed key version, as aws-lc holds it.
enum Unsealed {
    /// An AES-GCM key.
    Aes(LessSafeKey),
    /// An RSA key: the same private key as a signer and as an OAEP decrypter.
    Rsa {
        signer: RsaKeyPair,
        decrypter: OaepPrivateDecryptingKey,
    },
    /// An ECDSA key, loaded with its curve's own hash.
    Ecdsa { pair: EcdsaKeyPair, curve: Curve },
}

impl std::fmt::Debug for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unsealed::Aes(_) => "Aes(<redacted>)",
            Unsealed::Rsa { .. } => "Rsa(<redacted>)",
            Unsealed::Ecdsa { .. } => "Ecdsa(<redacted>)",
        })
    }
}

impl Unsealed {
    /// Reads unsealed material: a raw AES key, or a PKCS#8 RSA or ECDSA private key.
    fn parse(raw: &[u8]) -> Result<Unsealed> {
        if matches!(raw.len(), 16 | 24 | 32) {
            return Ok(Unsealed::Aes(aes_key(raw)?));
        }
        let bad = || KmsError::Protection("key material is neither an AES key nor a PKCS#8 RSA or ECDSA key".into());
        if let Ok(signer) = RsaKeyPair::from_pkcs8(raw) {
            let decrypter = PrivateDecryptingKey::from_pkcs8(raw)
                .ok()
                .and_then(|k| OaepPrivateDecryptingKey::new(k).ok())
                .ok_or_else(bad)?;
            return Ok(Unsealed::Rsa { signer, decrypter });
        }
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            if let Ok(pair) = EcdsaKeyPair::from_pkcs8(ecdsa_native(curve).0, raw) {
                return Ok(Unsealed::Ecdsa { pair, curve });
            }
        }
        Err(bad())
    }

    fn aes(&self, version: &Ocid) -> Result<&LessSafeKey> {
        match self {
            Unsealed::Aes(key) => Ok(key),
            _ => Err(KmsError::InvalidParameter(format!(
                "key version {version} is asymmetric: it does not encrypt with AES"
            ))),
        }
    }
}

/// Fresh key material before it is sealed.
struct Generated {
    /// The raw AES key or the PKCS#8 DER of the private key.
    secret: Zeroizing<Vec<u8>>,
    /// RSA and ECDSA: the SubjectPublicKeyInfo DER.
    public_key_der: Option<Vec<u8>>,
}

/// Fresh material of shape `spec`.
fn generate(spec: KeySpec) -> Result<Generated> {
    let failed = |what: &str| KmsError::Protection(format!("generating {what} failed"));
    match spec {
        KeySpec::Aes { len } => {
            let mut raw = Zeroizing::new(vec![0u8; len as usize]);
            aws_lc_rs::rand::fill(raw.as_mut()).map_err(|_| KmsError::Protection("random source failed".into()))?;
            Ok(Generated {
                secret: raw,
                public_key_der: None,
            })
        }
        KeySpec::Rsa { len } => {
            let size = match len {
                256 => KeySize::Rsa2048,
                384 => KeySize::Rsa3072,
                _ => KeySize::Rsa4096,
            };
            let pair = RsaKeyPair::generate(size).map_err(|_| failed("an RSA key"))?;
            let pkcs8 = pair.as_der().map_err(|_| failed("an RSA key"))?;
            let public = pair.public_key().as_der().map_err(|_| failed("an RSA public key"))?;
            Ok(Generated {
                secret: Zeroizing::new(pkcs8.as_ref().to_vec()),
                public_key_der: Some(public.as_ref().to_vec()),
            })
        }
        KeySpec::Ecdsa(curve) => {
            let pair = EcdsaKeyPair::generate(ecdsa_native(curve).0).map_err(|_| failed("an ECDSA key"))?;
            let pkcs8 = pair.to_pkcs8v1().map_err(|_| failed("an ECDSA key"))?;
            let public = pair.public_key().as_der().map_err(|_| failed("an ECDSA public key"))?;
            Ok(Generated {
                secret: Zeroizing::new(pkcs8.as_ref().to_vec()),
                public_key_der: Some(public.as_ref().to_vec()),
            })
        }
    }
}

/// The key that seals SOFTWARE key material at rest.
pub(crate) struct RootKey {
    key: LessSafeKey,
    /// Backup keys, derived from the same bytes (see [`crate::backup`]).
    backup: BackupKeyring,
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootKey(<redacted>)")
    }
}

impl RootKey {
    /// Loads the root key from `path`, creating it (32 random bytes, mode 0600) if it does not
    /// exist. Refuses a file that other users can read, as ssh does for private keys.
    pub(crate) fn load_or_create(path: &Path) -> Result<RootKey> {
        match fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KmsError::RootKey(format!(
                        "{} has permissions {mode:o}; it must be readable by its owner only (chmod 600)",
                        path.display()
                    )));
                }
                let bytes =
                    Zeroizing::new(fs::read(path).map_err(|e| KmsError::io(format!("reading {}", path.display()), e))?);
                if bytes.len() != KEY_LEN {
                    return Err(KmsError::RootKey(format!(
                        "{} holds {} bytes; a root key is exactly {KEY_LEN} random bytes",
                        path.display(),
                        bytes.len()
                    )));
                }
                RootKey::from_bytes(&bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
                aws_lc_rs::rand::fill(bytes.as_mut())
                    .map_err(|_| KmsError::Protection("random source failed".into()))?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| KmsError::io(format!("creating {}", path.display()), e))?;
                file.write_all(bytes.as_ref())
                    .and_then(|_| file.sync_all())
                    .map_err(|e| KmsError::io(format!("writing {}", path.display()), e))?;
                RootKey::from_bytes(bytes.as_ref())
            }
            Err(e) => Err(KmsError::io(format!("reading {}", path.display()), e)),
        }
    }

    fn from_bytes(bytes: &[u8]) -> Result<RootKey> {
        Ok(RootKey {
            key: aes_key(bytes)?,
            backup: BackupKeyring::from_root_secret(bytes)?,
        })
    }

    /// The keys that seal and open this deployment's KMS backups.
    pub(crate) fn backup_keyring(&self) -> BackupKeyring {
        self.backup.clone()
    }

    /// A value that only this root key opens; stored beside the keys it seals.
    pub(crate) fn check_value(&self) -> Result<Vec<u8>> {
        gcm_seal(&self.key, ROOT_CHECK_AAD, b"sealstore")
    }

    /// Confirms that `check` was made by this root key.
    pub(crate) fn verify_check_value(&self, check: &[u8]) -> Result<()> {
        gcm_open(&self.key, ROOT_CHECK_AAD, check).map(drop).map_err(|_| {
            KmsError::RootKey(
                "this root key did not create this data directory's keys; pass the original with --root-key-file"
                    .into(),
            )
        })
    }
}

/// The SOFTWARE protection backend.
#[derive(Debug)]
pub(crate) struct SoftwareProtection {
    root: RootKey,
    unsealed: RwLock<HashMap<Ocid, Arc<Unsealed>>>,
}

impl SoftwareProtection {
    /// A backend sealing material under `root`.
    pub(crate) fn new(root: RootKey) -> Self {
        SoftwareProtection {
            root,
            unsealed: RwLock::new(HashMap::new()),
        }
    }

    fn material_aad(version: &Ocid) -> Vec<u8> {
        [MATERIAL_AAD_PREFIX, version.as_str().as_bytes()].concat()
    }

    fn key_for(&self, version: &Ocid, stored: &[u8]) -> Result<Arc<Unsealed>> {
        if let Some(k) = self.unsealed.read().expect("cache lock poisoned").get(version) {
            return Ok(k.clone());
        }
        let raw = gcm_open(&self.root.key, &Self::material_aad(version), stored).map_err(|_| {
            KmsError::Protection(format!(
                "sealed material of key version {version} does not open under the root key"
            ))
        })?;
        let key = Arc::new(Unsealed::parse(&raw)?);
        self.unsealed
            .write()
            .expect("cache lock poisoned")
            .insert(version.clone(), key.clone());
        Ok(key)
    }
}

impl KeyProtection for SoftwareProtection {
    fn mode(&self) -> ProtectionMode {
        ProtectionMode::Software
    }

    /// Material unsealed once and cached: a crypto call is one AES-GCM operation.
    fn placement(&self) -> Placement {
        Placement::Inline
    }

    fn create_material(&self, version: &Ocid) -> Result<Vec<u8>> {
        Ok(self.create_material_for(version, KeySpec::AES_256)?.stored)
    }

    /// Every OCI shape: AES 16/24/32 bytes, RSA 2048/3072/4096, ECDSA P-256/P-384/P-521.
    fn create_material_for(&self, version: &Ocid, spec: KeySpec) -> Result<NewMaterial> {
        let generated = generate(spec)?;
        Ok(NewMaterial {
            stored: gcm_seal(&self.root.key, &Self::material_aad(version), &generated.secret)?,
            public_key_der: generated.public_key_der,
        })
    }

    fn sign(&self, version: &Ocid, stored: &[u8], algorithm: SigningAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        let failed = || KmsError::Protection(format!("signing with key version {version} failed"));
        match (&*self.key_for(version, stored)?, algorithm.scheme) {
            (Unsealed::Rsa { signer, .. }, SignatureScheme::RsaPss | SignatureScheme::RsaPkcs1) => {
                let (encoding, digest_alg) = rsa_encoding(algorithm)?;
                let digest = Digest::import_less_safe(digest, digest_alg).map_err(|_| failed())?;
                let mut sig = vec![0u8; signer.public_modulus_len()];
                signer.sign_digest(encoding, &digest, &mut sig).map_err(|_| failed())?;
                Ok(sig)
            }
            (Unsealed::Ecdsa { pair, curve }, SignatureScheme::Ecdsa) => {
                let sig = pair.sign_digest(&ecdsa_digest(*curve, digest)?).map_err(|_| failed())?;
                Ok(sig.as_ref().to_vec())
            }
            _ => Err(KmsError::InvalidParameter(format!(
                "key version {version} cannot sign with {}",
                algorithm.as_str()
            ))),
        }
    }

    fn rsa_decrypt(
        &self,
        version: &Ocid,
        stored: &[u8],
        algorithm: RsaEncryption,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let Unsealed::Rsa { decrypter, .. } = &*self.key_for(version, stored)? else {
            return Err(KmsError::InvalidParameter(format!(
                "key version {version} is not an RSA key"
            )));
        };
        let oaep = match algorithm {
            RsaEncryption::OaepSha1 => &OAEP_SHA1_MGF1SHA1,
            RsaEncryption::OaepSha256 => &OAEP_SHA256_MGF1SHA256,
        };
        let mut out = Zeroizing::new(vec![0u8; decrypter.min_output_size()]);
        let len = decrypter
            .decrypt(oaep, ciphertext, &mut out, None)
            .map_err(|_| {
                KmsError::InvalidCiphertext(format!(
                    "{} decryption with key version {version} failed: the ciphertext was altered, made for another key version, or with another algorithm",
                    algorithm.as_str()
                ))
            })?
            .len();
        out.truncate(len);
        Ok(out)
    }

    fn encrypt(&self, version: &Ocid, stored: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        gcm_seal(self.key_for(version, stored)?.aes(version)?, aad, plaintext)
    }

    fn decrypt(&self, version: &Ocid, stored: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        gcm_open(self.key_for(version, stored)?.aes(version)?, aad, sealed)
    }

    fn destroy(&self, version: &Ocid, _stored: &[u8]) -> Result<()> {
        self.unsealed.write().expect("cache lock poisoned").remove(version);
        Ok(())
    }

    fn export_material(&self, version: &Ocid, stored: &[u8]) -> Result<super::ExportedMaterial> {
        let raw = gcm_open(&self.root.key, &Self::material_aad(version), stored).map_err(|_| {
            KmsError::Protection(format!(
                "sealed material of key version {version} does not open under the root key"
            ))
        })?;
        Ok(super::ExportedMaterial::Secret(raw))
    }

    fn import_material(&self, version: &Ocid, exported: &super::ExportedMaterial) -> Result<Vec<u8>> {
        match exported {
            super::ExportedMaterial::Secret(raw) if Unsealed::parse(raw).is_ok() => {
                gcm_seal(&self.root.key, &Self::material_aad(version), raw)
            }
            _ => Err(KmsError::InvalidParameter(format!(
                "replicated material of key version {version} is neither an AES key nor a PKCS#8 RSA or ECDSA key"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ResourceType;

    #[test]
    fn root_key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let a = RootKey::load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let check = a.check_value().unwrap();
        let b = RootKey::load_or_create(&path).unwrap();
        b.verify_check_value(&check).unwrap();

        let other = RootKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(matches!(other.verify_check_value(&check), Err(KmsError::RootKey(_))));

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(RootKey::load_or_create(&path), Err(KmsError::RootKey(_))));
    }

    #[test]
    fn material_is_bound_to_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let sw = SoftwareProtection::new(RootKey::load_or_create(&dir.path().join("root.key")).unwrap());
        let v1 = Ocid::generate(ResourceType::KeyVersion, "t");
        let v2 = Ocid::generate(ResourceType::KeyVersion, "t");
        let m1 = sw.create_material(&v1).unwrap();
        let ct = sw.encrypt(&v1, &m1, b"aad", b"hello").unwrap();
        assert_eq!(&*sw.decrypt(&v1, &m1, b"aad", &ct).unwrap(), b"hello");
        assert!(sw.decrypt(&v1, &m1, b"other", &ct).is_err());
        // Material sealed for v1 cannot be passed off as v2's.
        assert!(sw.encrypt(&v2, &m1, b"", b"x").is_err());
    }

    fn backend() -> (tempfile::TempDir, SoftwareProtection) {
        let dir = tempfile::tempdir().unwrap();
        let sw = SoftwareProtection::new(RootKey::load_or_create(&dir.path().join("root.key")).unwrap());
        (dir, sw)
    }

    #[test]
    fn short_aes_keys_encrypt_and_asymmetric_keys_do_not() {
        let (_dir, sw) = backend();
        for len in [16, 24] {
            let v = Ocid::generate(ResourceType::KeyVersion, "t");
            let m = sw.create_material_for(&v, KeySpec::Aes { len }).unwrap();
            assert!(m.public_key_der.is_none());
            let ct = sw.encrypt(&v, &m.stored, b"aad", b"hello").unwrap();
            assert_eq!(&*sw.decrypt(&v, &m.stored, b"aad", &ct).unwrap(), b"hello");
        }
        let v = Ocid::generate(ResourceType::KeyVersion, "t");
        let m = sw.create_material_for(&v, KeySpec::Ecdsa(Curve::P256)).unwrap();
        assert!(matches!(
            sw.encrypt(&v, &m.stored, b"", b"x"),
            Err(KmsError::InvalidParameter(_))
        ));
    }

    #[test]
    fn signatures_verify_under_the_public_key() {
        use aws_lc_rs::signature::UnparsedPublicKey;
        let (_dir, sw) = backend();
        let cases: [(
            KeySpec,
            &str,
            &dyn signature::VerificationAlgorithm,
            &'static digest::Algorithm,
        ); 5] = [
            (
                KeySpec::Rsa { len: 256 },
                "SHA_256_RSA_PKCS_PSS",
                &signature::RSA_PSS_2048_8192_SHA256,
                &digest::SHA256,
            ),
            (
                KeySpec::Rsa { len: 256 },
                "SHA_512_RSA_PKCS1_V1_5",
                &signature::RSA_PKCS1_2048_8192_SHA512,
                &digest::SHA512,
            ),
            // Hashes longer and shorter than the curve's own.
            (
                KeySpec::Ecdsa(Curve::P256),
                "ECDSA_SHA_512",
                &signature::ECDSA_P256_SHA512_ASN1,
                &digest::SHA512,
            ),
            (
                KeySpec::Ecdsa(Curve::P384),
                "ECDSA_SHA_256",
                &signature::ECDSA_P384_SHA256_ASN1,
                &digest::SHA256,
            ),
            (
                KeySpec::Ecdsa(Curve::P521),
                "ECDSA_SHA_384",
                &signature::ECDSA_P521_SHA384_ASN1,
                &digest::SHA384,
            ),
        ];
        for (spec, name, verifier, hash) in cases {
            let v = Ocid::generate(ResourceType::KeyVersion, "t");
            let m = sw.create_material_for(&v, spec).unwrap();
            let public = m.public_key_der.unwrap();
            let d = digest::digest(hash, b"message");
            let sig = sw
                .sign(&v, &m.stored, SigningAlgorithm::parse(name).unwrap(), d.as_ref())
                .unwrap();
            UnparsedPublicKey::new(verifier, &public)
                .verify(b"message", &sig)
                .unwrap();
            assert!(UnparsedPublicKey::new(verifier, &public)
                .verify(b"other", &sig)
                .is_err());
        }
        let v = Ocid::generate(ResourceType::KeyVersion, "t");
        let m = sw.create_material_for(&v, KeySpec::Rsa { len: 256 }).unwrap();
        let sha224 = SigningAlgorithm::parse("SHA_224_RSA_PKCS_PSS").unwrap();
        assert!(matches!(
            sw.sign(&v, &m.stored, sha224, &[0; 28]),
            Err(KmsError::InvalidParameter(_))
        ));
    }
}
