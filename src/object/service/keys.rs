//! Master keys: which one a write uses, whether one can be used now, and what each key
//! version still protects (the inventory).

use kms_core::{KmsError, Ocid};

use crate::key_service::KeyServiceError;

use super::{ObjectService, Resolved, Result};
use crate::object::encryption::{BucketEncryption, EncryptionRequest};
use crate::object::error::ObjectError;
use crate::object::store::Sealing;

/// One line of the key-version inventory: what a master key version still protects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryRow {
    /// The key owning the version (absent when the version is unknown to key management).
    pub key_id: Option<Ocid>,
    /// The key version.
    pub key_version_id: Ocid,
    /// Whether it is its key's current version.
    pub current: bool,
    /// Objects it protects.
    pub objects: u64,
    /// Their plaintext bytes.
    pub bytes: u64,
}

impl ObjectService {
    /// The master key behind `id`: a key OCID, or `alias/NAME` for the key whose display
    /// name is NAME. Whether it exists and can be used is decided once, where it is used
    /// (when a write resolves its key, or a bucket's default encryption is set).
    pub(crate) fn resolve_kms_key(&self, id: &str) -> Result<Ocid> {
        let key_id = match id.strip_prefix("alias/") {
            Some(name) => {
                let mut keys = self.keys.keys_named(name)?.into_iter();
                match (keys.next(), keys.next()) {
                    (Some(k), None) => k,
                    (Some(_), Some(_)) => {
                        return Err(ObjectError::KmsKeyNotFound(format!(
                            "{id} (several keys have that name; use the key's OCID)"
                        )))
                    }
                    (None, _) => return Err(ObjectError::KmsKeyNotFound(id.to_owned())),
                }
            }
            None => {
                Ocid::parse(kms_core::ResourceType::Key, id).map_err(|_| ObjectError::KmsKeyNotFound(id.to_owned()))?
            }
        };
        Ok(key_id)
    }

    /// Fails unless `key_id` exists and can be used now, saying why.
    pub(super) async fn check_kms_key(&self, key_id: &Ocid) -> Result<()> {
        match self.key_service.key_status(key_id).await {
            Ok(status) => match status.unusable {
                None => Ok(()),
                Some(denial) => Err(ObjectError::KmsKeyUnusable(denial)),
            },
            Err(KeyServiceError::Key(KmsError::NotFound { .. })) => {
                Err(ObjectError::KmsKeyNotFound(key_id.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Fails with [`ObjectError::KeyAccessDenied`] unless the object's master key and key
    /// version can decrypt now.
    pub(super) async fn check_key_for_read(&self, key_id: &Ocid, key_version_id: &Ocid) -> Result<()> {
        self.check_kms_key(key_id).await.map_err(|e| match e {
            ObjectError::KmsKeyUnusable(denial) => ObjectError::KeyAccessDenied(denial.message),
            ObjectError::KmsKeyNotFound(k) => ObjectError::KeyAccessDenied(format!("master key {k} does not exist")),
            other => other,
        })?;
        match self.key_service.key_version_state(key_id, key_version_id).await {
            Ok(kms_core::KeyVersionState::Enabled) => Ok(()),
            Ok(state) => Err(ObjectError::KeyAccessDenied(format!(
                "key version {key_version_id} is {state:?}; enable it to read data it protects"
            ))),
            Err(KeyServiceError::Key(KmsError::NotFound { .. })) => Err(ObjectError::KeyAccessDenied(format!(
                "key version {key_version_id} does not exist"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Which key a write to `bucket` uses for `request`.
    pub(super) async fn resolve(&self, bucket: &str, request: &EncryptionRequest) -> Result<Resolved> {
        let (key_id, sse_kms) = match request {
            EncryptionRequest::BucketDefault => match self.index.bucket_encryption(bucket)? {
                BucketEncryption::ServiceKey => (None, false),
                BucketEncryption::Kms { key_id } => (key_id, true),
            },
            EncryptionRequest::ServiceKey => (None, false),
            EncryptionRequest::Kms(Some(key_id)) => (Some(key_id.clone()), true),
            EncryptionRequest::Kms(None) => match self.index.bucket_encryption(bucket)? {
                BucketEncryption::Kms { key_id } => (key_id, true),
                BucketEncryption::ServiceKey => (None, true),
            },
            EncryptionRequest::Customer(key) => {
                return Ok(Resolved {
                    sealing: Sealing::Customer(key.clone()),
                    sse_kms: false,
                })
            }
        };
        let key_id = key_id.unwrap_or_else(|| self.key_id.clone());
        self.check_kms_key(&key_id).await?;
        Ok(Resolved {
            sealing: Sealing::Kms(key_id),
            sse_kms,
        })
    }

    /// Objects and bytes per master key version, with each version's key and whether it is
    /// the current one (old versions are what `reencrypt` moves objects off).
    pub fn inventory(&self) -> Result<Vec<InventoryRow>> {
        let mut current = std::collections::HashMap::new();
        let mut rows = Vec::new();
        for (version, line) in self.index.inventory()? {
            if !current.contains_key(&line.key_id) {
                let status = match self.keys.key_status(&line.key_id) {
                    Ok(status) => Some(status.current_key_version),
                    Err(KmsError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                };
                current.insert(line.key_id.clone(), status);
            }
            let key_current = &current[&line.key_id];
            rows.push(InventoryRow {
                current: key_current.as_ref() == Some(&version),
                key_id: key_current.as_ref().map(|_| line.key_id),
                key_version_id: version,
                objects: line.objects,
                bytes: line.bytes,
            });
        }
        Ok(rows)
    }
}
