//! HSM protection: each key version is a key generated inside a PKCS#11 token, sensitive and
//! not extractable, so its secret never leaves the token; every private operation runs there.
//! Tested against SoftHSM2.
//!
//! - AES (16, 24 or 32 bytes): a secret key from `CKM_AES_KEY_GEN`; encrypt and decrypt with
//!   `CKM_AES_GCM`, output `iv(12) ‖ ciphertext ‖ tag(16)`, a fresh random IV per call (as
//!   SOFTWARE does: far fewer than 2^32 calls per version).
//! - RSA 2048/3072/4096 (`CKM_RSA_PKCS_KEY_PAIR_GEN`, exponent 65537) and ECDSA P-256/P-384/
//!   P-521 (`CKM_EC_KEY_PAIR_GEN`): a private key object (`CKA_SENSITIVE`, not
//!   `CKA_EXTRACTABLE`, `CKA_TOKEN`) and its public key object, both labelled with the
//!   version's id. The public key the version shows is built from the public object's
//!   `CKA_MODULUS`/`CKA_PUBLIC_EXPONENT` or `CKA_EC_POINT` (aws-lc encodes and validates the
//!   SubjectPublicKeyInfo).
//! - Signatures in the token: `CKM_RSA_PKCS` over `DigestInfo ‖ digest`, `CKM_RSA_PKCS_PSS`
//!   (MGF1 with the same hash, salt as long as the hash), `CKM_ECDSA` over the digest cut to the
//!   order's length (FIPS 186-5 §6.4.1), its `r ‖ s` returned as DER. SHA-224 RSA signatures
//!   too, which aws-lc-rs (SOFTWARE) lacks; they are also verified in the token, with the
//!   public key object. RSA-OAEP decryption with `CKM_RSA_PKCS_OAEP` (no label).
//! - The store keeps only a reference: the objects' label, which is the version's id
//!   (`pkcs11:label=<version id>`). Destroying a version destroys every object so labelled.
//! - A pool of sessions, opened and logged in once at start, so that concurrent calls do not
//!   queue on one session; object handles are cached per version.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
use aws_lc_rs::signature::{
    ParsedPublicKey, VerificationAlgorithm, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ECDSA_P521_SHA512_ASN1,
};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::{der, imported, KeyProtection, NewMaterial};
use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::{Curve, HashAlg, KeySpec, ProtectionMode, RsaEncryption, SignatureScheme, SigningAlgorithm};

const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;
/// Prefix of the reference the store keeps for an HSM key version.
const REFERENCE_PREFIX: &str = "pkcs11:label=";

/// Where the token is and how to log in.
#[derive(Clone)]
pub struct HsmConfig {
    /// The PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The user PIN.
    pub pin: Zeroizing<String>,
    /// Sessions opened at start: how many calls run in the token at once.
    pub sessions: usize,
}

impl std::fmt::Debug for HsmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

/// Key versions inside a PKCS#11 token.
pub struct HsmProtection {
    description: String,
    // Kept so the module stays loaded for as long as the sessions.
    _pkcs11: Pkcs11,
    idle: Mutex<Vec<Session>>,
    returned: Condvar,
    handles: Mutex<HashMap<(Ocid, Part), TokenKey>>,
}

/// Which of a version's token objects a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    /// The AES key.
    Secret,
    /// The RSA or ECDSA private key.
    Private,
    /// Its public key.
    Public,
}

impl Part {
    fn class(self) -> ObjectClass {
        match self {
            Part::Secret => ObjectClass::SECRET_KEY,
            Part::Private => ObjectClass::PRIVATE_KEY,
            Part::Public => ObjectClass::PUBLIC_KEY,
        }
    }
}

/// A token object found for a version.
#[derive(Debug, Clone, Copy)]
struct TokenKey {
    handle: ObjectHandle,
    /// ECDSA keys: the curve (read from `CKA_EC_PARAMS`).
    curve: Option<Curve>,
}

impl std::fmt::Debug for HsmProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmProtection")
            .field("token", &self.description)
            .finish_non_exhaustive()
    }
}

fn hsm_error(what: &str, e: CkError) -> KmsError {
    KmsError::Protection(format!("HSM: {what}: {e}"))
}

