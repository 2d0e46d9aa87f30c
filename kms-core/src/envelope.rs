//! Crypto operations: encrypt/decrypt of small payloads, data-encryption-key generation and
//! unwrap, and rewrap — plus the [`KeyProvider`] trait through which the data path uses them.
//!
//! Every output is a self-describing ciphertext ([`crate::ciphertext`]): decrypt needs only
//! the ciphertext and the caller's associated data.

use std::collections::BTreeMap;

use serde::Serialize;
use zeroize::Zeroizing;

use crate::audit::writer::PendingAudit;
use crate::audit::{AuditSubject, Principal};
use crate::ciphertext;
use crate::context::Context;
use crate::error::{Denial, KmsError, Refusal, Result};
use crate::ids::Ocid;
use crate::model::{Key, KeySpec, KeyState, KeyVersion, KeyVersionState, VaultState};
use crate::protection::Placement;
use crate::store::ReadTxn;

/// Largest plaintext `encrypt` accepts (OCI's limit for direct encryption); bulk data uses
/// envelope encryption with a data-encryption key instead.
pub const MAX_PLAINTEXT: usize = 4096;
/// Length of a data-encryption key (AES-256).
pub const DEK_LEN: usize = 32;

/// Associated data bound to a ciphertext: decrypt must present the same.
///
/// Two forms: OCI's string→string map, bound in a canonical encoding (sorted keys, compact
/// JSON) so key order never matters; and raw bytes, bound exactly as given — the form
/// sealstore's data path uses (see [`KeyProvider`]), which the KMS API accepts as the
/// `rawAssociatedData` extension so a remote data path binds the same bytes as a local one.
///
/// ```
/// use kms_core::AssociatedData;
///
/// let a = AssociatedData::from_json(r#"{"tenant":"acme","table":"orders"}"#)?;
/// let b = AssociatedData::from_json(r#"{"table":"orders","tenant":"acme"}"#)?;
/// assert_eq!(a, b); // the same binding: order does not matter
/// let raw = AssociatedData::Raw(b"bucket/object".to_vec());
/// assert_ne!(raw, AssociatedData::none());
/// # Ok::<(), kms_core::KmsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssociatedData {
    /// OCI's map form (empty: no associated data).
    Map(BTreeMap<String, String>),
    /// Bytes bound as they are.
    Raw(Vec<u8>),
}

impl Default for AssociatedData {
    fn default() -> Self {
        AssociatedData::Map(BTreeMap::new())
    }
}

impl AssociatedData {
    /// No associated data.
    pub fn none() -> Self {
        Self::default()
    }

    /// From a map.
    pub fn from_map(map: BTreeMap<String, String>) -> Self {
        AssociatedData::Map(map)
    }

    /// Parses a JSON object of strings (`{"bucket":"b","object":"o"}`).
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str::<BTreeMap<String, String>>(json)
            .map(AssociatedData::Map)
            .map_err(|e| KmsError::InvalidParameter(format!("associated data must be a JSON object of strings: {e}")))
    }

    /// The bytes bound into the ciphertext (empty when there is none).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        match self {
            AssociatedData::Map(map) if map.is_empty() => Vec::new(),
            AssociatedData::Map(map) => serde_json::to_vec(map).expect("a string map serializes"),
            AssociatedData::Raw(bytes) => bytes.clone(),
        }
    }
}

/// A 256-bit data-encryption key in memory; zeroized on drop, never printed.
#[derive(Clone)]
pub struct Dek(Zeroizing<[u8; DEK_LEN]>);

impl Dek {
    /// A fresh random key, for data paths that wrap it themselves (customer-provided keys).
    pub fn generate() -> Result<Dek> {
        let mut dek = Zeroizing::new([0u8; DEK_LEN]);
        aws_lc_rs::rand::fill(dek.as_mut()).map_err(|_| KmsError::Protection("random source failed".into()))?;
        Ok(Dek(dek))
    }

