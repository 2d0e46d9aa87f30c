//! HSM protection: each key version is an AES-256 key generated inside a PKCS#11 token,
//! sensitive and not extractable, so its value never leaves the token; every encrypt and
//! decrypt runs in the token with `CKM_AES_GCM`. Tested against SoftHSM2.
//!
//! - The store keeps only a reference: the token object's label, which is the version's id
//!   (`pkcs11:label=<version id>`).
//! - Output: `iv(12) ‖ ciphertext ‖ tag(16)`, a fresh random IV per call (as SOFTWARE does:
//!   far fewer than 2^32 calls per version).
//! - A pool of sessions, opened and logged in once at start, so that concurrent calls do not
//!   queue on one session; object handles are cached per version.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::KeyProtection;
use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::ProtectionMode;

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
    handles: Mutex<HashMap<Ocid, ObjectHandle>>,
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

    /// The token object of `version` (whose stored reference is `stored`).
    fn handle(&self, version: &Ocid, stored: &[u8]) -> Result<ObjectHandle> {
        self.find(version, stored)?.ok_or_else(|| {
            KmsError::Protection(format!(
                "HSM: token {} holds no key for key version {version} (another token, or the key was destroyed)",
                self.description
            ))
        })
    }

    /// [`HsmProtection::handle`], or `None` when the token has no such object.
    fn find(&self, version: &Ocid, stored: &[u8]) -> Result<Option<ObjectHandle>> {
        if let Some(h) = self.handles.lock().expect("HSM handle cache poisoned").get(version) {
            return Ok(Some(*h));
        }
        let label = std::str::from_utf8(stored)
            .ok()
            .and_then(|s| s.strip_prefix(REFERENCE_PREFIX))
            .ok_or_else(|| KmsError::Protection(format!("key version {version} has no HSM reference")))?;
        let found = self.with_session(|s| {
            s.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| hsm_error("finding a key", e))
        })?;
        let handle = match found.as_slice() {
            [h] => *h,
            [] => return Ok(None),
            _ => {
                return Err(KmsError::Protection(format!(
                    "HSM: token {} holds several keys labelled {label}",
                    self.description
                )))
            }
        };
        self.handles
            .lock()
            .expect("HSM handle cache poisoned")
            .insert(version.clone(), handle);
        Ok(Some(handle))
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

impl KeyProtection for HsmProtection {
    fn mode(&self) -> ProtectionMode {
        ProtectionMode::Hsm
    }

    fn create_material(&self, version: &Ocid) -> Result<Vec<u8>> {
        let label = version.as_str().as_bytes().to_vec();
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
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
        self.handles
            .lock()
            .expect("HSM handle cache poisoned")
            .insert(version.clone(), handle);
        Ok(format!("{REFERENCE_PREFIX}{version}").into_bytes())
    }

    fn encrypt(&self, version: &Ocid, stored: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let handle = self.handle(version, stored)?;
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
        let handle = self.handle(version, stored)?;
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

    fn destroy(&self, version: &Ocid, stored: &[u8]) -> Result<()> {
        // Already gone: destroying is idempotent.
        let Some(handle) = self.find(version, stored)? else {
            return Ok(());
        };
        self.with_session(|s| s.destroy_object(handle).map_err(|e| hsm_error("destroying a key", e)))?;
        self.handles.lock().expect("HSM handle cache poisoned").remove(version);
        Ok(())
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
        match self.find(version, reference)? {
            Some(_) => Ok(reference.clone()),
            None => Err(KmsError::InvalidParameter(format!(
                "HSM key version {version} no longer exists in the token (a backup of an HSM key holds only its token reference; the key was destroyed)"
            ))),
        }
    }
}
