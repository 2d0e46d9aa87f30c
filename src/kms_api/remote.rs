//! [`RemoteKms`]: the data path's [`KeyProvider`] when the keys live in another sealstore's
//! KMS API (`--kms-endpoint`), so that keys and data can be on different machines.
//!
//! Every call is an OCI-signed request with one user's API key, read from an OCI config file
//! profile (the one `sealstore iam user add` prints). The remote side checks that user's
//! policies and audits each call; that user needs `use key-family` on the keys the data path
//! uses (`use` covers reading keys and their vaults, and the crypto calls).
//!
//! Data keys are bound to the data path's associated data with the `rawAssociatedData`
//! extension, so they are exactly what the embedded KMS makes: a volume or object written
//! through one reads back through the other when both reach the same key.
//!
//! Crypto calls go to the crypto endpoint of the key's vault. A key names no vault, so the
//! first call for a key finds its vault (compartments → vaults → `GET key` in each) and
//! remembers it: a key never moves between vaults.
//!
//! Every call is async underneath. Async callers (the key service) await it on their own
//! runtime ([`AsyncKeyProvider`]); synchronous ones ([`KeyProvider`]: the CLI, volumes) wait
//! while it runs on the HTTP client's runtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use kms_core::{
    ciphertext, AsyncKeyProvider, DataKey, Dek, Denial, KeyFuture, KeyProvider, KeyState, KeyStatus, KeyVersionState,
    KmsError, Ocid, Refusal, ResourceType, Result,
};
use serde_json::{json, Value};

use super::signature::RequestSigner;
use crate::http_client::{error_chain, host_header, said_once, BlockingClient, Timeouts};

/// How long to wait for a TCP (and TLS) connection to the KMS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before the one retry of a call that failed to connect or met 429/502/503/504.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Where a remote KMS is and who the data path is there.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// `http[s]://host:port` of the KMS API.
    pub endpoint: String,
    /// OCI config file holding the API key (`user`, `fingerprint`, `key_file`, `tenancy`).
    pub config_file: PathBuf,
    /// Profile in it.
    pub profile: String,
    /// Extra CA certificate (PEM) to trust for an `https` endpoint.
    pub ca_cert: Option<PathBuf>,
}

/// Why a remote KMS cannot be used as configured.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RemoteSetupError(String);

fn setup(msg: impl Into<String>) -> RemoteSetupError {
    RemoteSetupError(msg.into())
}

/// One profile of an OCI config file (`[NAME]` sections of `key=value` lines).
fn read_profile(path: &Path, profile: &str) -> Result<HashMap<String, String>, RemoteSetupError> {
    let text = std::fs::read_to_string(path).map_err(|e| setup(format!("reading {}: {e}", path.display())))?;
    let mut current: Option<&str> = None;
    let mut values = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim());
        } else if current == Some(profile) {
            if let Some((k, v)) = line.split_once('=') {
                values.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
    }
    if values.is_empty() {
        return Err(setup(format!("{} has no profile [{profile}]", path.display())));
    }
    Ok(values)
}

/// A [`KeyProvider`] (and [`AsyncKeyProvider`]) backed by another sealstore's KMS API.
///
/// Give it where the KMS API is and an OCI config profile with a user's API key; it can
/// then stand wherever a [`KeyProvider`] is taken ([`EncryptedStore`](crate::object::EncryptedStore),
/// [`Volume`](crate::block::Volume)), or be called directly:
///
/// ```no_run
/// use kms_core::{KeyProvider, Ocid, ResourceType};
/// use sealstore::remote::{RemoteConfig, RemoteKms};
///
/// let keys = RemoteKms::new(&RemoteConfig {
///     endpoint: "https://keys.example.com:9100".into(),
///     config_file: "/home/app/.oci/config".into(),
///     profile: "data-path".into(),
///     ca_cert: None,
/// })?;
/// let key = Ocid::parse(ResourceType::Key, "ocid1.key.oc1.local-1.abc")?;
/// let data_key = keys.generate_data_key(&key, b"associated data")?; // one signed call
/// let dek = keys.unwrap_data_key(&data_key.wrapped, b"associated data")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// (Not run here: it needs a server; `examples/remote_keys.rs` starts one and runs this.)
pub struct RemoteKms {
    remote: Arc<Remote>,
}

