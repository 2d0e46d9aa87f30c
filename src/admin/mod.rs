//! The local admin protocol: `sealstore kms …`, `sealstore iam …` and `sealstore s3 user …`
//! as serializable [`Request`]s, executed against the data directory's [`AdminTarget`] by
//! [`execute`] as the local administrator.
//!
//! Vault, key and crypto commands are one request, [`Request::Api`]: a call of the KMS API,
//! answered by the API's own handler ([`crate::kms_api::answer_local_with`]). The other requests
//! are operations the API does not have (IAM administration, S3 users, regions, the audit
//! chain's verification, sweeps of a running server).
//!
//! The embedded store is single-process, so while `sealstore serve` runs the CLI sends its
//! request over a Unix socket in the data directory ([`server`], [`client`]); when no server
//! runs, the CLI opens the store itself and calls [`execute`] directly. Either way the same
//! code runs and the user sees the same output.
//!
//! Wire format: one JSON [`Request`] per line; one JSON [`Response`] per line back.

pub(crate) mod client;
pub(crate) mod server;

use kms_core::{Kms, KmsError, Ocid, Principal, ResourceType};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::s3::credentials::{UserError, UserStore};

/// What admin requests act on: key management, the S3 users, and (in a running server) the
/// object service.
#[derive(Debug, Clone)]
pub(crate) struct AdminTarget {
    /// Key management.
    pub kms: std::sync::Arc<Kms>,
    /// S3 users.
    pub users: std::sync::Arc<UserStore>,
    /// Buckets of objects; only a running server serves object requests this way (without
    /// one, the CLI opens the data directory itself).
    pub objects: Option<std::sync::Arc<crate::object::ObjectService>>,
    /// Volumes served over NBD by a running server (empty otherwise).
    pub volumes: std::sync::Arc<Vec<crate::block::nbd::Export>>,
    /// `http[s]://host:port` of the running server's KMS API, for vault endpoints in answers
    /// ([`DEFAULT_API_BASE`] when none).
    pub api_base: Option<String>,
    /// Where served volumes get their data keys (a running server's; `None` otherwise).
    pub volume_keys: Option<std::sync::Arc<dyn kms_core::KeyProvider>>,
}

/// The admin socket's file name in the data directory.
pub(crate) const SOCKET_FILE: &str = "admin.sock";

/// Where the KMS API's vault endpoints are said to be when no server runs: its default
/// listen address.
pub(crate) const DEFAULT_API_BASE: &str = "http://127.0.0.1:9100";

/// A call of the KMS API made through the admin socket: what an HTTP client would send,
/// without the signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ApiCall {
    /// `GET`, `POST`, `PUT`.
    pub method: String,
    /// Path and query, e.g. `/20180608/keys/{id}/keyVersions?limit=100`.
    pub target: String,
    /// The JSON body (`null`: none).
    #[serde(default)]
    pub body: Value,
}