impl HsmProtection {
    /// Loads the module, finds the token by label, opens the session pool and logs in. Fails
    /// with the reason (no such module, no such token, wrong PIN) before serving anything.
    pub fn open(config: &HsmConfig) -> Result<Self> {
        let module = config.module.display();
        let pkcs11 = Pkcs11::new(&config.module)
            .map_err(|e| KmsError::Protection(format!("cannot load the PKCS#11 module {module}: {e}")))?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Another instance in this process initialized it: fine, it is one library.
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(hsm_error(&format!("initializing {module}"), e)),
        }
        let slot = find_token(&pkcs11, &config.token_label, &module.to_string())?;
        let sessions = config.sessions.max(1);
        let mut idle = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            idle.push(
                pkcs11
                    .open_rw_session(slot)
                    .map_err(|e| hsm_error("opening a session", e))?,
            );
        }
        // A login holds for every session of this process on the token.
        let pin = AuthPin::new(config.pin.as_str().into());
        match idle[0].login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(KmsError::Protection(format!(
                    "HSM: the PIN for token '{}' is wrong",
                    config.token_label
                )))
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(KmsError::Protection(format!(
                    "HSM: the user PIN of token '{}' is locked",
                    config.token_label
                )))
            }
            Err(e) => return Err(hsm_error(&format!("logging in to token '{}'", config.token_label), e)),
        }
        Ok(HsmProtection {
            description: format!("'{}' in {module}", config.token_label),
            _pkcs11: pkcs11,
            idle: Mutex::new(idle),
            returned: Condvar::new(),
            handles: Mutex::new(HashMap::new()),
        })
    }

    /// Runs `f` on an idle session, waiting for one if all are busy.
    fn with_session<T>(&self, f: impl FnOnce(&Session) -> Result<T>) -> Result<T> {
        let session = {
            let mut idle = self.idle.lock().expect("HSM session pool poisoned");
            loop {
                if let Some(s) = idle.pop() {
                    break s;
                }
                idle = self.returned.wait(idle).expect("HSM session pool poisoned");
            }
        };
        let out = f(&session);
        self.idle.lock().expect("HSM session pool poisoned").push(session);
        self.returned.notify_one();
        out
    }

    /// The `part` object of `version` (whose stored reference is `stored`).
    fn handle(&self, version: &Ocid, stored: &[u8], part: Part) -> Result<TokenKey> {
        self.find(version, stored, part)?.ok_or_else(|| {
            let what = match part {
                Part::Secret => "key",
                Part::Private => "private key",
                Part::Public => "public key",
            };
            KmsError::Protection(format!(
                "HSM: token {} holds no {what} for key version {version} (another token, or the key was destroyed)",
                self.description
            ))
        })
    }

    /// The label `stored` refers to.
    fn label<'s>(version: &Ocid, stored: &'s [u8]) -> Result<&'s str> {
        std::str::from_utf8(stored)
            .ok()
            .and_then(|s| s.strip_prefix(REFERENCE_PREFIX))
            .ok_or_else(|| KmsError::Protection(format!("key version {version} has no HSM reference")))
    }

    /// [`HsmProtection::handle`], or `None` when the token has no such object.
    fn find(&self, version: &Ocid, stored: &[u8], part: Part) -> Result<Option<TokenKey>> {
        let cache_key = (version.clone(), part);
        if let Some(k) = self.handles.lock().expect("HSM handle cache poisoned").get(&cache_key) {
            return Ok(Some(*k));
        }
        let label = Self::label(version, stored)?;
        let found = self.with_session(|s| {
            let found = s
                .find_objects(&[
                    Attribute::Class(part.class()),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .map_err(|e| hsm_error("finding a key", e))?;
            match found.as_slice() {
                [] => Ok(None),
                [handle] => Ok(Some(TokenKey {
                    handle: *handle,
                    curve: match part {
                        Part::Secret => None,
                        Part::Private | Part::Public => ec_curve(s, *handle)?,
                    },
                })),
                _ => Err(KmsError::Protection(format!(
                    "HSM: token {} holds several keys labelled {label}",
                    self.description
                ))),
            }
        })?;
        let Some(key) = found else {
            return Ok(None);
        };
        self.handles
            .lock()
            .expect("HSM handle cache poisoned")
            .insert(cache_key, key);
        Ok(Some(key))
    }
}

/// The slot holding the initialized token labelled `label`.
fn find_token(pkcs11: &Pkcs11, label: &str, module: &str) -> Result<Slot> {
    let slots = pkcs11
        .get_slots_with_initialized_token()
        .map_err(|e| hsm_error("listing tokens", e))?;
    let mut seen = Vec::new();
    for slot in slots {
        let info = pkcs11
            .get_token_info(slot)
            .map_err(|e| hsm_error("reading token information", e))?;
        let name = info.label().trim_end().to_owned();
        if name == label {
            return Ok(slot);
        }
        seen.push(name);
    }
    Err(KmsError::Protection(format!(
        "HSM: no initialized token labelled '{label}' in {module} (found: {})",
        if seen.is_empty() {
            "none".to_owned()
        } else {
            seen.join(", ")
        }
    )))
}

/// The curve of an EC key object; `None` for any other key type.
fn ec_curve(s: &Session, handle: ObjectHandle) -> Result<Option<Curve>> {
    let kind = s
        .get_attributes(handle, &[AttributeType::KeyType])
        .map_err(|e| hsm_error("reading a key's type", e))?;
    if !kind.contains(&Attribute::KeyType(KeyType::EC)) {
        return Ok(None);
    }
    let params = s
        .get_attributes(handle, &[AttributeType::EcParams])
        .map_err(|e| hsm_error("reading an EC key's curve", e))?;
    params
        .iter()
        .find_map(|a| match a {
            Attribute::EcParams(p) => der::curve_of_params(p),
            _ => None,
        })
        .map(Some)
        .ok_or_else(|| KmsError::Protection("HSM: an EC key on a curve other than P-256, P-384 or P-521".into()))
}

/// A hash as PKCS#11 names it: the digest mechanism, MGF1 with it, and its length.
fn pkcs11_hash(hash: HashAlg) -> (MechanismType, PkcsMgfType, u64) {
    match hash {
        HashAlg::Sha224 => (MechanismType::SHA224, PkcsMgfType::MGF1_SHA224, 28),
        HashAlg::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32),
        HashAlg::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48),
        HashAlg::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64),
    }
}

