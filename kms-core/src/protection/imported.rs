//! Key material brought by its owner (bring your own key), once unwrapped: checked against the
//! shape of the key it is for before any version is made of it.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::PrivateDecryptingKey;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};
use zeroize::Zeroizing;

use super::software::ecdsa_native;
use crate::error::{KmsError, Result};
use crate::model::{Curve, KeySpec};

/// Unwrapped key material that was checked against a key shape: the only way to make one is
/// [`check_material`], so a key version is never made of material that does not fit its key.
pub(crate) struct Imported {
    spec: KeySpec,
    secret: Zeroizing<Vec<u8>>,
    public_key_der: Option<Vec<u8>>,
}

impl std::fmt::Debug for Imported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imported")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Imported {
    /// The raw material, for a key of shape `spec` (refused for any other shape).
    pub(crate) fn secret_for(&self, spec: KeySpec) -> Result<Zeroizing<Vec<u8>>> {
        if spec != self.spec {
            return Err(KmsError::InvalidParameter(format!(
                "the imported material is a {} key; the key is {spec}",
                self.spec
            )));
        }
        Ok(self.secret.clone())
    }

    /// RSA and ECDSA: the public key, SubjectPublicKeyInfo DER.
    pub(crate) fn public_key_der(&self) -> Option<Vec<u8>> {
        self.public_key_der.clone()
    }
}

/// The shape of unwrapped material: an AES key by its length, an RSA or ECDSA key by what its
/// PKCS#8 names. `None` for anything else.
pub(crate) fn spec_of(raw: &[u8]) -> Option<KeySpec> {
    if let len @ (16 | 24 | 32) = raw.len() {
        return Some(KeySpec::Aes { len: len as u32 });
    }
    if let Ok(pair) = RsaKeyPair::from_pkcs8(raw) {
        return Some(KeySpec::Rsa {
            len: pair.public_modulus_len() as u32,
        });
    }
    [Curve::P256, Curve::P384, Curve::P521]
        .into_iter()
        .find(|curve| EcdsaKeyPair::from_pkcs8(ecdsa_native(*curve).0, raw).is_ok())
        .map(KeySpec::Ecdsa)
}

/// The uncompressed point (`04 ‖ x ‖ y`) of an ECDSA private key's PKCS#8 on `curve`.
pub(crate) fn ec_public_point(curve: Curve, raw: &[u8]) -> Option<Vec<u8>> {
    let pair = EcdsaKeyPair::from_pkcs8(ecdsa_native(curve).0, raw).ok()?;
    Some(pair.public_key().as_ref().to_vec())
}

/// Checks that `secret` is a key of shape `spec`: an AES key of its length, or an unencrypted
/// PKCS#8 RSA key of its modulus size or ECDSA key on its curve.
pub(crate) fn check_material(spec: KeySpec, secret: Zeroizing<Vec<u8>>) -> Result<Imported> {
    let bad = |why: String| KmsError::InvalidParameter(format!("imported key material does not fit {spec}: {why}"));
    let public_key_der = match spec {
        KeySpec::Aes { len } => {
            if secret.len() != len as usize {
                return Err(bad(format!("it is {} bytes, not {len}", secret.len())));
            }
            None
        }
        KeySpec::Rsa { len } => {
            let pair = RsaKeyPair::from_pkcs8(&secret)
                .map_err(|_| bad("it is not an unencrypted PKCS#8 RSA private key".into()))?;
            if pair.public_modulus_len() != len as usize {
                return Err(bad(format!(
                    "its modulus is {} bits, not {}",
                    pair.public_modulus_len() * 8,
                    len * 8
                )));
            }
            PrivateDecryptingKey::from_pkcs8(&secret)
                .map_err(|_| bad("aws-lc does not accept it as an RSA decryption key".into()))?;
            let public = pair.public_key().as_der().map_err(|_| bad("no public key".into()))?;
            Some(public.as_ref().to_vec())
        }
        KeySpec::Ecdsa(curve) => {
            let pair = EcdsaKeyPair::from_pkcs8(ecdsa_native(curve).0, &secret).map_err(|_| {
                bad(format!(
                    "it is not an unencrypted PKCS#8 ECDSA private key on {}",
                    curve.as_str()
                ))
            })?;
            let public = pair.public_key().as_der().map_err(|_| bad("no public key".into()))?;
            Some(public.as_ref().to_vec())
        }
    };
    Ok(Imported {
        spec,
        secret,
        public_key_der,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::KeySize;

    fn rsa_pair(size: KeySize) -> (Vec<u8>, Vec<u8>) {
        let pair = RsaKeyPair::generate(size).unwrap();
        let pkcs8 = pair.as_der().unwrap().as_ref().to_vec();
        let public = pair.public_key().as_der().unwrap().as_ref().to_vec();
        (pkcs8, public)
    }

    #[test]
    fn material_must_fit_the_shape() {
        let aes = Zeroizing::new(vec![7u8; 24]);
        assert!(check_material(KeySpec::Aes { len: 24 }, aes.clone()).is_ok());
        assert!(check_material(KeySpec::Aes { len: 32 }, aes).is_err());

        let (pkcs8, public) = rsa_pair(KeySize::Rsa2048);
        let imported = check_material(KeySpec::Rsa { len: 256 }, Zeroizing::new(pkcs8.clone())).unwrap();
        assert_eq!(imported.public_key_der().unwrap(), public);
        assert!(imported.secret_for(KeySpec::Rsa { len: 384 }).is_err());
        let err = check_material(KeySpec::Rsa { len: 384 }, Zeroizing::new(pkcs8.clone())).unwrap_err();
        assert!(err.to_string().contains("2048 bits"), "{err}");
        assert!(check_material(KeySpec::Ecdsa(Curve::P256), Zeroizing::new(pkcs8)).is_err());

        let ec = EcdsaKeyPair::generate(ecdsa_native(Curve::P384).0).unwrap();
        let ec_pkcs8 = ec.to_pkcs8v1().unwrap().as_ref().to_vec();
        assert!(check_material(KeySpec::Ecdsa(Curve::P384), Zeroizing::new(ec_pkcs8.clone())).is_ok());
        assert!(check_material(KeySpec::Ecdsa(Curve::P256), Zeroizing::new(ec_pkcs8)).is_err());
    }
}