/// One CLI command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(crate) enum Request {
    /// A call of the KMS API (vaults, keys, key versions, crypto): answered by the API's own
    /// handler as the local administrator ([`crate::kms_api::answer_local_with`]).
    Api(ApiCall),
    /// This region's replication identity: its name and public keys.
    RegionIdentity,
    /// Register (or update) a peer region.
    RegionAdd {
        /// Its name.
        name: String,
        /// Its KMS API.
        endpoint: String,
        /// Its signing public key (SPKI DER, base64).
        signing_key: String,
        /// Its wrapping public key (SPKI DER, base64).
        wrapping_key: String,
    },
    /// Registered peer regions.
    RegionList,
    /// Forget a peer region.
    RegionRemove {
        /// Its name.
        name: String,
    },
    /// Make this region a member of the tenancy whose home region is `home`.
    RegionJoinTenancy {
        /// The home region (registered here, and this region there).
        home: String,
        /// A CA certificate (PEM) to trust for the home region over https.
        #[serde(default)]
        replication_ca_cert: Option<std::path::PathBuf>,
    },
    /// This region's tenancy: its id, home region and (on the home) members.
    RegionTenancy,
    /// Key-age compliance report.
    Compliance {
        /// Oldest allowed primary version.
        max_age_days: i64,
    },
    /// Verify the audit chain.
    AuditVerify,
    /// Page through the audit log.
    AuditList {
        /// First sequence number.
        from: u64,
        /// Page size.
        limit: usize,
    },
    /// Run one scheduler pass now.
    SchedulerRun,
    /// Tenancy, region and default vault/key (created if missing).
    Status,
    /// Tenancy and region only.
    Tenancy,
    /// Create an S3 user with a fresh key pair.
    S3UserAdd {
        /// User name.
        name: String,
    },
    /// List S3 users (without secrets).
    S3UserList,
    /// Remove an S3 user.
    S3UserRemove {
        /// Name or access key id.
        user: String,
        /// Remove even the last user.
        force: bool,
    },
    /// Create an API user of the KMS API.
    IamUserAdd(kms_core::iam::CreateUser),
    /// Add an API signing key to a user.
    IamUserAddKey {
        /// User name.
        name: String,
        /// PEM public key.
        public_key_pem: String,
    },
    /// Set (or remove) a user's console password.
    IamUserSetPassword {
        /// User name.
        name: String,
        /// Argon2id PHC hash; `None` removes the password.
        phc: Option<String>,
    },
    /// List API users.
    IamUserList,
    /// Delete an API user.
    IamUserRemove {
        /// User name.
        name: String,
    },
    /// Create a group.
    IamGroupCreate {
        /// Group name.
        name: String,
        /// Free text.
        description: String,
    },
    /// Add a user to a group.
    IamGroupAddUser {
        /// Group name.
        group: String,
        /// User name.
        user: String,
    },
    /// List groups.
    IamGroupList,
    /// Delete a group.
    IamGroupDelete {
        /// Group name.
        name: String,
    },
    /// Create a policy.
    IamPolicyCreate {
        /// Policy name.
        name: String,
        /// Free text.
        description: String,
        /// Statements.
        statements: Vec<String>,
    },
    /// List policies.
    IamPolicyList,
    /// Delete a policy.
    IamPolicyDelete {
        /// Policy name.
        name: String,
    },
    /// Create a compartment.
    IamCompartmentCreate {
        /// Name.
        name: String,
        /// Free text.
        description: String,
        /// Parent compartment (name or id; the tenancy when absent).
        parent: Option<String>,
    },
    /// List compartments.
    IamCompartmentList,
    /// Run (or resume) a re-encryption sweep of a bucket in the server.
    Reencrypt {
        /// Bucket.
        bucket: String,
        /// Only objects under this master key.
        key_id: Option<Ocid>,
        /// New data keys (rather than re-wrapping the existing ones).
        full: bool,
    },
    /// Objects and bytes per master key version.
    ObjectInventory,
    /// Rotate a served volume: a new data-key generation under its master key's current
    /// version.
    VolumeRotate {
        /// Volume name.
        name: String,
    },
    /// Re-encrypt a served volume's remaining extents and drop unused generations.
    VolumeReencrypt {
        /// Volume name.
        name: String,
        /// Rate limit in MiB per second (0: none).
        max_mib_per_sec: u64,
    },
}

impl Request {
    fn is_iam(&self) -> bool {
        matches!(
            self,
            Request::IamUserAdd(_)
                | Request::IamUserAddKey { .. }
                | Request::IamUserSetPassword { .. }
                | Request::IamUserList
                | Request::IamUserRemove { .. }
                | Request::IamGroupCreate { .. }
                | Request::IamGroupAddUser { .. }
                | Request::IamGroupList
                | Request::IamGroupDelete { .. }
                | Request::IamPolicyCreate { .. }
                | Request::IamPolicyList
                | Request::IamPolicyDelete { .. }
                | Request::IamCompartmentCreate { .. }
                | Request::IamCompartmentList
        )
    }
}

/// An error as it crosses the admin socket.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub(crate) struct AdminError {
    /// OCI-style error code (`NotAuthorizedOrNotFound`, `InvalidParameter`, …).
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

impl From<KmsError> for AdminError {
    fn from(e: KmsError) -> Self {
        let code = match &e {
            KmsError::NotFound { .. } => "NotAuthorizedOrNotFound",
            KmsError::InvalidParameter(_) | KmsError::InvalidCiphertext(_) => "InvalidParameter",
            KmsError::IncorrectState(_) => "IncorrectState",
            KmsError::AlreadyExists(_) => "Conflict",
            KmsError::NotHomeRegion { .. } => "NotAllowed",
            KmsError::AccessDenied(_) | KmsError::VaultDeleted(_) => "AccessDenied",
            KmsError::Unavailable(_) => "ServiceUnavailable",
            KmsError::Metadata(m) if m.is_unavailable() => "ServiceUnavailable",
            _ => "InternalServerError",
        };
        AdminError {
            code: code.into(),
            message: e.to_string(),
        }
    }
}

