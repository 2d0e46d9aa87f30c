//! Key and vault backups and restores (`…/actions/backup`, `…/actions/restoreFromFile`,
//! `…/actions/restoreFromObjectStore`; format: `docs/KMS_BACKUP.md`).
//!
//! The service writes the backup itself, as OCI's does: to a pre-authenticated request URI
//! (any URL that takes an HTTP `PUT`, e.g. a presigned S3 URL of sealstore's own S3 face),
//! or to a bucket of sealstore's own object store (`BUCKET`; the `namespace` the CLI
//! requires is accepted and ignored: sealstore has one object namespace). Permission: the
//! caller's `manage keys` / `manage vaults`, not the S3 user's — the object is written
//! in-process.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, Method};
use kms_core::iam::{ResourceKind, Target, Verb};
use kms_core::{BackupKind, KmsError, Ocid};
use serde::Deserialize;

use super::error::ApiError;
use super::vaults::compartment_id;
use super::{keys, vaults, wire, Call, Reply};
use crate::http_client::{error_chain, BlockingClient, Timeouts};

/// Largest backup a restore reads (a vault with many RSA-4096 keys and versions).
pub(crate) const MAX_BACKUP: usize = 16 * 1024 * 1024;

/// Whether a request is a restore, whose body is a backup file (larger than other bodies).
pub(crate) fn is_restore(method: &Method, path: &str) -> bool {
    method == Method::POST && path.ends_with("/actions/restoreFromFile")
}

/// Buckets of sealstore's own object store, for `BUCKET` backup locations.
pub(crate) trait BackupBuckets: Send + Sync + std::fmt::Debug {
    /// Stores `bytes` as `object` in `bucket` (replacing any object of that name).
    fn put(&self, bucket: &str, object: &str, bytes: Vec<u8>) -> Result<(), String>;
    /// Reads `object` of `bucket`.
    fn get(&self, bucket: &str, object: &str) -> Result<Vec<u8>, String>;
}

/// Where backups can go: a bucket store when the server has one, and an HTTP client for
/// pre-authenticated request URIs (made on first use).
#[derive(Debug, Default)]
pub(crate) struct BackupTargets {
    buckets: Option<Arc<dyn BackupBuckets>>,
    http: OnceLock<BlockingClient>,
}

impl BackupTargets {
    /// Targets with `buckets` for `BUCKET` locations.
    pub(crate) fn with_buckets(buckets: Arc<dyn BackupBuckets>) -> Self {
        BackupTargets {
            buckets: Some(buckets),
            http: OnceLock::new(),
        }
    }

    fn http(&self) -> Result<&BlockingClient, KmsError> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(30),
            total: Duration::from_secs(120),
        };
        let client = BlockingClient::new(None, timeouts, "kms-backup")
            .map_err(|e| KmsError::Unavailable(format!("backup HTTP client: {e}")))?;
        Ok(self.http.get_or_init(|| client))
    }

    fn buckets(&self) -> Result<&Arc<dyn BackupBuckets>, KmsError> {
        self.buckets.as_ref().ok_or_else(|| {
            KmsError::InvalidParameter(
                "BUCKET backup locations need the object store of `sealstore serve`; use a pre-authenticated request URI (--uri)".into(),
            )
        })
    }

    fn put(&self, location: &Location, bytes: &[u8]) -> Result<(), KmsError> {
        match location {
            Location::Uri(uri) => {
                let answer = self
                    .http()?
                    .send(Method::PUT, uri, HeaderMap::new(), Some(bytes.to_vec()))
                    .map_err(|e| unreachable_location(uri, &e))?;
                if answer.status.is_success() {
                    Ok(())
                } else {
                    Err(KmsError::InvalidParameter(format!(
                        "the backup location refused the backup: PUT answered {}{}",
                        answer.status,
                        snippet(&answer.body)
                    )))
                }
            }
            Location::Bucket { bucket, object } => self
                .buckets()?
                .put(bucket, object, bytes.to_vec())
                .map_err(|e| KmsError::InvalidParameter(format!("storing the backup as {bucket}/{object}: {e}"))),
        }
    }

    fn get(&self, location: &Location) -> Result<Vec<u8>, KmsError> {
        match location {
            Location::Uri(uri) => {
                let answer = self
                    .http()?
                    .send(Method::GET, uri, HeaderMap::new(), None)
                    .map_err(|e| unreachable_location(uri, &e))?;
                if !answer.status.is_success() {
                    return Err(KmsError::InvalidParameter(format!(
                        "reading the backup: GET answered {}{}",
                        answer.status,
                        snippet(&answer.body)
                    )));
                }
                if answer.body.len() > MAX_BACKUP {
                    return Err(KmsError::InvalidParameter(format!(
                        "the object is larger than {MAX_BACKUP} bytes: not a sealstore KMS backup"
                    )));
                }
                Ok(answer.body.to_vec())
            }
            Location::Bucket { bucket, object } => self
                .buckets()?
                .get(bucket, object)
                .map_err(|e| KmsError::InvalidParameter(format!("reading the backup {bucket}/{object}: {e}"))),
        }
    }
}