    /// A key from its bytes (which the caller should zeroize); fails unless there are 32.
    pub fn from_slice(bytes: &[u8]) -> Result<Dek> {
        let arr: [u8; DEK_LEN] = bytes.try_into().map_err(|_| {
            KmsError::InvalidCiphertext(format!(
                "wrapped key holds {} bytes, not a {DEK_LEN}-byte data key",
                bytes.len()
            ))
        })?;
        Ok(Dek(Zeroizing::new(arr)))
    }

    /// The key bytes, for handing to a cipher.
    pub fn expose(&self) -> &[u8; DEK_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dek(<redacted>)")
    }
}

/// A freshly generated data-encryption key.
#[derive(Debug)]
pub struct DataKey {
    /// The plaintext key (absent when the caller asked only for the wrapped form).
    pub plaintext: Option<Dek>,
    /// The key wrapped by the master key: a self-describing KMS ciphertext.
    pub wrapped: Vec<u8>,
    /// Master key that wrapped it.
    pub key_id: Ocid,
    /// Master key version that wrapped it.
    pub key_version_id: Ocid,
}

/// Result of encrypt and rewrap.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Encrypted {
    /// Self-describing ciphertext.
    #[serde(serialize_with = "as_base64")]
    pub ciphertext: Vec<u8>,
    /// Key used.
    pub key_id: Ocid,
    /// Key version used.
    pub key_version_id: Ocid,
}

/// Result of decrypt.
#[derive(Debug)]
pub struct Decrypted {
    /// The plaintext (zeroized on drop).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Key that had made the ciphertext.
    pub key_id: Ocid,
    /// Key version that had made the ciphertext.
    pub key_version_id: Ocid,
}

fn as_base64<S: serde::Serializer>(bytes: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    use base64::Engine;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// What the data path may learn about a master key (see [`KeyProvider::key_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// The key.
    pub key_id: Ocid,
    /// Its display name (what `alias/NAME` refers to).
    pub display_name: String,
    /// Its lifecycle state.
    pub state: KeyState,
    /// The version new data keys are wrapped by.
    pub current_key_version: Ocid,
    /// Why the key cannot be used now — its own state or its vault's — or `None` when it can.
    pub unusable: Option<Denial>,
}

