//! The reference external key manager (`sealstore ekm serve`): what an EXTERNAL vault points
//! at, standing in for a customer's own key manager (OCI EKMS / Thales CipherTrust).
//!
//! It keeps its keys in a sealstore data directory of its own, apart from any KMS: external
//! vaults, keys and versions are that directory's vaults, keys and key versions (managed with
//! `sealstore ekm key …` or `sealstore kms …` on it). Every request must carry a bearer token
//! that verifies against the configured JWKS, for this manager's URL; clients listed by
//! `sealstore ekm revoke-client` are refused until restored. The protocol is in
//! `docs/EXTERNAL_KMS.md`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use kms_core::{AssociatedData, Kms, KmsError, Ocid, Principal, ResourceType};
use serde_json::{json, Value};

use super::token::{Refused, TokenVerifier, SCOPE_CRYPTO, SCOPE_READ};

/// The file listing revoked client ids, in the key manager's data directory.
pub(crate) const REVOKED_FILE: &str = "ekm-revoked-clients.json";
const MAX_BODY: usize = 64 * 1024;

/// Client ids refused by the key manager; the file is re-read when it changes.
#[derive(Debug)]
pub(crate) struct RevokedClients {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, HashSet<String>)>,
}

impl RevokedClients {
    /// The list in `data_dir`.
    pub(crate) fn new(data_dir: &Path) -> Self {
        RevokedClients {
            path: data_dir.join(REVOKED_FILE),
            cache: Mutex::new((None, HashSet::new())),
        }
    }

    /// The ids listed now.
    pub(crate) fn read(&self) -> std::io::Result<HashSet<String>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
            Err(e) => Err(e),
        }
    }

    /// Whether `client` is revoked. An unreadable list refuses everyone: failing closed.
    pub(crate) fn is_revoked(&self, client: &str) -> bool {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut cache = self.cache.lock().expect("revocation cache");
        if cache.0 != modified || modified.is_none() {
            match self.read() {
                Ok(set) => *cache = (modified, set),
                Err(e) => {
                    tracing::error!(error = %e, path = %self.path.display(), "unreadable revocation list: refusing every client");
                    return true;
                }
            }
        }
        cache.1.contains(client)
    }

    /// Adds (`revoked`) or removes a client, replacing the file atomically.
    pub(crate) fn set(&self, client: &str, revoked: bool) -> std::io::Result<bool> {
        let mut set = self.read()?;
        let changed = if revoked {
            set.insert(client.to_owned())
        } else {
            set.remove(client)
        };
        let mut sorted: Vec<&String> = set.iter().collect();
        sorted.sort();
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&sorted)?)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(changed)
    }
}

/// The key manager: its keys, the token check and the revocation list.
pub(crate) struct KeyManager {
    kms: Arc<Kms>,
    verifier: TokenVerifier,
    revoked: RevokedClients,
}

type Answer = (StatusCode, Value);

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Answer {
    (status, json!({"code": code, "message": message.into()}))
}

fn from_kms(e: KmsError) -> Answer {
    match e {
        KmsError::NotFound { .. } => refuse(StatusCode::NOT_FOUND, "NotFound", e.to_string()),
        KmsError::AccessDenied(_) | KmsError::VaultDeleted(_) => {
            refuse(StatusCode::FORBIDDEN, "AccessDenied", e.to_string())
        }
        KmsError::InvalidCiphertext(_) | KmsError::InvalidParameter(_) => {
            refuse(StatusCode::BAD_REQUEST, "BadRequest", e.to_string())
        }
        other => {
            tracing::error!(error = %other, "external key manager request failed");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "internal error")
        }
    }
}

impl KeyManager {
    /// A key manager over `kms` (its own data directory), checking tokens with `verifier`.
    pub(crate) fn new(kms: Arc<Kms>, verifier: TokenVerifier, data_dir: &Path) -> Self {
        KeyManager {
            kms,
            verifier,
            revoked: RevokedClients::new(data_dir),
        }
    }