impl From<crate::kms_api::ApiError> for AdminError {
    fn from(e: crate::kms_api::ApiError) -> Self {
        AdminError {
            code: e.code.to_string(),
            message: e.message,
        }
    }
}

impl From<UserError> for AdminError {
    fn from(e: UserError) -> Self {
        let code = match &e {
            UserError::NotFound(_) => "NotAuthorizedOrNotFound",
            UserError::NameTaken(_) | UserError::LastUser(_) => "IncorrectState",
            UserError::InvalidName(_) => "InvalidParameter",
            UserError::Metadata(m) if m.is_unavailable() => "ServiceUnavailable",
            UserError::Metadata(_) | UserError::Record(_) | UserError::Io(_) => "InternalServerError",
        };
        AdminError {
            code: code.into(),
            message: e.to_string(),
        }
    }
}

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError {
        code: "InvalidParameter".into(),
        message: message.into(),
    }
}

/// One response line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Response {
    /// The command's result.
    Ok(Value),
    /// Why it failed.
    Error(AdminError),
    /// How far a long command has come; any number of these lines come before its `ok` or
    /// `error`.
    Progress(Progress),
}

/// How far a long-running admin command (a volume sweep) has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Progress {
    /// Units done.
    pub done: u64,
    /// Units in all (0: not known).
    pub total: u64,
    /// Bytes in one unit, when the units are fixed amounts of data (a volume sweep's
    /// extents): the client shows bytes and a byte rate. Absent (0): plain counts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unit_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a running admin command answers to: whether its client went away, and where its
/// progress goes.
pub(crate) struct Job<'a> {
    /// Set when the client went away: long commands stop early with an error.
    pub stop: &'a std::sync::atomic::AtomicBool,
    /// Receives progress (the server streams it to the client as [`Response::Progress`]).
    pub progress: &'a (dyn Fn(Progress) + Sync),
}

impl Job<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn to_value<T: Serialize>(v: T) -> Result<Value, AdminError> {
    serde_json::to_value(v).map_err(|e| AdminError {
        code: "InternalServerError".into(),
        message: e.to_string(),
    })
}

/// Checks an id typed by a user before it reaches the service.
pub(crate) fn parse_id(kind: ResourceType, s: &str) -> Result<Ocid, AdminError> {
    Ok(Ocid::parse(kind, s)?)
}

/// Runs one request as the local administrator.
pub(crate) fn execute(target: &AdminTarget, req: Request) -> Result<Value, AdminError> {
    let job = Job {
        stop: &std::sync::atomic::AtomicBool::new(false),
        progress: &|_| {},
    };
    execute_job(target, req, &job)
}