/// What the data path needs from key management: a new wrapped DEK, an unwrap, a rewrap, and
/// enough about keys to refuse a request up front with a precise reason. Implemented by the
/// embedded [`crate::Kms`] and by a client of another sealstore's KMS API. Calls may block (a
/// remote KMS, an HSM or external key manager may be behind them); [`KeyProvider::placement`]
/// says which do, so that async callers run only those on a thread that may block.
///
/// The associated data here is raw bytes, bound exactly as given
/// ([`AssociatedData::Raw`]), so a DEK wrapped through one implementation unwraps through
/// another that reaches the same key.
///
/// ```
/// use kms_core::{CreateKey, CreateVault, KeyProvider, Kms, KmsConfig, Principal};
///
/// let dir = tempfile::tempdir()?;
/// let kms = Kms::open(KmsConfig::new(dir.path()))?;
/// let me = Principal::local_admin();
/// let vault = kms.create_vault(&me, CreateVault { display_name: "v".into(), ..Default::default() })?;
/// let key = kms.create_key(&me, CreateKey::new(vault.id, "data"))?;
///
/// let keys: &dyn KeyProvider = &kms;
/// let data_key = keys.generate_data_key(&key.id, b"file 17")?;
/// // Keep `data_key.wrapped` beside the data; encrypt with the plaintext key, then drop it.
/// let dek = keys.unwrap_data_key(&data_key.wrapped, b"file 17")?;
/// assert_eq!(dek.expose(), data_key.plaintext.unwrap().expose());
/// assert!(keys.unwrap_data_key(&data_key.wrapped, b"file 18").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// A fresh DEK wrapped by the current version of `key_id`, bound to `aad`.
    fn generate_data_key(&self, key_id: &Ocid, aad: &[u8]) -> Result<DataKey>;
    /// Unwraps a DEK produced by [`KeyProvider::generate_data_key`] with the same `aad`.
    fn unwrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<Dek>;
    /// Re-wraps a wrapped DEK under the current version of its master key, without the DEK
    /// leaving the key manager. Returns the new wrapped DEK and the version that wraps it.
    fn rewrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<(Vec<u8>, Ocid)>;
    /// The key's state and current version; [`KmsError::NotFound`] when there is no such key
    /// (or the caller may not see it).
    fn key_status(&self, key_id: &Ocid) -> Result<KeyStatus>;
    /// The state of one version of `key_id`.
    fn key_version_state(&self, key_id: &Ocid, key_version_id: &Ocid) -> Result<KeyVersionState>;
    /// The keys (not yet deleted) whose display name is `name`.
    fn keys_named(&self, name: &str) -> Result<Vec<Ocid>>;
    /// The current (primary) version of `key_id`: the one new DEKs are wrapped by.
    fn primary_version(&self, key_id: &Ocid) -> Result<Ocid> {
        Ok(self.key_status(key_id)?.current_key_version)
    }
    /// Where calls on `key_id` may run: those of [`Placement::Inline`] never wait on anything
    /// but the CPU. For unwrap and rewrap, the key is the one the wrapped DEK's header names
    /// ([`ciphertext::parse`]). The default, [`Placement::Blocking`], is always safe.
    fn placement(&self, key_id: &Ocid) -> Placement {
        let _ = key_id;
        Placement::Blocking
    }
    /// The same calls as futures, when this provider waits on the network and can be awaited
    /// instead of holding a thread while it waits (a client of another sealstore's KMS API).
    /// Async callers use it, whatever [`KeyProvider::placement`] says, when it is `Some`.
    fn as_async(&self) -> Option<&dyn AsyncKeyProvider> {
        None
    }
}

/// A key call in flight (see [`AsyncKeyProvider`]).
pub type KeyFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send + 'a>>;

/// The data-path calls of a [`KeyProvider`] whose calls wait on the network, as futures to
/// await on the caller's async runtime (see [`KeyProvider::as_async`]). Each means exactly
/// what the [`KeyProvider`] method of the same name does.
pub trait AsyncKeyProvider: Send + Sync {
    /// [`KeyProvider::generate_data_key`].
    fn generate_data_key<'a>(&'a self, key_id: &'a Ocid, aad: &'a [u8]) -> KeyFuture<'a, DataKey>;
    /// [`KeyProvider::unwrap_data_key`].
    fn unwrap_data_key<'a>(&'a self, wrapped: &'a [u8], aad: &'a [u8]) -> KeyFuture<'a, Dek>;
    /// [`KeyProvider::rewrap_data_key`].
    fn rewrap_data_key<'a>(&'a self, wrapped: &'a [u8], aad: &'a [u8]) -> KeyFuture<'a, (Vec<u8>, Ocid)>;
    /// [`KeyProvider::key_status`].
    fn key_status<'a>(&'a self, key_id: &'a Ocid) -> KeyFuture<'a, KeyStatus>;
}

/// Checks that `key` (and its vault) may be used at all.
pub(crate) fn check_usable(txn: &ReadTxn, key: &Key) -> Result<()> {
    let vault = txn.vault(&key.vault_id)?;
    match vault.lifecycle_state {
        VaultState::Active => {}
        VaultState::Deleted => return Err(KmsError::VaultDeleted(vault.id.to_string())),
        VaultState::PendingDeletion => {
            return Err(KmsError::denied(
                Refusal::VaultPendingDeletion,
                format!(
                    "vault {} is scheduled for deletion at {}; cancel the deletion to use its keys",
                    vault.id,
                    vault.time_of_deletion.map(|t| t.to_string()).unwrap_or_default()
                ),
            ))
        }
        VaultState::Creating => {
            return Err(KmsError::denied(
                Refusal::VaultNotReady,
                format!("vault {} is still being created", vault.id),
            ))
        }
    }
    match key.lifecycle_state {
        KeyState::Enabled => Ok(()),
        KeyState::Disabled => Err(KmsError::denied(
            Refusal::KeyDisabled,
            format!("key {} is disabled; enable it to use it", key.id),
        )),
        KeyState::PendingDeletion => Err(KmsError::denied(
            Refusal::KeyPendingDeletion,
            format!(
                "key {} is scheduled for deletion; cancel the deletion to use it",
                key.id
            ),
        )),
        KeyState::Deleted => Err(KmsError::denied(
            Refusal::KeyDeleted,
            format!("key {} has been deleted and its material destroyed", key.id),
        )),
    }
}