/// The RSA mechanism and its input for `algorithm` over `digest`: PKCS#1 v1.5 signs the
/// DER `DigestInfo` of the digest, PSS (MGF1 with the same hash, salt as long as the hash) the
/// digest itself. `None` for ECDSA.
fn rsa_mechanism(algorithm: SigningAlgorithm, digest: &[u8]) -> Option<(Mechanism<'static>, Vec<u8>)> {
    match algorithm.scheme {
        SignatureScheme::RsaPkcs1 => Some((
            Mechanism::RsaPkcs,
            [der::digest_info_prefix(algorithm.hash), digest].concat(),
        )),
        SignatureScheme::RsaPss => {
            let (hash_alg, mgf, s_len) = pkcs11_hash(algorithm.hash);
            let params = PkcsPssParams {
                hash_alg,
                mgf,
                s_len: s_len.into(),
            };
            Some((Mechanism::RsaPkcsPss(params), digest.to_vec()))
        }
        SignatureScheme::Ecdsa => None,
    }
}

/// The verification algorithm aws-lc parses a public point on `curve` with (only the curve
/// matters: the key is encoded, not used).
fn ec_parser(curve: Curve) -> &'static dyn VerificationAlgorithm {
    match curve {
        Curve::P256 => &ECDSA_P256_SHA256_ASN1,
        Curve::P384 => &ECDSA_P384_SHA384_ASN1,
        Curve::P521 => &ECDSA_P521_SHA512_ASN1,
    }
}