    /// Accepts connections (over TLS with `tls`) and serves them until the task is dropped.
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        crate::http_server::serve(listener, tls, "key manager", move |req| self.clone().handle(req)).await
    }

    async fn handle<B>(self: Arc<Self>, req: http::Request<B>) -> http::Response<Full<Bytes>>
    where
        B: hyper::body::Body + Send,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let (parts, body) = req.into_parts();
        let (status, json) = match Limited::new(body, MAX_BODY).collect().await {
            Err(_) => refuse(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the body is too large or unreadable",
            ),
            Ok(body) => {
                let body = body.to_bytes();
                let manager = self.clone();
                tokio::task::spawn_blocking(move || manager.answer(&parts, &body))
                    .await
                    .unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "internal error"))
            }
        };
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json.to_string())))
            .expect("a valid response")
    }

    /// Checks the token (scope by method), then routes.
    fn answer(&self, parts: &http::request::Parts, body: &[u8]) -> Answer {
        let scope = if parts.method == Method::GET {
            SCOPE_READ
        } else {
            SCOPE_CRYPTO
        };
        let token = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let client = match token.map(|t| self.verifier.verify(t, scope)) {
            None => return refuse(StatusCode::UNAUTHORIZED, "Unauthorized", "a bearer token is required"),
            Some(Err(Refused(why))) => return refuse(StatusCode::UNAUTHORIZED, "Unauthorized", why),
            Some(Ok(client)) => client,
        };
        if self.revoked.is_revoked(&client) {
            return refuse(
                StatusCode::FORBIDDEN,
                "ClientRevoked",
                format!("client '{client}' is revoked by the key manager"),
            );
        }
        let principal = Principal::new(format!("ekm-client/{client}"));
        let segments: Vec<&str> = parts.uri.path().trim_matches('/').split('/').collect();
        match (&parts.method, segments.as_slice()) {
            (&Method::GET, ["ekm", "v1", "vaults", id]) => self.vault(id),
            (&Method::GET, ["ekm", "v1", "keys", id]) => self.key(id),
            (&Method::POST, ["ekm", "v1", "keys", key, "versions", version, op @ ("encrypt" | "decrypt")]) => {
                self.crypto(&principal, key, version, op, body)
            }
            _ => refuse(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no operation at {} {}", parts.method, parts.uri.path()),
            ),
        }
    }

    fn vault(&self, id: &str) -> Answer {
        let vault = match Ocid::parse(ResourceType::Vault, id).and_then(|id| self.kms.get_vault(&id)) {
            Ok(v) => v,
            Err(e) => return from_kms(e),
        };
        (
            StatusCode::OK,
            json!({"vaultId": vault.id, "name": vault.display_name, "state": vault.lifecycle_state}),
        )
    }

    fn key(&self, id: &str) -> Answer {
        let result = Ocid::parse(ResourceType::Key, id).and_then(|id| {
            let key = self.kms.get_key(&id)?;
            let versions = self.kms.list_key_versions(&id)?;
            Ok((key, versions))
        });
        let (key, versions) = match result {
            Ok(found) => found,
            Err(e) => return from_kms(e),
        };
        (
            StatusCode::OK,
            json!({
                "keyId": key.id,
                "vaultId": key.vault_id,
                "name": key.display_name,
                "state": key.lifecycle_state,
                "currentVersionId": key.current_key_version,
                "versions": versions.iter().map(|v| json!({
                    "versionId": v.id, "state": v.lifecycle_state, "timeCreated": v.time_created.to_string(),
                })).collect::<Vec<_>>(),
            }),
        )
    }

    fn crypto(&self, principal: &Principal, key: &str, version: &str, op: &str, body: &[u8]) -> Answer {
        let parsed = (|| {
            let key = Ocid::parse(ResourceType::Key, key)?;
            let version = Ocid::parse(ResourceType::KeyVersion, version)?;
            let body: Value = serde_json::from_slice(body)
                .map_err(|e| KmsError::InvalidParameter(format!("the body is not JSON: {e}")))?;
            let field = |name: &str| -> kms_core::Result<Vec<u8>> {
                B64.decode(body[name].as_str().unwrap_or_default())
                    .map_err(|_| KmsError::InvalidParameter(format!("'{name}' must be base64")))
            };
            let aad = AssociatedData::Raw(field("aad")?);
            if op == "encrypt" {
                let out = self
                    .kms
                    .encrypt_under_version(principal, &key, &version, &field("plaintext")?, &aad)?;
                Ok(json!({"ciphertext": B64.encode(&out.ciphertext)}))
            } else {
                let out = self.kms.decrypt(principal, &field("ciphertext")?, &aad, Some(&key))?;
                if out.key_version_id != version {
                    return Err(KmsError::InvalidCiphertext(format!(
                        "the ciphertext was made by version {}, not {version}",
                        out.key_version_id
                    )));
                }
                Ok(json!({"plaintext": B64.encode(&out.plaintext[..])}))
            }
        })();
        match parsed {
            Ok(json) => (StatusCode::OK, json),
            Err(e) => from_kms(e),
        }
    }
}