/// Checks that `version` may be used (it is ENABLED).
pub(crate) fn check_version_usable(version: &KeyVersion) -> Result<()> {
    match version.lifecycle_state {
        KeyVersionState::Enabled => Ok(()),
        KeyVersionState::Disabled => Err(KmsError::denied(
            Refusal::VersionDisabled,
            format!("key version {} is disabled; enable it to use it", version.id),
        )),
        other => Err(KmsError::denied(
            Refusal::VersionUnavailable,
            format!("key version {} is {other:?}", version.id),
        )),
    }
}

/// Refuses a key that cannot do envelope (AES-GCM) encryption: asymmetric keys always, and
/// keys shorter than AES-256 where `aes256_only` (data keys and the data path).
fn check_envelope_shape(key: &Key, aes256_only: bool) -> Result<()> {
    match key.key_shape.spec()? {
        KeySpec::Aes { len: 32 } => Ok(()),
        KeySpec::Aes { .. } if !aes256_only => Ok(()),
        spec @ KeySpec::Aes { .. } => Err(KmsError::InvalidParameter(format!(
            "key {} is {spec}: data encryption keys and sealstore's data path need an AES-256 master key",
            key.id
        ))),
        spec => Err(KmsError::InvalidParameter(format!(
            "key {} is an {spec} key: it signs{} but does not wrap data; use an AES-256 key",
            key.id,
            if matches!(spec, KeySpec::Rsa { .. }) {
                " and encrypts with encryptionAlgorithm RSA_OAEP_SHA_1 or RSA_OAEP_SHA_256"
            } else {
                ""
            }
        ))),
    }
}

/// The stored material of `version`, unless it has been destroyed.
pub(crate) fn material_of(txn: &ReadTxn, version: &Ocid) -> Result<Vec<u8>> {
    txn.key_material(version)?.ok_or_else(|| {
        KmsError::denied(
            Refusal::MaterialDestroyed,
            format!("key version {version} has been destroyed"),
        )
    })
}

/// Envelope encryption over a [`Context`]: every crypto call, audited through the group-commit writer.
pub(crate) struct Envelope<'a> {
    ctx: &'a Context,
}

impl<'a> Envelope<'a> {
    pub(crate) fn new(ctx: &'a Context) -> Self {
        Envelope { ctx }
    }

    /// Where crypto calls on `key_id` may run: inline when its protection backend only uses
    /// the CPU and the audit entry only joins the background writer's queue; on a thread
    /// that may block otherwise (HSM, EXTERNAL, or an audit entry written by the caller). A
    /// key that does not exist fails at once, wherever it runs.
    pub(crate) fn placement(&self, key_id: &Ocid) -> Placement {
        if !self.ctx.audit_writer_running() {
            return Placement::Blocking;
        }
        match self.ctx.key_protection_mode(key_id) {
            Ok(Some(mode)) => self
                .ctx
                .protection(mode)
                .map_or(Placement::Inline, |backend| backend.placement()),
            Ok(None) => Placement::Inline,
            Err(_) => Placement::Blocking,
        }
    }