/// The SubjectPublicKeyInfo DER of the public key object `public` of shape `spec`, from its
/// modulus and exponent or its point; aws-lc validates the key and encodes it.
fn public_key_der(s: &Session, public: ObjectHandle, spec: KeySpec) -> Result<Vec<u8>> {
    let bad = |what: &str| KmsError::Protection(format!("HSM: the token's {spec} public key is unusable: {what}"));
    match spec {
        KeySpec::Rsa { len } => {
            let attrs = s
                .get_attributes(public, &[AttributeType::Modulus, AttributeType::PublicExponent])
                .map_err(|e| hsm_error("reading an RSA public key", e))?;
            let (mut n, mut e) = (None, None);
            for a in &attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v.as_slice()),
                    Attribute::PublicExponent(v) => e = Some(v.as_slice()),
                    _ => {}
                }
            }
            let (Some(n), Some(e)) = (n, e) else {
                return Err(bad("no modulus or exponent"));
            };
            let n = &n[n.iter().take_while(|b| **b == 0).count()..];
            if n.len() != len as usize {
                return Err(bad(&format!("its modulus is {} bytes", n.len())));
            }
            let components = aws_lc_rs::rsa::PublicKeyComponents { n, e };
            let spki = components.as_der().map_err(|_| bad("aws-lc refuses it"))?;
            Ok(spki.as_ref().to_vec())
        }
        KeySpec::Ecdsa(curve) => {
            let attrs = s
                .get_attributes(public, &[AttributeType::EcPoint])
                .map_err(|e| hsm_error("reading an EC public key", e))?;
            let value = attrs
                .iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(v) => Some(v.as_slice()),
                    _ => None,
                })
                .ok_or_else(|| bad("no CKA_EC_POINT"))?;
            let point = der::ec_point(curve, value).ok_or_else(|| bad("CKA_EC_POINT is not an uncompressed point"))?;
            let parsed = ParsedPublicKey::new(ec_parser(curve), point).map_err(|_| bad("not a point on the curve"))?;
            let spki = parsed.as_der().map_err(|_| bad("aws-lc cannot encode it"))?;
            Ok(spki.as_ref().to_vec())
        }
        KeySpec::Aes { .. } => Err(bad("AES keys have none")),
    }
}

