//! EXTERNAL protection: sealstore keeps only references (key manager URL, key id, version
//! id); every encrypt and decrypt is a call to the external key manager, authorized by a
//! bearer token sealstore signs (see [`super::token`]).
//!
//! Each call waits at most 500 ms to connect and 1 s for the answer, and is tried twice; then
//! the caller gets a timeout error saying so. A refused connection fails at once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use kms_core::protection::{ExportedMaterial, ExternalKeyState, ExternalVersionRef, KeyProtection};
use kms_core::{ExternalKeyManager, KmsError, Ocid, ProtectionMode, Refusal, Result};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::token::ClientKey;
use crate::http_client::{error_chain, said_once, BlockingClient, Timeouts};

/// To connect to the key manager.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// For its answer.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts per call.
const ATTEMPTS: usize = 2;

/// Why every attempt of a call failed, as operators grep for it: "timed out: no answer
/// within the 1 s read timeout; retried once".
fn unavailable(endpoint: &str, failures: &[String]) -> String {
    let retried = match failures.len() {
        0 | 1 => "not retried".to_owned(),
        2 => "retried once".to_owned(),
        n => format!("retried {} times", n - 1),
    };
    let mut distinct: Vec<&str> = Vec::new();
    for f in failures {
        if !distinct.contains(&f.as_str()) {
            distinct.push(f);
        }
    }
    format!(
        "external key manager at {endpoint}: {}; {retried}",
        distinct.join("; then ")
    )
}

/// Keys held by external key managers.
#[derive(Debug)]
pub(crate) struct ExternalProtection {
    /// Made on first use: most commands never call a key manager.
    http: OnceLock<std::result::Result<BlockingClient, String>>,
    extra_ca: Option<PathBuf>,
    client_key: Arc<ClientKey>,
}

impl ExternalProtection {
    /// Calls key managers with tokens signed by `client_key`, trusting `extra_ca` for https.
    pub(crate) fn new(client_key: Arc<ClientKey>, extra_ca: Option<&Path>) -> std::result::Result<Self, String> {
        Ok(ExternalProtection {
            http: OnceLock::new(),
            extra_ca: extra_ca.map(Path::to_path_buf),
            client_key,
        })
    }

    fn http(&self) -> Result<&BlockingClient> {
        let timeouts = Timeouts {
            connect: CONNECT_TIMEOUT,
            read: READ_TIMEOUT,
            total: CONNECT_TIMEOUT + READ_TIMEOUT,
        };
        self.http
            .get_or_init(|| BlockingClient::new(self.extra_ca.as_deref(), timeouts, "ekm-client"))
            .as_ref()
            .map_err(|e| KmsError::Protection(format!("EXTERNAL protection: {e}")))
    }

    /// One call to the key manager at `endpoint`; `what` names the resource for a 404.
    fn call(&self, endpoint: &str, method: Method, path: &str, body: Option<Value>, what: &str) -> Result<Value> {
        let token = self
            .client_key
            .bearer(endpoint)
            .map_err(|e| KmsError::Protection(format!("cannot sign a token for {endpoint}: {e}")))?;
        let body = body.map(|b| b.to_string().into_bytes());
        let url = format!("{endpoint}{path}");
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}")).expect("a JWT is header text"),
            );
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let answer = match self.http()?.send(method.clone(), &url, headers, body.clone()) {
                Ok(a) => a,
                Err(e) if e.is_timeout() && e.is_connect() => {
                    failures.push(format!(
                        "timed out: no connection within the {} ms connect timeout",
                        CONNECT_TIMEOUT.as_millis()
                    ));
                    continue;
                }
                Err(e) if e.is_timeout() => {
                    failures.push(format!(
                        "timed out: no answer within the {} s read timeout",
                        READ_TIMEOUT.as_secs_f64()
                    ));
                    continue;
                }
                Err(e) if e.is_connect() => {
                    failures.push(error_chain(&e));
                    continue;
                }
                Err(e) => {
                    return Err(KmsError::Unavailable(format!(
                        "external key manager at {endpoint}: {}",
                        error_chain(&e)
                    )))
                }
            };
            let json: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
            let message = json["message"].as_str().unwrap_or_default().to_owned();
            match answer.status {
                s if s.is_success() => return Ok(json),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(KmsError::denied(
                        Refusal::KeyManager,
                        format!(
                            "external key manager denied access: {}",
                            said_once(message, |m| KmsError::denied(Refusal::KeyManager, m))
                        ),
                    ))
                }
                StatusCode::NOT_FOUND if method == Method::GET => {
                    return Err(KmsError::InvalidParameter(format!(
                        "external key manager at {endpoint} has no {what}: {message}"
                    )))
                }
                StatusCode::NOT_FOUND => {
                    return Err(KmsError::denied(
                        Refusal::KeyManager,
                        format!("external key manager at {endpoint} has no {what}: {message}"),
                    ))
                }
                StatusCode::BAD_REQUEST => {
                    return Err(KmsError::InvalidCiphertext(format!(
                        "external key manager: {}",
                        said_once(message, KmsError::InvalidCiphertext)
                    )))
                }
                s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                    failures.push(format!("answered {s}: {message}"));
                }
                s => {
                    return Err(KmsError::Protection(format!(
                        "external key manager at {endpoint} answered {s}: {message}"
                    )))
                }
            }
        }
        Err(KmsError::Unavailable(unavailable(endpoint, &failures)))
    }

    /// `POST …/keys/{key}/versions/{version}/{operation}` for the version `stored` references,
    /// with `{input.0: base64(input.1), aad: base64(aad)}`.
    fn version_call(&self, stored: &[u8], operation: &str, input: (&str, &[u8]), aad: &[u8]) -> Result<Value> {
        let r = ExternalVersionRef::from_bytes(stored)?;
        self.call(
            &r.endpoint,
            Method::POST,
            &format!(
                "/ekm/v1/keys/{}/versions/{}/{operation}",
                segment(&r.key_id),
                segment(&r.version_id)
            ),
            Some(json!({input.0: B64.encode(input.1), "aad": B64.encode(aad)})),
            "such key version",
        )
    }
}