    /// Runs a crypto operation and audits it. Crypto audit entries are written in groups and
    /// flushed in batches (see [`Kms::queue_audit`](crate::Kms::queue_audit) and [`crate::store`]): a transaction or an
    /// fsync per crypto call would bound the data path to the store's write rate.
    pub(crate) fn crypto_op<T>(
        &self,
        principal: &Principal,
        op: &'static str,
        mut subject: AuditSubject,
        f: impl FnOnce(&mut AuditSubject) -> Result<T>,
    ) -> Result<T> {
        let time = self.ctx.now();
        let result = f(&mut subject);
        let outcome = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
        self.ctx.queue_audit(PendingAudit {
            time,
            principal: principal.clone(),
            operation: op.into(),
            subject,
            outcome,
            refused: None,
        })?;
        result
    }

    /// Encrypts under the key's primary version. `key_version_id`, when given, must name the
    /// primary: old versions decrypt only. `aes256_only` refuses AES-128 and AES-192 keys
    /// (data keys); asymmetric keys are always refused.
    #[allow(clippy::too_many_arguments)]
    fn encrypt_raw(
        &self,
        key_id: &Ocid,
        key_version_id: Option<&Ocid>,
        any_enabled_version: bool,
        aes256_only: bool,
        plaintext: &[u8],
        aad: &[u8],
        subject: &mut AuditSubject,
    ) -> Result<Encrypted> {
        let txn = self.ctx.read()?;
        let key = txn.key(key_id)?;
        subject.vault_id = Some(key.vault_id.clone());
        subject.key_version_id = Some(key.current_key_version.clone());
        check_usable(&txn, &key)?;
        check_envelope_shape(&key, aes256_only)?;
        let mut version = &key.current_key_version;
        if let Some(v) = key_version_id {
            if *v != key.current_key_version {
                let older = txn.key_version(key_id, v)?;
                if !any_enabled_version {
                    return Err(KmsError::denied(
                        Refusal::VersionNotPrimary,
                        format!(
                            "key version {v} is not the primary version of key {key_id}; older versions can only decrypt"
                        ),
                    ));
                }
                check_version_usable(&older)?;
                subject.key_version_id = Some(v.clone());
                version = v;
            }
        }
        let material = material_of(&txn, version)?;
        let header = ciphertext::encode_header(key_id, version);
        let payload = self.ctx.protection(key.protection_mode)?.encrypt(
            version,
            &material,
            &ciphertext::backend_aad(&header, aad),
            plaintext,
        )?;
        Ok(Encrypted {
            ciphertext: [header, payload].concat(),
            key_id: key_id.clone(),
            key_version_id: version.clone(),
        })
    }

    /// Decrypts a self-describing ciphertext. When `expected_key` is given the ciphertext
    /// must belong to that key.
    fn decrypt_raw(
        &self,
        bytes: &[u8],
        aad: &[u8],
        expected_key: Option<&Ocid>,
        subject: &mut AuditSubject,
    ) -> Result<Decrypted> {
        let ct = ciphertext::parse(bytes)?;
        subject.key_id = Some(ct.key_id.clone());
        subject.key_version_id = Some(ct.key_version_id.clone());
        if let Some(expected) = expected_key {
            if *expected != ct.key_id {
                return Err(KmsError::InvalidCiphertext(format!(
                    "ciphertext was made by key {}, not {expected}",
                    ct.key_id
                )));
            }
        }
        let txn = self.ctx.read()?;
        let key = txn.key(&ct.key_id).map_err(|_| {
            KmsError::InvalidCiphertext(format!("ciphertext names key {}, which does not exist here", ct.key_id))
        })?;
        subject.vault_id = Some(key.vault_id.clone());
        check_usable(&txn, &key)?;
        check_envelope_shape(&key, false)?;
        let version = txn.key_version(&ct.key_id, &ct.key_version_id).map_err(|_| {
            KmsError::InvalidCiphertext(format!(
                "ciphertext names key version {}, which key {} does not have",
                ct.key_version_id, ct.key_id
            ))
        })?;
        check_version_usable(&version)?;
        let material = material_of(&txn, &version.id)?;
        let plaintext = self.ctx.protection(key.protection_mode)?.decrypt(
            &version.id,
            &material,
            &ciphertext::backend_aad(ct.header, aad),
            ct.payload,
        )?;
        Ok(Decrypted {
            plaintext,
            key_id: ct.key_id,
            key_version_id: ct.key_version_id,
        })
    }