fn unreachable_location(uri: &str, e: &reqwest::Error) -> KmsError {
    // The URI itself may carry a credential (a presigned signature): name its host only.
    let host = reqwest::Url::parse(uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    KmsError::Unavailable(format!("backup location {host}: {}", error_chain(e)))
}

/// The start of an error answer, for a message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_owned();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// OCI's `backupLocation`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BackupLocation {
    destination: Option<String>,
    uri: Option<String>,
    #[allow(dead_code)] // Accepted and ignored: one object namespace.
    namespace: Option<String>,
    bucket_name: Option<String>,
    object_name: Option<String>,
}

enum Location {
    Uri(String),
    Bucket { bucket: String, object: String },
}

impl BackupLocation {
    fn parse(self) -> Result<Location, ApiError> {
        match self.destination.as_deref() {
            Some("PRE_AUTHENTICATED_REQUEST_URI") => {
                let uri = self.uri.ok_or_else(|| ApiError::missing("backupLocation.uri"))?;
                if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                    return Err(ApiError::invalid(
                        "backupLocation.uri must be an http:// or https:// URL",
                    ));
                }
                Ok(Location::Uri(uri))
            }
            Some("BUCKET") => Ok(Location::Bucket {
                bucket: self
                    .bucket_name
                    .ok_or_else(|| ApiError::missing("backupLocation.bucketName"))?,
                object: self
                    .object_name
                    .ok_or_else(|| ApiError::missing("backupLocation.objectName"))?,
            }),
            Some(other) => Err(ApiError::invalid(format!(
                "backupLocation.destination must be BUCKET or PRE_AUTHENTICATED_REQUEST_URI, not '{other}'"
            ))),
            None => Err(ApiError::missing("backupLocation.destination")),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BackupDetails {
    backup_location: Option<BackupLocation>,
    #[serde(default)]
    is_include_keys: bool,
}

impl BackupDetails {
    fn location(self) -> Result<Location, ApiError> {
        self.backup_location
            .ok_or_else(|| ApiError::missing("backupLocation"))?
            .parse()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestoreDetails {
    backup_location: Option<BackupLocation>,
}

/// `POST …/20180608/keys/{id}/actions/backup`: `manage keys`.
pub(crate) fn backup_key(call: &Call<'_>, vault: &Ocid, id: &str) -> Result<Reply, ApiError> {
    let key = keys::authorized(call, vault, id, Verb::Manage)?;
    let location = call.json::<BackupDetails>()?.location()?;
    let key = call
        .kms
        .backup_key(&call.principal, &key.id, |bytes| call.backups.put(&location, bytes))?;
    Ok(Reply::resource(wire::key(&key)))
}

/// `POST /20180608/vaults/{id}/actions/backup`: `manage vaults` (and, with
/// `isIncludeKeys`, `manage keys` in the vault's compartment).
pub(crate) fn backup_vault(call: &Call<'_>, id: &str) -> Result<Reply, ApiError> {
    let vault = vaults::authorized(call, id, Verb::Manage)?;
    let details: BackupDetails = call.json()?;
    let include_keys = details.is_include_keys;
    if include_keys {
        call.require(
            Verb::Manage,
            ResourceKind::Keys,
            &vault.compartment_id,
            Target {
                vault_id: Some(vault.id.as_str()),
                key_id: None,
            },
            format_args!("vault {id}"),
        )?;
    }
    let location = details.location()?;
    let vault = call
        .kms
        .backup_vault(&call.principal, &vault.id, include_keys, |bytes| {
            call.backups.put(&location, bytes)
        })?;
    Ok(Reply::resource(wire::vault(call.base_url, &vault)))
}

/// `POST …/20180608/keys/actions/restoreFromFile` (body: the backup) or
/// `…/restoreFromObjectStore` on `vault`'s management endpoint: `manage keys` where the key
/// goes (its own compartment when it exists, else the vault's).
pub(crate) fn restore_key(call: &Call<'_>, vault: &Ocid, from_object_store: bool) -> Result<Reply, ApiError> {
    let target = vaults::authorized(call, vault.as_str(), Verb::Read)?;
    let backup = backup_of(call, from_object_store)?;
    let summary = call
        .kms
        .backup_summary(&backup, BackupKind::Key, &target.compartment_id);
    // A refused backup is refused (and audited) by the restore itself.
    if let Ok(summary) = &summary {
        require_keys(call, vault, &summary.key_compartments)?;
    } else {
        call.require(
            Verb::Manage,
            ResourceKind::Keys,
            &target.compartment_id,
            Target {
                vault_id: Some(vault.as_str()),
                key_id: None,
            },
            format_args!("vault {vault}"),
        )?;
    }
    let key = call.kms.restore_key(&call.principal, vault, &backup)?;
    Ok(Reply::resource(wire::key(&key)))
}

/// `POST /20180608/vaults/actions/restoreFromFile?compartmentId=T` (body: the backup) or
/// `…/restoreFromObjectStore?compartmentId=T`: `manage vaults` in T, and `manage keys`
/// where its keys go.
pub(crate) fn restore_vault(call: &Call<'_>, from_object_store: bool) -> Result<Reply, ApiError> {
    let compartment = compartment_id(call.required("compartmentId")?)?;
    let anywhere = Target {
        vault_id: None,
        key_id: None,
    };
    call.require(
        Verb::Manage,
        ResourceKind::Vaults,
        &compartment,
        anywhere,
        format_args!("compartment {compartment}"),
    )?;
    let backup = backup_of(call, from_object_store)?;
    if let Ok(summary) = call.kms.backup_summary(&backup, BackupKind::Vault, &compartment) {
        let vault = Ocid::parse(kms_core::ResourceType::Vault, &summary.resource_id)
            .map_err(|_| ApiError::invalid("the backup names no vault"))?;
        require_keys(call, &vault, &summary.key_compartments)?;
    }
    let vault = call.kms.restore_vault(&call.principal, &compartment, &backup)?;
    Ok(Reply::resource(wire::vault(call.base_url, &vault)))
}

fn require_keys(call: &Call<'_>, vault: &Ocid, compartments: &[Ocid]) -> Result<(), ApiError> {
    for c in compartments {
        call.require(
            Verb::Manage,
            ResourceKind::Keys,
            c,
            Target {
                vault_id: Some(vault.as_str()),
                key_id: None,
            },
            format_args!("compartment {c}"),
        )?;
    }
    Ok(())
}

/// The backup a restore names: the request body (`restoreFromFile`), or the object its
/// `backupLocation` names.
fn backup_of(call: &Call<'_>, from_object_store: bool) -> Result<Vec<u8>, ApiError> {
    if !from_object_store {
        if call.body.is_empty() {
            return Err(ApiError::invalid("the request body must be the backup file"));
        }
        return Ok(call.body.to_vec());
    }
    let location = call
        .json::<RestoreDetails>()?
        .backup_location
        .ok_or_else(|| ApiError::missing("backupLocation"))?
        .parse()?;
    Ok(call.backups.get(&location)?)
}