fn decode(json: &Value, field: &str) -> Result<Vec<u8>> {
    json[field]
        .as_str()
        .and_then(|s| B64.decode(s).ok())
        .ok_or_else(|| KmsError::Protection(format!("the external key manager's answer has no base64 '{field}'")))
}

fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl KeyProtection for ExternalProtection {
    fn mode(&self) -> ProtectionMode {
        ProtectionMode::External
    }

    fn create_material(&self, _version: &Ocid) -> Result<Vec<u8>> {
        Err(KmsError::InvalidParameter(
            "EXTERNAL key versions are made in the external key manager; sealstore only references them".into(),
        ))
    }

    fn encrypt(&self, _version: &Ocid, stored: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let out = self.version_call(stored, "encrypt", ("plaintext", plaintext), aad)?;
        decode(&out, "ciphertext")
    }

    fn decrypt(&self, _version: &Ocid, stored: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let out = self.version_call(stored, "decrypt", ("ciphertext", sealed), aad)?;
        Ok(Zeroizing::new(decode(&out, "plaintext")?))
    }

    fn destroy(&self, _version: &Ocid, _stored: &[u8]) -> Result<()> {
        // The key lives on in its key manager; only the reference here goes.
        Ok(())
    }

    // Replicas call the same key manager: the reference travels as it is.
    fn export_material(&self, _version: &Ocid, stored: &[u8]) -> Result<ExportedMaterial> {
        ExternalVersionRef::from_bytes(stored)?;
        Ok(ExportedMaterial::Reference(stored.to_vec()))
    }

    fn import_material(&self, _version: &Ocid, exported: &ExportedMaterial) -> Result<Vec<u8>> {
        match exported {
            ExportedMaterial::Reference(r) => {
                ExternalVersionRef::from_bytes(r)?;
                Ok(r.clone())
            }
            ExportedMaterial::Secret(_) => Err(KmsError::InvalidParameter(
                "EXTERNAL versions replicate as references, not key material".into(),
            )),
        }
    }

    fn external_key(&self, manager: &ExternalKeyManager, key_id: &str) -> Result<ExternalKeyState> {
        let key = self.call(
            &manager.endpoint,
            Method::GET,
            &format!("/ekm/v1/keys/{}", segment(key_id)),
            None,
            "such key",
        )?;
        if key["vaultId"].as_str() != Some(manager.external_vault_id.as_str()) {
            return Err(KmsError::InvalidParameter(format!(
                "external key {key_id} is not in external vault {}",
                manager.external_vault_id
            )));
        }
        let current = key["currentVersionId"]
            .as_str()
            .ok_or_else(|| KmsError::Protection("the external key manager names no current version".into()))?;
        let version_ids = key["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["state"] == "ENABLED")
            .filter_map(|v| v["versionId"].as_str().map(str::to_owned))
            .collect();
        Ok(ExternalKeyState {
            enabled: key["state"] == "ENABLED",
            current_version_id: current.to_owned(),
            version_ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::unavailable;

    #[test]
    fn an_unavailable_key_manager_says_it_timed_out_and_was_retried_once() {
        let timed_out = "timed out: no answer within the 1 s read timeout".to_owned();
        assert_eq!(
            unavailable("http://km", &[timed_out.clone(), timed_out.clone()]),
            "external key manager at http://km: timed out: no answer within the 1 s read timeout; retried once"
        );
        let refused = "connection refused".to_owned();
        assert_eq!(
            unavailable("http://km", &[timed_out, refused]),
            "external key manager at http://km: timed out: no answer within the 1 s read timeout; then connection refused; retried once"
        );
    }
}