    /// Encrypts at most [`MAX_PLAINTEXT`] bytes under `key_id`'s primary version.
    pub(crate) fn encrypt(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        plaintext: &[u8],
        aad: &AssociatedData,
    ) -> Result<Encrypted> {
        self.encrypt_with_version(principal, key_id, None, plaintext, aad)
    }

    /// As [`Kms::encrypt`](crate::Kms::encrypt), naming the version explicitly (it must be the primary).
    pub(crate) fn encrypt_with_version(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        key_version_id: Option<&Ocid>,
        plaintext: &[u8],
        aad: &AssociatedData,
    ) -> Result<Encrypted> {
        self.encrypt_audited(principal, key_id, key_version_id, false, plaintext, aad)
    }

    /// Encrypts under `key_version_id`, which may be any ENABLED version of the key, not only
    /// the primary: for key managers whose callers choose the version (sealstore's reference
    /// external key manager, which EXTERNAL keys elsewhere reference version by version).
    pub(crate) fn encrypt_under_version(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        key_version_id: &Ocid,
        plaintext: &[u8],
        aad: &AssociatedData,
    ) -> Result<Encrypted> {
        self.encrypt_audited(principal, key_id, Some(key_version_id), true, plaintext, aad)
    }

    /// The encrypt call both of the above are: size check, then [`Kms::encrypt_raw`](crate::Kms::encrypt_raw), audited.
    fn encrypt_audited(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        key_version_id: Option<&Ocid>,
        any_enabled_version: bool,
        plaintext: &[u8],
        aad: &AssociatedData,
    ) -> Result<Encrypted> {
        let subject = AuditSubject {
            key_id: Some(key_id.clone()),
            ..Default::default()
        };
        self.crypto_op(principal, "Encrypt", subject, |subject| {
            if plaintext.len() > MAX_PLAINTEXT {
                return Err(KmsError::InvalidParameter(format!(
                    "plaintext is {} bytes; encrypt takes at most {MAX_PLAINTEXT} (use a data encryption key for more)",
                    plaintext.len()
                )));
            }
            self.encrypt_raw(
                key_id,
                key_version_id,
                any_enabled_version,
                false,
                plaintext,
                &aad.canonical_bytes(),
                subject,
            )
        })
    }

    /// Decrypts a ciphertext made by [`Kms::encrypt`](crate::Kms::encrypt) or [`Kms::generate_data_key`](crate::Kms::generate_data_key).
    pub(crate) fn decrypt(
        &self,
        principal: &Principal,
        ciphertext: &[u8],
        aad: &AssociatedData,
        expected_key: Option<&Ocid>,
    ) -> Result<Decrypted> {
        self.crypto_op(principal, "Decrypt", AuditSubject::default(), |subject| {
            self.decrypt_raw(ciphertext, &aad.canonical_bytes(), expected_key, subject)
        })
    }

    /// Generates a 256-bit DEK wrapped by `key_id`'s primary version; the plaintext copy is
    /// returned only when `include_plaintext`.
    pub(crate) fn generate_data_key(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        aad: &AssociatedData,
        include_plaintext: bool,
    ) -> Result<DataKey> {
        self.generate_data_key_raw(principal, key_id, &aad.canonical_bytes(), include_plaintext)
    }

    fn generate_data_key_raw(
        &self,
        principal: &Principal,
        key_id: &Ocid,
        aad: &[u8],
        include_plaintext: bool,
    ) -> Result<DataKey> {
        let subject = AuditSubject {
            key_id: Some(key_id.clone()),
            ..Default::default()
        };
        self.crypto_op(principal, "GenerateDataEncryptionKey", subject, |subject| {
            let dek = Dek::generate()?;
            let enc = self.encrypt_raw(key_id, None, false, true, dek.expose(), aad, subject)?;
            Ok(DataKey {
                plaintext: include_plaintext.then_some(dek),
                wrapped: enc.ciphertext,
                key_id: enc.key_id,
                key_version_id: enc.key_version_id,
            })
        })
    }