/// What a [`RemoteKms`] call needs, shared with the calls in flight on the HTTP client's
/// runtime.
struct Remote {
    endpoint: String,
    host: HeaderValue,
    tenancy: String,
    signer: Arc<RequestSigner>,
    http: BlockingClient,
    /// Key → its vault (found once, never changes).
    vaults: Mutex<HashMap<Ocid, Ocid>>,
}

impl std::fmt::Debug for RemoteKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKms")
            .field("endpoint", &self.remote.endpoint)
            .field("signer", &self.remote.signer)
            .finish_non_exhaustive()
    }
}

/// An answer that is not 2xx: status, OCI error code and message.
struct ErrorAnswer {
    status: StatusCode,
    code: String,
    message: String,
}

impl RemoteKms {
    /// Reads the API key and prepares the client; makes no call yet.
    pub fn new(config: &RemoteConfig) -> Result<Self, RemoteSetupError> {
        let endpoint = config.endpoint.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&endpoint)
            .map_err(|e| setup(format!("--kms-endpoint '{endpoint}' is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.path() != "/" || url.query().is_some() {
            return Err(setup(format!(
                "--kms-endpoint must be http[s]://host[:port] (the KMS API's address), not '{endpoint}'"
            )));
        }
        let host = host_header(&url).ok_or_else(|| setup(format!("--kms-endpoint '{endpoint}' names no host")))?;
        let profile = read_profile(&config.config_file, &config.profile)?;
        let field = |name: &str| {
            profile.get(name).cloned().ok_or_else(|| {
                setup(format!(
                    "profile [{}] of {} has no '{name}'",
                    config.profile,
                    config.config_file.display()
                ))
            })
        };
        let (user, fingerprint, tenancy, key_file) = (
            field("user")?,
            field("fingerprint")?,
            field("tenancy")?,
            field("key_file")?,
        );
        let key_file = match key_file.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(rest),
            None => PathBuf::from(key_file),
        };
        let pem =
            std::fs::read(&key_file).map_err(|e| setup(format!("reading the API key {}: {e}", key_file.display())))?;
        let signer = RequestSigner::new(&tenancy, &user, &fingerprint, &pem)
            .map_err(|e| setup(format!("API key {}: {e}", key_file.display())))?;

        let timeouts = Timeouts {
            connect: CONNECT_TIMEOUT,
            read: CALL_TIMEOUT,
            total: CALL_TIMEOUT,
        };
        let http = BlockingClient::new(config.ca_cert.as_deref(), timeouts, "kms-client").map_err(setup)?;
        Ok(RemoteKms {
            remote: Arc::new(Remote {
                endpoint,
                host: HeaderValue::from_str(&host).map_err(|_| setup("bad host in --kms-endpoint"))?,
                tenancy,
                signer: Arc::new(signer),
                http,
                vaults: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.remote.endpoint
    }

    /// Runs `call` on the HTTP client's runtime and waits for it, from any thread.
    fn wait<T: Send + 'static, F>(&self, call: impl FnOnce(Arc<Remote>) -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        self.remote.http.wait(call(self.remote.clone()))
    }
}

impl Remote {
    /// One signed call: `target` is the path and query. Retries once when the KMS could not
    /// be reached or asked to back off. Returns the JSON body and the `opc-next-page` header.
    async fn call(
        &self,
        method: Method,
        target: &str,
        body: Option<&Value>,
    ) -> Result<std::result::Result<(Value, Option<String>), ErrorAnswer>> {
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON serializes"));
        let mut last = None;
        for attempt in 0..2 {
            if attempt > 0 {
                tokio::time::sleep(RETRY_AFTER).await;
            }
            let mut headers = HeaderMap::new();
            headers.insert(http::header::HOST, self.host.clone());
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(http::header::ACCEPT, HeaderValue::from_static("application/json"));
            self.signer
                .sign(&method, target, &mut headers, body.as_deref())
                .map_err(|e| {
                    KmsError::denied(
                        Refusal::Credentials,
                        format!("cannot sign requests to {}: {e}", self.endpoint),
                    )
                })?;
            let outcome = self
                .http
                .send_async(
                    method.clone(),
                    &format!("{}{target}", self.endpoint),
                    headers,
                    body.clone(),
                )
                .await
                .map(|a| {
                    let next = a
                        .headers
                        .get("opc-next-page")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    (a.status, next, a.body)
                });
            match outcome {
                Err(e) => {
                    let mut why = format!("{}: {}", self.endpoint, error_chain(&e));
                    if why.contains("certificate") {
                        why.push_str(
                            " (to trust a private CA or the server's self-signed certificate, give --kms-ca-cert)",
                        );
                        return Err(KmsError::Unavailable(why));
                    }
                    if e.is_connect() || e.is_timeout() {
                        last = Some(why);
                        continue;
                    }
                    return Err(KmsError::Unavailable(why));
                }
                Ok((status, next, bytes)) => {
                    if status.is_success() {
                        let json = if bytes.is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_slice(&bytes).map_err(|e| {
                                KmsError::Unavailable(format!("{} answered with malformed JSON: {e}", self.endpoint))
                            })?
                        };
                        return Ok(Ok((json, next)));
                    }
                    let err: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let refusal = ErrorAnswer {
                        status,
                        code: err["code"].as_str().unwrap_or_default().to_owned(),
                        message: err["message"].as_str().unwrap_or_default().to_owned(),
                    };
                    let transient = matches!(status.as_u16(), 429 | 502 | 503 | 504);
                    if transient && attempt == 0 {
                        last = Some(format!("{} answered {status}: {}", self.endpoint, refusal.message));
                        continue;
                    }
                    return Ok(Err(refusal));
                }
            }
        }
        Err(KmsError::Unavailable(last.unwrap_or_default()))
    }

    /// [`RemoteKms::call`] with refusals as errors; `what` names the resource for a 404.
    async fn expect(
        &self,
        method: Method,
        target: &str,
        body: Option<&Value>,
        what: (&'static str, &str),
    ) -> Result<Value> {
        Ok(self.expect_page(method, target, body, what).await?.0)
    }

    async fn expect_page(
        &self,
        method: Method,
        target: &str,
        body: Option<&Value>,
        (kind, id): (&'static str, &str),
    ) -> Result<(Value, Option<String>)> {
        let endpoint = &self.endpoint;
        self.call(method, target, body)
            .await?
            .map_err(|r| answer_error(endpoint, r, (kind, id)))
    }

    /// Every page of a list call (`target` already has its query).
    async fn list_all(&self, target: &str, what: (&'static str, &str)) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let url = match &page {
                Some(p) => format!("{target}&page={}", encode(p)),
                None => target.to_owned(),
            };
            let (items, next) = self.expect_page(Method::GET, &url, None, what).await?;
            out.extend(items.as_array().cloned().unwrap_or_default());
            match next {
                Some(n) => page = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// The tenancy and every compartment the user can reach.
    async fn compartments(&self) -> Result<Vec<String>> {
        let mut out = vec![self.tenancy.clone()];
        let listed = self
            .list_all(
                &format!(
                "/20160918/compartments?compartmentId={}&compartmentIdInSubtree=true&accessLevel=ACCESSIBLE&limit=1000",
                encode(&self.tenancy)
            ),
                ("compartment", &self.tenancy),
            )
            .await?;
        out.extend(listed.iter().filter_map(|c| c["id"].as_str().map(str::to_owned)));
        Ok(out)
    }

    /// Every vault the user can list, not deleted.
    async fn all_vaults(&self) -> Result<Vec<Value>> {
        let mut vaults = Vec::new();
        for compartment in self.compartments().await? {
            let listed = self
                .list_all(
                    &format!("/20180608/vaults?compartmentId={}&limit=1000", encode(&compartment)),
                    ("compartment", &compartment),
                )
                .await?;
            vaults.extend(listed.into_iter().filter(|v| v["lifecycleState"] != "DELETED"));
        }
        Ok(vaults)
    }

    /// The vault holding `key_id` (see the module docs).
    async fn vault_of(&self, key_id: &Ocid) -> Result<Ocid> {
        if let Some(v) = self.vaults.lock().expect("vault cache").get(key_id) {
            return Ok(v.clone());
        }
        for vault in self.all_vaults().await? {
            let Some(vault_id) = vault["id"]
                .as_str()
                .and_then(|v| Ocid::parse(ResourceType::Vault, v).ok())
            else {
                continue;
            };
            let target = format!("/kms/{vault_id}/management/20180608/keys/{key_id}");
            match self.call(Method::GET, &target, None).await? {
                Ok(_) => {
                    self.vaults
                        .lock()
                        .expect("vault cache")
                        .insert(key_id.clone(), vault_id.clone());
                    return Ok(vault_id);
                }
                // Not there, or not visible to this user: try the next vault.
                Err(_) => continue,
            }
        }
        Err(KmsError::NotFound {
            kind: "key",
            id: key_id.to_string(),
        })
    }

    async fn key_json(&self, key_id: &Ocid) -> Result<(Ocid, Value)> {
        let vault = self.vault_of(key_id).await?;
        let key = self
            .expect(
                Method::GET,
                &format!("/kms/{vault}/management/20180608/keys/{key_id}"),
                None,
                ("key", key_id.as_str()),
            )
            .await?;
        Ok((vault, key))
    }

    /// A crypto call on the vault of `key_id`.
    async fn crypto(&self, key_id: &Ocid, operation: &str, body: Value) -> Result<Value> {
        let vault = self.vault_of(key_id).await?;
        self.expect(
            Method::POST,
            &format!("/kms/{vault}/crypto/20180608/{operation}"),
            Some(&body),
            ("key", key_id.as_str()),
        )
        .await
        .map_err(|e| crypto_error(operation, e))
    }
}

/// The error for a refusal the KMS API answered; `what` names the resource for a 404.
///
/// The API's message is the remote [`KmsError`]'s whole text, which begins with what its kind
/// says ("access denied: …"): that is said once, by the error made here, not again.
fn answer_error(endpoint: &str, answer: ErrorAnswer, (kind, id): (&'static str, &str)) -> KmsError {
    let message = if answer.message.is_empty() {
        answer.code
    } else {
        answer.message
    };
    match answer.status {
        StatusCode::NOT_FOUND => KmsError::NotFound {
            kind,
            id: id.to_owned(),
        },
        StatusCode::UNAUTHORIZED => KmsError::denied(
            Refusal::Credentials,
            format!("the KMS at {endpoint} did not accept this server's request signature: {message}"),
        ),
        StatusCode::FORBIDDEN => KmsError::denied(
            Refusal::KeyManager,
            said_once(message, |m| KmsError::denied(Refusal::KeyManager, m)),
        ),
        StatusCode::BAD_REQUEST => KmsError::InvalidParameter(said_once(message, KmsError::InvalidParameter)),
        StatusCode::CONFLICT => KmsError::IncorrectState(said_once(message, KmsError::IncorrectState)),
        s => KmsError::Unavailable(format!(
            "{endpoint} answered {s}: {}",
            said_once(message, KmsError::Unavailable)
        )),
    }
}

/// A crypto call's error: a refused parameter of a call on a wrapped key is a ciphertext
/// that does not open (the local KMS says the same).
fn crypto_error(operation: &str, e: KmsError) -> KmsError {
    match e {
        KmsError::InvalidParameter(m) if operation != "generateDataEncryptionKey" => {
            KmsError::InvalidCiphertext(said_once(m, KmsError::InvalidCiphertext))
        }
        other => other,
    }
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn field<'a>(json: &'a Value, name: &str) -> Result<&'a str> {
    json[name]
        .as_str()
        .ok_or_else(|| KmsError::Unavailable(format!("the KMS answer has no '{name}'")))
}

fn decode(json: &Value, name: &str) -> Result<Vec<u8>> {
    B64.decode(field(json, name)?)
        .map_err(|_| KmsError::Unavailable(format!("the KMS answer's '{name}' is not base64")))
}

fn parse_state<T: serde::de::DeserializeOwned>(json: &Value) -> Result<T> {
    serde_json::from_value(json["lifecycleState"].clone())
        .map_err(|_| KmsError::Unavailable(format!("unknown lifecycleState {}", json["lifecycleState"])))
}

/// The calls themselves, async (see the module docs).
impl Remote {
    async fn generate_data_key(&self, key_id: &Ocid, aad: &[u8]) -> Result<DataKey> {
        let out = self
            .crypto(
                key_id,
                "generateDataEncryptionKey",
                json!({
                    "keyId": key_id,
                    "keyShape": {"algorithm": "AES", "length": 32},
                    "includePlaintextKey": true,
                    "rawAssociatedData": B64.encode(aad),
                }),
            )
            .await?;
        let wrapped = decode(&out, "ciphertext")?;
        let plaintext = zeroize::Zeroizing::new(decode(&out, "plaintext")?);
        let made_by = ciphertext::parse(&wrapped)?;
        if &made_by.key_id != key_id {
            return Err(KmsError::InvalidCiphertext(format!(
                "the KMS wrapped the data key with key {}, not {key_id}",
                made_by.key_id
            )));
        }
        Ok(DataKey {
            plaintext: Some(Dek::from_slice(&plaintext)?),
            key_id: made_by.key_id.clone(),
            key_version_id: made_by.key_version_id.clone(),
            wrapped,
        })
    }

    async fn unwrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<Dek> {
        let made_by = ciphertext::parse(wrapped)?;
        let out = self
            .crypto(
                &made_by.key_id,
                "decrypt",
                json!({
                    "keyId": made_by.key_id,
                    "ciphertext": B64.encode(wrapped),
                    "rawAssociatedData": B64.encode(aad),
                }),
            )
            .await?;
        Dek::from_slice(&zeroize::Zeroizing::new(decode(&out, "plaintext")?))
    }

    async fn rewrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<(Vec<u8>, Ocid)> {
        let made_by = ciphertext::parse(wrapped)?;
        let out = self
            .crypto(
                &made_by.key_id,
                "reencrypt",
                json!({
                    "keyId": made_by.key_id,
                    "ciphertext": B64.encode(wrapped),
                    "rawAssociatedData": B64.encode(aad),
                }),
            )
            .await?;
        let version = Ocid::parse(ResourceType::KeyVersion, field(&out, "keyVersionId")?)?;
        Ok((decode(&out, "ciphertext")?, version))
    }

    async fn key_status(&self, key_id: &Ocid) -> Result<KeyStatus> {
        let (vault_id, key) = self.key_json(key_id).await?;
        let state: KeyState = parse_state(&key)?;
        let vault = self
            .expect(
                Method::GET,
                &format!("/20180608/vaults/{vault_id}"),
                None,
                ("vault", vault_id.as_str()),
            )
            .await?;
        let vault_state = vault["lifecycleState"].as_str().unwrap_or_default();
        let unusable = match (vault_state, state) {
            ("ACTIVE", KeyState::Enabled) => None,
            ("ACTIVE", state) => Some(Denial {
                reason: match state {
                    KeyState::Disabled => Refusal::KeyDisabled,
                    KeyState::PendingDeletion => Refusal::KeyPendingDeletion,
                    _ => Refusal::KeyDeleted,
                },
                message: format!(
                    "key {key_id} is {}; it cannot be used",
                    key["lifecycleState"].as_str().unwrap_or_default()
                ),
            }),
            (vault_state, _) => Some(Denial {
                reason: match vault_state {
                    "PENDING_DELETION" => Refusal::VaultPendingDeletion,
                    "DELETED" => Refusal::VaultDeleted,
                    _ => Refusal::VaultNotReady,
                },
                message: format!("vault {vault_id} is {vault_state}; its keys cannot be used"),
            }),
        };
        Ok(KeyStatus {
            key_id: key_id.clone(),
            display_name: field(&key, "displayName")?.to_owned(),
            state,
            current_key_version: Ocid::parse(ResourceType::KeyVersion, field(&key, "currentKeyVersion")?)?,
            unusable,
        })
    }

    async fn key_version_state(&self, key_id: &Ocid, key_version_id: &Ocid) -> Result<KeyVersionState> {
        let vault = self.vault_of(key_id).await?;
        let version = self
            .expect(
                Method::GET,
                &format!("/kms/{vault}/management/20180608/keys/{key_id}/keyVersions/{key_version_id}"),
                None,
                ("key version", key_version_id.as_str()),
            )
            .await?;
        parse_state(&version)
    }

    async fn keys_named(&self, name: &str) -> Result<Vec<Ocid>> {
        let mut found = Vec::new();
        let compartments = self.compartments().await?;
        for vault in self.all_vaults().await? {
            let Some(vault_id) = vault["id"].as_str() else { continue };
            for compartment in &compartments {
                let keys = self
                    .list_all(
                        &format!(
                            "/kms/{vault_id}/management/20180608/keys?compartmentId={}&limit=1000",
                            encode(compartment)
                        ),
                        ("vault", vault_id),
                    )
                    .await?;
                for key in keys {
                    if key["displayName"] == name && key["lifecycleState"] != "DELETED" {
                        let id = Ocid::parse(ResourceType::Key, field(&key, "id")?)?;
                        if let Ok(v) = Ocid::parse(ResourceType::Vault, vault_id) {
                            self.vaults.lock().expect("vault cache").insert(id.clone(), v);
                        }
                        found.push(id);
                    }
                }
            }
        }
        Ok(found)
    }
}

impl KeyProvider for RemoteKms {
    fn generate_data_key(&self, key_id: &Ocid, aad: &[u8]) -> Result<DataKey> {
        let (key_id, aad) = (key_id.clone(), aad.to_vec());
        self.wait(|r| async move { r.generate_data_key(&key_id, &aad).await })
    }

    fn unwrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<Dek> {
        let (wrapped, aad) = (wrapped.to_vec(), aad.to_vec());
        self.wait(|r| async move { r.unwrap_data_key(&wrapped, &aad).await })
    }

    fn rewrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<(Vec<u8>, Ocid)> {
        let (wrapped, aad) = (wrapped.to_vec(), aad.to_vec());
        self.wait(|r| async move { r.rewrap_data_key(&wrapped, &aad).await })
    }

    fn key_status(&self, key_id: &Ocid) -> Result<KeyStatus> {
        let key_id = key_id.clone();
        self.wait(|r| async move { r.key_status(&key_id).await })
    }

    fn key_version_state(&self, key_id: &Ocid, key_version_id: &Ocid) -> Result<KeyVersionState> {
        let (key_id, key_version_id) = (key_id.clone(), key_version_id.clone());
        self.wait(|r| async move { r.key_version_state(&key_id, &key_version_id).await })
    }

    fn keys_named(&self, name: &str) -> Result<Vec<Ocid>> {
        let name = name.to_owned();
        self.wait(|r| async move { r.keys_named(&name).await })
    }

    fn as_async(&self) -> Option<&dyn AsyncKeyProvider> {
        Some(self)
    }
}

impl AsyncKeyProvider for RemoteKms {
    fn generate_data_key<'a>(&'a self, key_id: &'a Ocid, aad: &'a [u8]) -> KeyFuture<'a, DataKey> {
        Box::pin(self.remote.generate_data_key(key_id, aad))
    }

    fn unwrap_data_key<'a>(&'a self, wrapped: &'a [u8], aad: &'a [u8]) -> KeyFuture<'a, Dek> {
        Box::pin(self.remote.unwrap_data_key(wrapped, aad))
    }

    fn rewrap_data_key<'a>(&'a self, wrapped: &'a [u8], aad: &'a [u8]) -> KeyFuture<'a, (Vec<u8>, Ocid)> {
        Box::pin(self.remote.rewrap_data_key(wrapped, aad))
    }