impl HsmProtection {
    /// Generates an AES key of `len` bytes in the token, labelled `label`.
    fn generate_secret(&self, label: Vec<u8>, len: u32) -> Result<TokenKey> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(u64::from(len).into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Label(label.clone()),
            Attribute::Id(label),
        ];
        let handle = self.with_session(|s| {
            s.generate_key(&Mechanism::AesKeyGen, &template)
                .map_err(|e| hsm_error("generating a key", e))
        })?;
        Ok(TokenKey { handle, curve: None })
    }

    /// Generates an RSA or ECDSA key pair of shape `spec` in the token, both objects labelled
    /// `label`: the private key sensitive and never extractable. Returns the private and
    /// public objects and the public key's SubjectPublicKeyInfo DER.
    fn generate_pair(&self, label: Vec<u8>, spec: KeySpec) -> Result<(TokenKey, TokenKey, Vec<u8>)> {
        let mut public = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Wrap(false),
            Attribute::Label(label.clone()),
            Attribute::Id(label.clone()),
        ];
        let mut private = vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(label.clone()),
            Attribute::Id(label),
        ];
        let (mechanism, curve) = match spec {
            KeySpec::Rsa { len } => {
                public.push(Attribute::KeyType(KeyType::RSA));
                public.push(Attribute::ModulusBits((u64::from(len) * 8).into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                public.push(Attribute::Encrypt(true));
                private.push(Attribute::KeyType(KeyType::RSA));
                private.push(Attribute::Decrypt(true));
                (Mechanism::RsaPkcsKeyPairGen, None)
            }
            KeySpec::Ecdsa(curve) => {
                public.push(Attribute::KeyType(KeyType::EC));
                public.push(Attribute::EcParams(der::curve_params(curve).to_vec()));
                private.push(Attribute::KeyType(KeyType::EC));
                (Mechanism::EccKeyPairGen, Some(curve))
            }
            KeySpec::Aes { .. } => {
                return Err(KmsError::Protection(format!(
                    "HSM: {spec} keys are secret keys, not key pairs"
                )))
            }
        };
        self.with_session(|s| {
            let (public, private) = s
                .generate_key_pair(&mechanism, &public, &private)
                .map_err(|e| hsm_error(&format!("generating an {spec} key pair"), e))?;
            match public_key_der(s, public, spec) {
                Ok(der) => Ok((
                    TokenKey { handle: private, curve },
                    TokenKey { handle: public, curve },
                    der,
                )),
                Err(e) => {
                    // Leave nothing behind that no version refers to.
                    let _ = s.destroy_object(private);
                    let _ = s.destroy_object(public);
                    Err(e)
                }
            }
        })
    }

    /// Brings `raw` (an AES key, or an RSA or ECDSA PKCS#8 private key) into the token under
    /// `label` as a sensitive, non-extractable object — plus, for a private key, its public
    /// key object. The material crosses the PKCS#11 interface only wrapped: under a one-time
    /// AES-256 session key, with AES key wrap with padding (`CKM_AES_KEY_WRAP_PAD`), and the
    /// token unwraps it.
    fn unwrap_into_token(&self, label: Vec<u8>, raw: &[u8]) -> Result<(KeySpec, Vec<(Part, TokenKey)>)> {
        let spec = imported::spec_of(raw).ok_or_else(|| {
            KmsError::InvalidParameter("key material is neither an AES key nor a PKCS#8 RSA or ECDSA key".into())
        })?;
        let mut kek = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(kek.as_mut()).map_err(|_| KmsError::Protection("random source failed".into()))?;
        let wrapped = {
            let wrapper = AesKek::new(&AES_256, kek.as_ref())
                .map_err(|_| KmsError::Protection("AES key wrap setup failed".into()))?;
            let mut out = vec![0u8; raw.len() + 16];
            let len = wrapper
                .wrap_with_padding(raw, &mut out)
                .map_err(|_| KmsError::Protection("AES key wrap failed".into()))?
                .len();
            out.truncate(len);
            out
        };
        let mut one_time = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Unwrap(true),
            Attribute::Value(kek.to_vec()),
        ];
        let protect = |class: ObjectClass| {
            let mut template = vec![
                Attribute::Class(class),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Unwrap(false),
                Attribute::Label(label.clone()),
                Attribute::Id(label.clone()),
            ];
            if class == ObjectClass::SECRET_KEY {
                template.push(Attribute::Wrap(false)); // a private key has no CKA_WRAP
            }
            template
        };
        let made = self.with_session(|s| {
            let created = s.create_object(&one_time);
            for a in one_time.iter_mut() {
                if let Attribute::Value(v) = a {
                    zeroize::Zeroize::zeroize(v);
                }
            }
            let kek_handle = created.map_err(|e| hsm_error("loading a one-time wrapping key", e))?;
            let unwrap = |template: &[Attribute]| {
                s.unwrap_key(&Mechanism::AesKeyWrapPad, kek_handle, &wrapped, template)
                    .map_err(|e| hsm_error(&format!("unwrapping {spec} material into the token"), e))
            };
            let result = (|| match spec {
                KeySpec::Aes { .. } => {
                    let mut template = protect(ObjectClass::SECRET_KEY);
                    template.extend([
                        Attribute::KeyType(KeyType::AES),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                    ]);
                    let handle = unwrap(&template)?;
                    Ok(vec![(Part::Secret, TokenKey { handle, curve: None })])
                }
                KeySpec::Rsa { .. } => {
                    let mut template = protect(ObjectClass::PRIVATE_KEY);
                    template.extend([
                        Attribute::KeyType(KeyType::RSA),
                        Attribute::Sign(true),
                        Attribute::Decrypt(true),
                        Attribute::Derive(false),
                    ]);
                    let private = unwrap(&template)?;
                    let components = s
                        .get_attributes(private, &[AttributeType::Modulus, AttributeType::PublicExponent])
                        .map_err(|e| hsm_error("reading an imported RSA key", e))?;
                    let mut public = vec![
                        Attribute::Class(ObjectClass::PUBLIC_KEY),
                        Attribute::KeyType(KeyType::RSA),
                        Attribute::Token(true),
                        Attribute::Private(false),
                        Attribute::Verify(true),
                        Attribute::Encrypt(true),
                        Attribute::Wrap(false),
                        Attribute::Label(label.clone()),
                        Attribute::Id(label.clone()),
                    ];
                    public.extend(
                        components
                            .into_iter()
                            .filter(|a| matches!(a, Attribute::Modulus(_) | Attribute::PublicExponent(_))),
                    );
                    let public = s
                        .create_object(&public)
                        .map_err(|e| hsm_error("creating an imported key's public key", e))?;
                    Ok(vec![
                        (
                            Part::Private,
                            TokenKey {
                                handle: private,
                                curve: None,
                            },
                        ),
                        (
                            Part::Public,
                            TokenKey {
                                handle: public,
                                curve: None,
                            },
                        ),
                    ])
                }
                KeySpec::Ecdsa(curve) => {
                    let mut template = protect(ObjectClass::PRIVATE_KEY);
                    template.extend([
                        Attribute::KeyType(KeyType::EC),
                        Attribute::Sign(true),
                        Attribute::Derive(false),
                    ]);
                    let private = unwrap(&template)?;
                    let point = imported::ec_public_point(curve, raw)
                        .ok_or_else(|| KmsError::InvalidParameter("unreadable ECDSA key".into()))?;
                    let public = [
                        Attribute::Class(ObjectClass::PUBLIC_KEY),
                        Attribute::KeyType(KeyType::EC),
                        Attribute::Token(true),
                        Attribute::Private(false),
                        Attribute::Verify(true),
                        Attribute::Wrap(false),
                        Attribute::EcParams(der::curve_params(curve).to_vec()),
                        Attribute::EcPoint(der::ec_point_attribute(&point)),
                        Attribute::Label(label.clone()),
                        Attribute::Id(label.clone()),
                    ];
                    let public = s
                        .create_object(&public)
                        .map_err(|e| hsm_error("creating an imported key's public key", e))?;
                    let curve = Some(curve);
                    Ok(vec![
                        (Part::Private, TokenKey { handle: private, curve }),
                        (Part::Public, TokenKey { handle: public, curve }),
                    ])
                }
            })();
            let _ = s.destroy_object(kek_handle);
            if result.is_err() {
                // Leave nothing behind that no version refers to.
                if let Ok(found) = s.find_objects(&[Attribute::Label(label.clone())]) {
                    for handle in found {
                        let _ = s.destroy_object(handle);
                    }
                }
            }
            result
        })?;
        Ok((spec, made))
    }

    fn cache(&self, version: &Ocid, part: Part, key: TokenKey) {
        self.handles
            .lock()
            .expect("HSM handle cache poisoned")
            .insert((version.clone(), part), key);
    }
}