    /// Re-encrypts a ciphertext under the current primary version of its key (or of
    /// `target_key` when given). The plaintext never leaves kms-core.
    pub(crate) fn rewrap(
        &self,
        principal: &Principal,
        ciphertext: &[u8],
        aad: &AssociatedData,
        target_key: Option<&Ocid>,
    ) -> Result<Encrypted> {
        let aad = aad.canonical_bytes();
        self.crypto_op(principal, "Rewrap", AuditSubject::default(), |subject| {
            self.rewrap_raw(ciphertext, &aad, target_key, subject)
        })
    }

    /// Decrypt-then-encrypt inside the KMS; the audit subject ends up naming the new version.
    fn rewrap_raw(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
        target_key: Option<&Ocid>,
        subject: &mut AuditSubject,
    ) -> Result<Encrypted> {
        let plain = self.decrypt_raw(ciphertext, aad, None, subject)?;
        let target = target_key.cloned().unwrap_or(plain.key_id);
        let mut target_subject = AuditSubject {
            key_id: Some(target.clone()),
            ..Default::default()
        };
        let out = self.encrypt_raw(&target, None, false, false, &plain.plaintext, aad, &mut target_subject)?;
        *subject = target_subject;
        Ok(out)
    }
}

/// The data path's calls ([`KeyProvider`], implemented by [`crate::Kms`] over these).
impl Envelope<'_> {
    pub(crate) fn data_path_key(&self, key_id: &Ocid, aad: &[u8]) -> Result<DataKey> {
        self.generate_data_key_raw(&Principal::data_path(), key_id, aad, true)
    }

    pub(crate) fn rewrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<(Vec<u8>, Ocid)> {
        self.crypto_op(
            &Principal::data_path(),
            "RewrapDataEncryptionKey",
            AuditSubject::default(),
            |subject| {
                self.rewrap_raw(wrapped, aad, None, subject)
                    .map(|out| (out.ciphertext, out.key_version_id))
            },
        )
    }

    pub(crate) fn key_status(&self, key_id: &Ocid) -> Result<KeyStatus> {
        let txn = self.ctx.read()?;
        let key = txn.key(key_id)?;
        let unusable = match check_usable(&txn, &key) {
            Ok(()) => None,
            Err(e @ KmsError::AccessDenied(_)) => Some(Denial {
                reason: e.refusal().expect("an access denial"),
                message: e.to_string(),
            }),
            Err(e @ KmsError::VaultDeleted(_)) => Some(Denial {
                reason: Refusal::VaultDeleted,
                message: e.to_string(),
            }),
            Err(e) => return Err(e),
        };
        Ok(KeyStatus {
            key_id: key.id,
            display_name: key.display_name,
            state: key.lifecycle_state,
            current_key_version: key.current_key_version,
            unusable,
        })
    }

    pub(crate) fn key_version_state(&self, key_id: &Ocid, key_version_id: &Ocid) -> Result<KeyVersionState> {
        Ok(self.ctx.read()?.key_version(key_id, key_version_id)?.lifecycle_state)
    }

    pub(crate) fn keys_named(&self, name: &str) -> Result<Vec<Ocid>> {
        Ok(self
            .ctx
            .read()?
            .keys()?
            .into_iter()
            .filter(|k| k.display_name == name && k.lifecycle_state != KeyState::Deleted)
            .map(|k| k.id)
            .collect())
    }

    pub(crate) fn unwrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<Dek> {
        self.crypto_op(
            &Principal::data_path(),
            "UnwrapDataEncryptionKey",
            AuditSubject::default(),
            |subject| Dek::from_slice(&self.decrypt_raw(wrapped, aad, None, subject)?.plaintext),
        )
    }
}