    fn key_status<'a>(&'a self, key_id: &'a Ocid) -> KeyFuture<'a, KeyStatus> {
        Box::pin(self.remote.key_status(key_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms_api::error::ApiError;

    /// What a [`RemoteKms`] call says when the KMS API refuses with `remote` (the error on
    /// the server, answered as the API answers it) in a call of `operation`.
    fn relayed(remote: KmsError, operation: &str) -> String {
        let api = ApiError::from(remote);
        let answer = ErrorAnswer {
            status: api.status,
            code: api.code.to_owned(),
            message: api.message,
        };
        let key = ("key", "ocid1.key.oc1.local-1.abc");
        crypto_error(operation, answer_error("http://keys:9100", answer, key)).to_string()
    }

    #[test]
    fn a_refusal_says_its_kind_once() {
        let disabled = KmsError::denied(Refusal::KeyDisabled, "key ocid1.key.oc1.local-1.abc is DISABLED");
        assert_eq!(
            relayed(disabled, "decrypt"),
            "access denied: key ocid1.key.oc1.local-1.abc is DISABLED"
        );
        let altered = KmsError::InvalidCiphertext("the wrapped key does not open with this associated data".into());
        assert_eq!(
            relayed(altered, "decrypt"),
            "ciphertext rejected: the wrapped key does not open with this associated data"
        );
        let bad = KmsError::InvalidParameter("keyShape length must be 16, 24 or 32".into());
        assert_eq!(
            relayed(bad, "generateDataEncryptionKey"),
            "invalid parameter: keyShape length must be 16, 24 or 32"
        );
        let busy = KmsError::Unavailable("external key manager at https://ekm:8443 did not answer".into());
        assert_eq!(
            relayed(busy, "decrypt"),
            "key manager unavailable: http://keys:9100 answered 503 Service Unavailable: \
             external key manager at https://ekm:8443 did not answer"
        );
        let state = KmsError::IncorrectState("vault ocid1.vault.oc1.local-1.v is CREATING".into());
        assert_eq!(
            relayed(state, "decrypt"),
            "incorrect state: vault ocid1.vault.oc1.local-1.v is CREATING"
        );
    }

    #[test]
    fn a_message_of_other_words_is_kept_whole() {
        let answer = ErrorAnswer {
            status: StatusCode::FORBIDDEN,
            code: "NotAllowed".into(),
            message: "the user may not use key-family in this compartment".into(),
        };
        assert_eq!(
            answer_error("http://keys:9100", answer, ("key", "k")).to_string(),
            "access denied: the user may not use key-family in this compartment"
        );
        let answer = ErrorAnswer {
            status: StatusCode::UNAUTHORIZED,
            code: "NotAuthenticated".into(),
            message: String::new(),
        };
        assert_eq!(
            answer_error("http://keys:9100", answer, ("key", "k")).to_string(),
            "access denied: the KMS at http://keys:9100 did not accept this server's request signature: \
             NotAuthenticated"
        );
    }
}