/// Runs one request as the local administrator; a long one (a volume sweep) reports its
/// progress to `job` and stops early, with an error, once `job.stop` is set (the client went
/// away).
pub(crate) fn execute_job(target: &AdminTarget, req: Request, job: &Job<'_>) -> Result<Value, AdminError> {
    let p = &Principal::local_admin();
    let kms = target.kms.as_ref();
    if req.is_iam() {
        // The Administrators group and its policy exist before anyone is added to them.
        kms.ensure_iam_defaults(p)?;
    }
    match req {
        Request::Api(call) => {
            let method = http::Method::from_bytes(call.method.as_bytes())
                .map_err(|_| invalid(format!("'{}' is not an HTTP method", call.method)))?;
            let body = match call.body {
                Value::Null => Vec::new(),
                body => serde_json::to_vec(&body).expect("JSON values serialize"),
            };
            let base = target.api_base.as_deref().unwrap_or(DEFAULT_API_BASE);
            // A running server's buckets take BUCKET backup locations.
            let backups = match (&target.objects, tokio::runtime::Handle::try_current()) {
                (Some(objects), Ok(runtime)) => {
                    crate::kms_api::backup::BackupTargets::with_buckets(std::sync::Arc::new(
                        crate::object::backup_buckets::ObjectBuckets::new(objects.clone(), runtime),
                    ))
                }
                _ => crate::kms_api::backup::BackupTargets::default(),
            };
            let (data, next_page) =
                crate::kms_api::answer_local_with(kms, base, &method, &call.target, &body, &backups)?;
            Ok(json!({ "data": data, "nextPage": next_page }))
        }
        Request::RegionIdentity => {
            use base64::Engine;
            let (signing, wrapping) = kms.replication_identity()?.public_keys()?;
            let b64 = base64::engine::general_purpose::STANDARD;
            Ok(json!({
                "region": kms.region(),
                "signingKey": b64.encode(&signing),
                "wrappingKey": b64.encode(&wrapping),
            }))
        }
        Request::RegionAdd {
            name,
            endpoint,
            signing_key,
            wrapping_key,
        } => to_value(kms.add_region(
            p,
            kms_core::replication::Region {
                name,
                endpoint,
                signing_key,
                wrapping_key,
                time_created: kms.now(),
            },
        )?),
        Request::RegionList => to_value(kms.list_regions()?),
        Request::RegionRemove { name } => {
            kms.remove_region(p, &name)?;
            Ok(json!({ "removed": name }))
        }
        Request::RegionJoinTenancy {
            home,
            replication_ca_cert,
        } => {
            let info =
                crate::kms_api::tenancy::join(kms, p, &home, replication_ca_cert.as_deref()).map_err(|e| match e
                    .downcast::<KmsError>(
                ) {
                    Ok(e) => AdminError::from(e),
                    Err(e) => AdminError {
                        code: "IncorrectState".into(),
                        message: format!("{e:#}"),
                    },
                })?;
            to_value(info)
        }
        Request::RegionTenancy => to_value(kms.tenancy_info()?),
        Request::Compliance { max_age_days } => {
            if max_age_days < 1 {
                return Err(invalid("max age must be at least 1 day"));
            }
            to_value(kms.compliance_report(max_age_days)?)
        }
        Request::AuditVerify => to_value(kms.verify_audit()?),
        Request::AuditList { from, limit } => to_value(kms.audit_entries(from, limit.clamp(1, 10_000))?),
        Request::SchedulerRun => to_value(kms.run_scheduled()?),
        Request::Tenancy => Ok(json!({ "tenancyId": kms.tenancy_id(), "region": kms.region() })),
        Request::Status => {
            let d = kms.ensure_defaults(p)?;
            Ok(json!({
                "tenancyId": kms.tenancy_id(),
                "region": kms.region(),
                "defaultVaultId": d.vault.id,
                "defaultKeyId": d.key.id,
            }))
        }
        Request::S3UserAdd { name } => {
            let user = target.users.add(&name)?;
            Ok(json!({
                "name": user.name,
                "accessKeyId": user.access_key_id,
                "secretAccessKey": user.secret_access_key,
                "created": user.created,
            }))
        }
        Request::S3UserList => Ok(Value::Array(
            target.users.list()?.iter().map(|u| u.public_view()).collect(),
        )),
        Request::S3UserRemove { user, force } => Ok(target.users.remove(&user, force)?.public_view()),
        Request::IamUserAdd(r) => to_value(kms.create_user(p, r)?),
        Request::IamUserAddKey { name, public_key_pem } => to_value(kms.add_api_key(p, &name, &public_key_pem)?),
        Request::IamUserSetPassword { name, phc } => to_value(kms.set_console_password(p, &name, phc.as_deref())?),
        Request::IamUserList => to_value(kms.list_users()?),
        Request::IamUserRemove { name } => to_value(kms.delete_user(p, &name)?),
        Request::IamGroupCreate { name, description } => to_value(kms.create_group(p, &name, &description)?),
        Request::IamGroupAddUser { group, user } => to_value(kms.add_user_to_group(p, &group, &user)?),
        Request::IamGroupList => to_value(kms.list_groups()?),
        Request::IamGroupDelete { name } => to_value(kms.delete_group(p, &name)?),
        Request::IamPolicyCreate {
            name,
            description,
            statements,
        } => to_value(kms.create_policy(p, &name, &description, statements)?),
        Request::IamPolicyList => to_value(kms.list_policies()?),
        Request::IamPolicyDelete { name } => to_value(kms.delete_policy(p, &name)?),
        Request::IamCompartmentCreate {
            name,
            description,
            parent,
        } => to_value(kms.create_compartment(p, &name, &description, parent.as_deref())?),
        Request::IamCompartmentList => to_value(kms.list_compartments()?),
        Request::Reencrypt { bucket, key_id, full } => {
            let objects = served_objects(target)?;
            let plan = crate::object::sweep::SweepPlan {
                bucket,
                key_id,
                mode: if full {
                    crate::object::sweep::SweepMode::Full
                } else {
                    crate::object::sweep::SweepMode::Rewrap
                },
            };
            // Admin requests run on a blocking thread of the server's runtime.
            let report = tokio::runtime::Handle::current()
                .block_on(crate::object::sweep::sweep(objects, &plan, |_| {}))
                .map_err(object_error)?;
            Ok(json!({
                "report": report,
                "inventory": objects.inventory().map_err(object_error)?,
            }))
        }
        Request::ObjectInventory => to_value(served_objects(target)?.inventory().map_err(object_error)?),
        Request::VolumeRotate { name } => {
            let vol = &served_volume(target, &name)?.volume;
            let keys = target.volume_keys.as_ref().ok_or_else(|| AdminError {
                code: "IncorrectState".into(),
                message: "this server has no key provider for volumes".into(),
            })?;
            let id = vol.rotate(keys).map_err(volume_error)?;
            let header = vol.header();
            let generation = header.generations.iter().find(|g| g.id == id).expect("just added");
            Ok(json!({ "generation": id, "keyVersionId": generation.key_version_id }))
        }
        Request::VolumeReencrypt { name, max_mib_per_sec } => {
            let vol = &served_volume(target, &name)?.volume;
            let current = vol.current_generation();
            let total = vol
                .extents_per_generation()
                .iter()
                .filter(|(g, _)| **g != current)
                .map(|(_, n)| n)
                .sum::<u64>();
            let unit_bytes = vol.header().extent_size;
            (job.progress)(Progress {
                done: 0,
                total,
                unit_bytes,
            });
            // Extent by extent, each under its lock: NBD clients keep reading and writing.
            let (done, stopped) = vol
                .reencrypt_all(max_mib_per_sec, |done| {
                    (job.progress)(Progress {
                        done,
                        total,
                        unit_bytes,
                    });
                    !job.stopped()
                })
                .map_err(volume_error)?;
            if stopped {
                tracing::info!(volume = %name, extents = done, "volume sweep stopped: its client went away");
                return Err(AdminError {
                    code: "Cancelled".into(),
                    message: format!("stopped after {done} extent(s): the client went away"),
                });
            }
            let dropped = vol.drop_unused_generations().map_err(volume_error)?;
            Ok(json!({
                "reencrypted": done,
                "generation": vol.current_generation(),
                "dropped": dropped.iter().map(|g| json!({"id": g.id, "keyVersionId": g.key_version_id})).collect::<Vec<_>>(),
                "remaining": vol.header().generations.iter().map(|g| json!({"id": g.id, "keyVersionId": g.key_version_id})).collect::<Vec<_>>(),
            }))
        }
    }
}

fn served_volume<'a>(target: &'a AdminTarget, name: &str) -> Result<&'a crate::block::nbd::Export, AdminError> {
    target
        .volumes
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| AdminError {
            code: "NotAuthorizedOrNotFound".into(),
            message: format!("the server does not serve a volume named '{name}'"),
        })
}

fn volume_error(e: crate::block::VolumeError) -> AdminError {
    AdminError {
        code: "InternalServerError".into(),
        message: e.to_string(),
    }
}

fn served_objects(target: &AdminTarget) -> Result<&crate::object::ObjectService, AdminError> {
    target.objects.as_deref().ok_or_else(|| AdminError {
        code: "IncorrectState".into(),
        message: "object requests go to a running server; without one, open the data directory directly".into(),
    })
}

fn object_error(e: crate::object::ObjectError) -> AdminError {
    let code = match &e {
        crate::object::ObjectError::NoSuchBucket(_) | crate::object::ObjectError::NoSuchKey { .. } => {
            "NotAuthorizedOrNotFound"
        }
        crate::object::ObjectError::InvalidBucketName(_) => "InvalidParameter",
        _ => "InternalServerError",
    };
    AdminError {
        code: code.into(),
        message: e.to_string(),
    }
}