impl KeyProtection for HsmProtection {
    fn mode(&self) -> ProtectionMode {
        ProtectionMode::Hsm
    }

    fn create_material(&self, version: &Ocid) -> Result<Vec<u8>> {
        Ok(self.create_material_for(version, KeySpec::AES_256)?.stored)
    }

    /// Every OCI shape, generated in the token: AES 16/24/32 bytes, RSA 2048/3072/4096,
    /// ECDSA P-256/P-384/P-521.
    fn create_material_for(&self, version: &Ocid, spec: KeySpec) -> Result<NewMaterial> {
        let label = version.as_str().as_bytes().to_vec();
        let public_key_der = match spec {
            KeySpec::Aes { len } => {
                let key = self.generate_secret(label, len)?;
                self.cache(version, Part::Secret, key);
                None
            }
            KeySpec::Rsa { .. } | KeySpec::Ecdsa(_) => {
                let (private, public, der) = self.generate_pair(label, spec)?;
                self.cache(version, Part::Private, private);
                self.cache(version, Part::Public, public);
                Some(der)
            }
        };
        Ok(NewMaterial {
            stored: format!("{REFERENCE_PREFIX}{version}").into_bytes(),
            public_key_der,
        })
    }

    fn sign(&self, version: &Ocid, stored: &[u8], algorithm: SigningAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        let key = self.handle(version, stored, Part::Private)?;
        let failed = |e| hsm_error(&format!("signing with key version {version}"), e);
        match (rsa_mechanism(algorithm, digest), key.curve) {
            (Some((mechanism, data)), None) => {
                self.with_session(|s| s.sign(&mechanism, key.handle, &data).map_err(failed))
            }
            (None, Some(curve)) => {
                // FIPS 186-5 §6.4.1: the leftmost bits of the hash, as many as the order has
                // (P-256 and P-384 orders are whole bytes; no hash is longer than P-521's).
                let input = &digest[..digest.len().min(curve.key_len() as usize)];
                let raw = self.with_session(|s| s.sign(&Mechanism::Ecdsa, key.handle, input).map_err(failed))?;
                der::ecdsa_signature(&raw).ok_or_else(|| {
                    KmsError::Protection(format!(
                        "HSM: the token's ECDSA signature for key version {version} is not r ‖ s"
                    ))
                })
            }
            _ => Err(KmsError::InvalidParameter(format!(
                "key version {version} cannot sign with {}",
                algorithm.as_str()
            ))),
        }
    }

    /// RSA signatures (SHA-224 ones are why: aws-lc cannot check them) with the public key
    /// object in the token.
    fn verify(
        &self,
        version: &Ocid,
        stored: &[u8],
        algorithm: SigningAlgorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        let key = self.handle(version, stored, Part::Public)?;
        let (Some((mechanism, data)), None) = (rsa_mechanism(algorithm, digest), key.curve) else {
            return Err(KmsError::InvalidParameter(format!(
                "key version {version} cannot verify {} in the HSM",
                algorithm.as_str()
            )));
        };
        self.with_session(|s| match s.verify(&mechanism, key.handle, &data, signature) {
            Ok(()) => Ok(true),
            Err(CkError::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)) => Ok(false),
            Err(e) => Err(hsm_error(&format!("verifying with key version {version}"), e)),
        })
    }

    fn rsa_decrypt(
        &self,
        version: &Ocid,
        stored: &[u8],
        algorithm: RsaEncryption,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let key = self.handle(version, stored, Part::Private)?;
        if key.curve.is_some() {
            return Err(KmsError::InvalidParameter(format!(
                "key version {version} is not an RSA key"
            )));
        }
        let (hash, mgf, _) = match algorithm {
            RsaEncryption::OaepSha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, 20),
            RsaEncryption::OaepSha256 => pkcs11_hash(HashAlg::Sha256),
        };
        let mechanism = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()));
        self.with_session(|s| match s.decrypt(&mechanism, key.handle, ciphertext) {
            Ok(plain) => Ok(Zeroizing::new(plain)),
            // The token does not do this OAEP hash (SoftHSM2 2.6 has SHA-1 only).
            Err(CkError::Pkcs11(
                rv @ (RvError::ArgumentsBad | RvError::MechanismInvalid | RvError::MechanismParamInvalid),
                _,
            )) => Err(KmsError::InvalidParameter(format!(
                "the HSM token {} cannot decrypt {} (it answers {rv:?} to CKM_RSA_PKCS_OAEP with that hash; SoftHSM2 2.6, for one, does RSA-OAEP with SHA-1 only): use RSA_OAEP_SHA_1 with this token",
                self.description,
                algorithm.as_str()
            ))),
            Err(CkError::Pkcs11(
                rv @ (RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataLenRange
                | RvError::FunctionFailed
                | RvError::GeneralError),
                _,
            )) => Err(KmsError::InvalidCiphertext(format!(
                "{} decryption with key version {version} failed in the HSM: the ciphertext was altered, made for another key version, or with another algorithm ({rv})",
                algorithm.as_str()
            ))),
            Err(e) => Err(hsm_error("decrypting", e)),
        })
    }

    fn encrypt(&self, version: &Ocid, stored: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let handle = self.handle(version, stored, Part::Secret)?.handle;
        let mut iv = [0u8; IV_LEN];
        aws_lc_rs::rand::fill(&mut iv).map_err(|_| KmsError::Protection("random source failed".into()))?;
        let mut iv_param = iv;
        let sealed = self.with_session(|s| {
            let params = GcmParams::new(&mut iv_param, aad, TAG_BITS.into()).map_err(|e| hsm_error("GCM", e))?;
            s.encrypt(&Mechanism::AesGcm(params), handle, plaintext)
                .map_err(|e| hsm_error("encrypting", e))
        })?;
        Ok([iv.as_slice(), &sealed].concat())
    }

    fn decrypt(&self, version: &Ocid, stored: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < IV_LEN + (TAG_BITS as usize / 8) {
            return Err(KmsError::InvalidCiphertext("sealed payload is too short".into()));
        }
        let handle = self.handle(version, stored, Part::Secret)?.handle;
        let (iv, body) = sealed.split_at(IV_LEN);
        let mut iv: [u8; IV_LEN] = iv.try_into().expect("split at IV_LEN");
        self.with_session(|s| {
            let params = GcmParams::new(&mut iv, aad, TAG_BITS.into()).map_err(|e| hsm_error("GCM", e))?;
            match s.decrypt(&Mechanism::AesGcm(params), handle, body) {
                Ok(plain) => Ok(Zeroizing::new(plain)),
                // A failed GCM tag check: PKCS#11 says CKR_ENCRYPTED_DATA_INVALID, SoftHSM2
                // answers CKR_GENERAL_ERROR (its decryptFinal fails). Either way: no plaintext.
                Err(CkError::Pkcs11(
                    rv @ (RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange
                    | RvError::FunctionFailed
                    | RvError::GeneralError),
                    _,
                )) => Err(KmsError::InvalidCiphertext(format!(
                    "the HSM could not authenticate the ciphertext: it was altered, or the associated data differs ({rv})"
                ))),
                Err(e) => Err(hsm_error("decrypting", e)),
            }
        })
    }

    /// Destroys every token object labelled with the version (an AES key, or a private key
    /// and its public key). Already gone: nothing to do.
    fn destroy(&self, version: &Ocid, stored: &[u8]) -> Result<()> {
        let label = Self::label(version, stored)?;
        self.with_session(|s| {
            let found = s
                .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
                .map_err(|e| hsm_error("finding a key", e))?;
            for handle in found {
                s.destroy_object(handle).map_err(|e| hsm_error("destroying a key", e))?;
            }
            Ok(())
        })?;
        let mut handles = self.handles.lock().expect("HSM handle cache poisoned");
        for part in [Part::Secret, Part::Private, Part::Public] {
            handles.remove(&(version.clone(), part));
        }
        Ok(())
    }

    /// Bring your own key: the owner's material, unwrapped into the token (see
    /// `HsmProtection::unwrap_into_token`); the store keeps the reference. (HSM keys are not
    /// replicated: their material never leaves the token, so no region exports it.)
    fn import_material(&self, version: &Ocid, exported: &super::ExportedMaterial) -> Result<Vec<u8>> {
        let super::ExportedMaterial::Secret(raw) = exported else {
            return Err(KmsError::InvalidParameter(format!(
                "HSM key version {version} can only be made of key material, not of a reference"
            )));
        };
        let (_, made) = self.unwrap_into_token(version.as_str().as_bytes().to_vec(), raw)?;
        for (part, key) in made {
            self.cache(version, part, key);
        }
        Ok(format!("{REFERENCE_PREFIX}{version}").into_bytes())
    }

    /// The key never leaves the token: a backup holds the reference only.
    fn backup_material(&self, _version: &Ocid, stored: &[u8]) -> Result<super::ExportedMaterial> {
        Ok(super::ExportedMaterial::Reference(stored.to_vec()))
    }

    /// A reference restores while the token still holds its object (not after a purge, which
    /// destroys it).
    fn restore_material(&self, version: &Ocid, backed_up: &super::ExportedMaterial) -> Result<Vec<u8>> {
        let super::ExportedMaterial::Reference(reference) = backed_up else {
            return Err(KmsError::InvalidParameter(format!(
                "the backup holds key material for HSM key version {version}; HSM versions are backed up as token references"
            )));
        };
        // An AES version is a secret key; an RSA or ECDSA one, a private key (and its public key).
        let held = match self.find(version, reference, Part::Secret)? {
            Some(key) => Some(key),
            None => self.find(version, reference, Part::Private)?,
        };
        match held {
            Some(_) => Ok(reference.clone()),
            None => Err(KmsError::InvalidParameter(format!(
                "HSM key version {version} no longer exists in the token (a backup of an HSM key holds only its token reference; the key was destroyed)"
            ))),
        }
    }
}
