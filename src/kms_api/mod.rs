//! The OCI-compatible KMS REST API, so that the real `oci` CLI and SDKs work unmodified
//! (sealstore's coverage, request by request, is in `docs/KMS_API.md`).
//!
//! The public part is [`remote`]: a key provider for a data path that calls this API on
//! another sealstore. The rest serves the API inside the `sealstore` binary:
//!
//! - `signature`: every request is signed with a user's API key (OCI request signatures).
//! - `routes`: which path goes to which handler; the handlers are `identity`, `vaults`,
//!   `keys` and `crypto` (one file each).
//! - `paging`: `limit`/`page`/`sortBy` and the `opc-next-page` header.
//! - `wire`: resources as OCI's JSON shows them.
//! - `error`: OCI error codes.
//!
//! Each vault has its own endpoints, as in OCI: key and crypto calls go to
//! `<base>/kms/<vault id>/management` and `<base>/kms/<vault id>/crypto` (the vault's
//! `managementEndpoint` and `cryptoEndpoint`), since `CreateKey` names no vault.
//! Every call is checked against the IAM policies; what a caller may not see answers 404
//! `NotAuthorizedOrNotFound`, exactly like what does not exist.

mod audit;
pub(crate) mod backup;
mod crypto;
pub(crate) mod error;
mod identity;
mod keys;
pub(crate) mod paging;
mod peer;
pub mod remote;
pub(crate) mod replication;
mod routes;
pub(crate) mod shipper;
pub(crate) mod signature;
pub(crate) mod tenancy;
pub(crate) mod tls;
mod vaults;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use kms_core::iam::{IamView, ResourceKind, Target, Verb};
use kms_core::{Kms, Ocid, Placement, Principal};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub(crate) use error::ApiError;
use signature::Caller;

/// Parses a compartment id (a compartment's or the tenancy's), as the API does.
pub(crate) fn compartment_ocid(s: &str) -> Result<Ocid, ApiError> {
    vaults::compartment_id(s)
}

/// Largest request body accepted (crypto payloads are at most 4 KiB, base64-encoded).
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Query parameters, decoded.
pub(crate) type Query = HashMap<String, String>;

/// The KMS API over one [`Kms`].
#[derive(Clone)]
pub(crate) struct KmsApi {
    kms: Arc<Kms>,
    /// `http://host:port` of this listener, used in vault endpoints when a request has no
    /// usable `host` header.
    fallback_base: String,
    /// `http` or `https`.
    scheme: &'static str,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Requests being answered now, and how many may be: beyond that, 429 (the SDKs back off
    /// and retry) rather than an ever longer queue of blocking work.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    max_in_flight: usize,
    /// Served at [`JWKS_PATH`] when set.
    jwks: Option<Arc<crate::external_kms::token::ClientKey>>,
    /// Where key and vault backups are written and read.
    backups: Arc<backup::BackupTargets>,
}

/// Where the JWKS of [`KmsApi::jwks`] is published.
pub(crate) const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Requests answered at once before others get 429, unless configured otherwise.
pub(crate) const DEFAULT_MAX_IN_FLIGHT: usize = 512;

/// Whether a request is a call on a vault's crypto endpoint (`POST /kms/{vault}/crypto/…`).
fn is_crypto_call(parts: &http::request::Parts) -> bool {
    parts.method == Method::POST
        && parts
            .uri
            .path()
            .strip_prefix("/kms/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(_, rest)| rest.starts_with("crypto/"))
}

/// The keys a crypto call names: `keyId`, and `destinationKeyId` of `reencrypt`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CryptoCallKeys {
    key_id: Option<String>,
    destination_key_id: Option<String>,
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Which endpoint a request came in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// The regional endpoint: vaults and identity.
    Regional,
    /// A vault's management endpoint: keys and key versions of that vault.
    Management(Ocid),
    /// A vault's crypto endpoint: encrypt, decrypt, data keys of that vault's keys.
    Crypto(Ocid),
}

/// One authenticated call on its way through a handler.
pub(crate) struct Call<'a> {
    pub kms: &'a Kms,
    pub iam: &'a IamView,
    pub caller: &'a Caller,
    pub principal: Principal,
    /// `METHOD /path` as asked, for the audit entry of a refusal.
    pub operation: &'a str,
    pub query: &'a Query,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// `http://host:port` as the client reached us, for vault endpoints.
    pub base_url: &'a str,
    /// Where backups go and come from.
    pub backups: &'a backup::BackupTargets,
}

impl Call<'_> {
    /// Refuses with 404 (as OCI: no difference between "not yours" and "not there") unless
    /// the caller may `verb` this resource.
    pub(crate) fn require(
        &self,
        verb: Verb,
        kind: ResourceKind,
        compartment: &Ocid,
        target: Target<'_>,
        what: impl std::fmt::Display,
    ) -> Result<(), ApiError> {
        if self.may(verb, kind, compartment, target) {
            Ok(())
        } else {
            tracing::debug!(user = self.caller.name(), %verb, ?kind, %compartment, "KMS API call not authorized");
            let ocid = |kind: kms_core::ResourceType, id: Option<&str>| id.and_then(|id| Ocid::parse(kind, id).ok());
            let subject = kms_core::audit::AuditSubject {
                vault_id: ocid(kms_core::ResourceType::Vault, target.vault_id),
                key_id: ocid(kms_core::ResourceType::Key, target.key_id),
                ..Default::default()
            };
            self.caller.audit_denied(
                self.kms,
                self.operation.to_owned(),
                subject,
                format!(
                    "not authorized: needs {verb} {} in compartment {compartment}",
                    kind.as_str()
                ),
            );
            Err(ApiError::not_found(what))
        }
    }

    /// Whether the caller may `verb` this resource.
    pub(crate) fn may(&self, verb: Verb, kind: ResourceKind, compartment: &Ocid, target: Target<'_>) -> bool {
        self.caller.allowed(self.iam, verb, kind, compartment, target)
    }

    /// The JSON body as `T`; an empty body reads as `{}` (the CLI sends none on some actions).
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let body = if self.body.iter().all(u8::is_ascii_whitespace) {
            b"{}".as_slice()
        } else {
            self.body
        };
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("request body: {e}")))
    }

    /// A required query parameter.
    pub(crate) fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.query
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| ApiError::missing(name))
    }

    /// Refuses with 412 when the request has `if-match` and it is not `current`'s etag.
    pub(crate) fn check_if_match(&self, current: &Value) -> Result<(), ApiError> {
        match self.headers.get(http::header::IF_MATCH) {
            Some(want) if want.as_bytes() != wire::etag(current).as_bytes() => Err(ApiError::etag_mismatch()),
            _ => Ok(()),
        }
    }
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub body: Value,
    /// The resource's etag (single resources only).
    pub etag: bool,
    /// Token of the next page (lists only).
    pub next_page: Option<String>,
}

impl Reply {
    /// One resource, with its etag.
    pub(crate) fn resource(body: Value) -> Self {
        Reply {
            body,
            etag: true,
            next_page: None,
        }
    }

    /// A JSON answer that is not a resource (crypto results).
    pub(crate) fn plain(body: Value) -> Self {
        Reply {
            body,
            etag: false,
            next_page: None,
        }
    }

    /// One page of a list.
    pub(crate) fn list(items: Vec<Value>, next_page: Option<String>) -> Self {
        Reply {
            body: Value::Array(items),
            etag: false,
            next_page,
        }
    }
}

impl std::fmt::Debug for KmsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsApi")
            .field("base", &self.fallback_base)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl KmsApi {
    /// The API over `kms`, listening at `bound`; over TLS with `tls`.
    pub(crate) fn new(kms: Arc<Kms>, bound: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let scheme = if tls.is_some() { "https" } else { "http" };
        KmsApi {
            kms,
            fallback_base: format!("{scheme}://{bound}"),
            scheme,
            tls,
            in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            jwks: None,
            backups: Arc::default(),
        }
    }

    /// The TLS acceptor of the listener the API is served on, if it speaks TLS.
    pub(crate) fn tls(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.tls.as_ref()
    }

    /// A 404 answer in the API's error format, for a path the listener does not serve.
    pub(crate) fn not_found(
        &self,
        headers: &http::HeaderMap,
        what: std::fmt::Arguments<'_>,
    ) -> http::Response<Full<Bytes>> {
        respond(Err(ApiError::not_found(what)), &request_id_of(headers))
    }

    /// The KMS this API serves.
    pub(crate) fn kms(&self) -> &Kms {
        &self.kms
    }

    /// Whether this listener speaks TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Answers an API call on behalf of `caller`, a user authenticated another way (the
    /// console's sign-in): the same routes, IAM checks and audit entries as a signed request.
    /// Returns the JSON answer and the next page's token of a list.
    pub(crate) fn answer_as(
        &self,
        caller: &Caller,
        method: &Method,
        target: &str,
        body: &[u8],
    ) -> Result<(Value, Option<String>), ApiError> {
        answer_target(
            &self.kms,
            caller,
            method,
            target,
            body,
            &self.fallback_base,
            &self.backups,
        )
    }

    /// Whether `caller` may `verb` a resource, by the IAM policies (what the console uses to
    /// show or hide an action; the action itself is checked again when it is asked for).
    pub(crate) fn allows(
        &self,
        caller: &Caller,
        verb: Verb,
        kind: ResourceKind,
        compartment: &Ocid,
        target: Target<'_>,
    ) -> bool {
        self.kms
            .iam_view()
            .is_ok_and(|iam| caller.allowed(&iam, verb, kind, compartment, target))
    }

    /// Publishes the public half of `client_key` (this server's key for external key
    /// managers' tokens) as a JWKS at `GET /.well-known/jwks.json`, without authentication.
    /// The key is made on the first request that needs it, not at start.
    pub(crate) fn jwks(mut self, client_key: Arc<crate::external_kms::token::ClientKey>) -> Self {
        self.jwks = Some(client_key);
        self
    }

    /// Writes and reads `BUCKET` backup locations in `buckets` (sealstore's own object
    /// store); without it only pre-authenticated request URIs work.
    pub(crate) fn backup_buckets(mut self, buckets: Arc<dyn backup::BackupBuckets>) -> Self {
        self.backups = Arc::new(backup::BackupTargets::with_buckets(buckets));
        self
    }

    /// Answers at most `n` requests at once; more get 429 `TooManyRequests`.
    pub(crate) fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Where a request runs: a crypto call whose every key kms-core places inline (see
    /// [`Kms::placement`]) on the async worker; anything else — management calls write the
    /// store with fsync; HSM and EXTERNAL keys wait on a device or the network — on the
    /// blocking pool.
    fn placement(&self, parts: &http::request::Parts, body: &[u8]) -> Placement {
        if !is_crypto_call(parts) {
            return Placement::Blocking;
        }
        let Ok(keys) = serde_json::from_slice::<CryptoCallKeys>(body) else {
            return Placement::Blocking;
        };
        let mut named = [keys.key_id, keys.destination_key_id].into_iter().flatten().peekable();
        if named.peek().is_none() {
            return Placement::Blocking;
        }
        let inline = named.all(|id| {
            Ocid::parse(kms_core::ResourceType::Key, &id).is_ok_and(|id| self.kms.placement(&id) == Placement::Inline)
        });
        if inline {
            Placement::Inline
        } else {
            Placement::Blocking
        }
    }

    /// Answers one request.
    pub(crate) async fn handle<B>(&self, req: http::Request<B>) -> http::Response<Full<Bytes>>
    where
        B: hyper::body::Body + Send,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let request_id = request_id_of(req.headers());
        let (parts, body) = req.into_parts();
        if let (Some(client_key), &Method::GET, JWKS_PATH) = (&self.jwks, &parts.method, parts.uri.path()) {
            let jwks = client_key.jwks().map_err(|e| {
                tracing::error!(error = %e, "cannot publish the JWKS");
                ApiError::internal()
            });
            return respond(jwks.map(Reply::plain), &request_id);
        }
        let _counted = InFlight(self.in_flight.clone());
        if self.in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= self.max_in_flight {
            return respond(Err(ApiError::too_many_requests()), &request_id);
        }
        // Vault states from peer regions grow with their keys' versions.
        let limit = if parts.uri.path() == replication::APPLY_PATH
            || tenancy::is_tenancy_call(&parts.method, parts.uri.path())
        {
            replication::MAX_SHIPMENT
        } else if backup::is_restore(&parts.method, parts.uri.path()) {
            backup::MAX_BACKUP
        } else {
            MAX_BODY
        };
        let result = match Limited::new(body, limit).collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
                let result = if self.placement(&parts, &body) == Placement::Inline {
                    // Signature check, a cached key read and a few microseconds of AES, with
                    // the audit entry only queued: cheaper than a hop to the blocking pool.
                    self.answer(&parts, &body)
                } else {
                    let api = self.clone();
                    tokio::task::spawn_blocking(move || api.answer(&parts, &body))
                        .await
                        .unwrap_or_else(|e| {
                            tracing::error!(error = %e, "KMS API handler panicked");
                            Err(ApiError::internal())
                        })
                };
                if let Err(e) = &result {
                    tracing::debug!(%method, path, status = e.status.as_u16(), code = e.code, "KMS API request refused");
                }
                result
            }
            Err(_) => Err(ApiError::invalid(format!(
                "the request body is larger than {limit} bytes or could not be read"
            ))),
        };
        respond(result, &request_id)
    }

    fn answer(&self, parts: &http::request::Parts, body: &[u8]) -> Result<Reply, ApiError> {
        let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        // Peer regions sign with their replication keys, not as users.
        if parts.method == Method::POST && parts.uri.path() == replication::APPLY_PATH {
            return replication::apply(&self.kms, parts, target, body);
        }
        if tenancy::is_tenancy_call(&parts.method, parts.uri.path()) {
            return tenancy::answer(&self.kms, parts, target, body);
        }
        let iam = self.kms.iam_view()?;
        let source = parts
            .extensions
            .get::<crate::http_server::ClientAddr>()
            .map(|a| a.0.to_string());
        let caller = match signature::verify(
            &signature::SignedRequest {
                method: &parts.method,
                target,
                headers: &parts.headers,
                body,
            },
            &iam,
            &self.kms.tenancy_id(),
            chrono::Utc::now().timestamp(),
        ) {
            Ok(caller) => caller,
            Err(e) => {
                self.audit_unauthenticated(parts, &iam, source, &e.0);
                return Err(ApiError::not_authenticated(e.0));
            }
        };
        let caller = match source {
            Some(source) => caller.from(source),
            None => caller,
        };
        let base_url = base_url(self.scheme, &parts.headers).unwrap_or_else(|| self.fallback_base.clone());
        route_for(
            &self.kms,
            &iam,
            &caller,
            &parts.method,
            &parts.uri,
            &parts.headers,
            body,
            &base_url,
            &self.backups,
        )
    }

    /// Audits a request refused for its signature: who it claimed to be (the user of its
    /// `keyId` when that names one), from where, what it asked, why it was refused.
    fn audit_unauthenticated(&self, parts: &http::request::Parts, iam: &IamView, source: Option<String>, why: &str) {
        let claimed = signature::claimed_user(&parts.headers);
        let name = claimed.as_ref().and_then(|id| iam.user_name(id)).map(str::to_owned);
        let refusal = kms_core::AuditRefusal {
            principal: claimed.map_or_else(|| "anonymous".to_owned(), |id| id.to_string()),
            principal_name: name,
            source,
            operation: format!("{} {}", parts.method, parts.uri.path()),
            subject: Default::default(),
            reason: format!("not authenticated: {why}"),
        };
        if let Err(e) = self.kms.audit_refusal(refusal) {
            tracing::error!(error = %e, "could not audit a refused request");
        }
    }
}

/// Answers an API call of the local administrator: `sealstore kms …` over the admin socket,
/// or on a data directory no server has open. The same routes and handlers as a signed
/// request (so each operation is defined once, in its handler), without IAM policies; vault
/// endpoints in answers are under `base_url`, backups go to `backups` (a running server's
/// buckets, or the defaults). Returns the JSON answer and the next page's token of a list.
pub(crate) fn answer_local_with(
    kms: &Kms,
    base_url: &str,
    method: &Method,
    target: &str,
    body: &[u8],
    backups: &backup::BackupTargets,
) -> Result<(Value, Option<String>), ApiError> {
    answer_target(kms, &Caller::local_admin(), method, target, body, base_url, backups)
}

fn answer_target(
    kms: &Kms,
    caller: &Caller,
    method: &Method,
    target: &str,
    body: &[u8],
    base_url: &str,
    backups: &backup::BackupTargets,
) -> Result<(Value, Option<String>), ApiError> {
    let iam = kms.iam_view()?;
    let uri: http::Uri = target
        .parse()
        .map_err(|_| ApiError::invalid(format!("'{target}' is not a request target")))?;
    route_for(
        kms,
        &iam,
        caller,
        method,
        &uri,
        &HeaderMap::new(),
        body,
        base_url,
        backups,
    )
    .map(|reply| (reply.body, reply.next_page))
}

/// Routes a call of an authenticated `caller` (a signed request, or a console user).
#[allow(clippy::too_many_arguments)]
fn route_for(
    kms: &Kms,
    iam: &IamView,
    caller: &Caller,
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    base_url: &str,
    backups: &backup::BackupTargets,
) -> Result<Reply, ApiError> {
    let query: Query = uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let operation = format!("{method} {}", uri.path());
    let call = Call {
        kms,
        iam,
        caller,
        principal: caller.principal(),
        operation: &operation,
        query: &query,
        headers,
        body,
        base_url,
        backups,
    };
    routes::route(&call, method, uri.path())
}

/// `<scheme>://<host header>` when the header is a plain host[:port] (the SDK refuses
/// endpoints with anything else in the host).
fn base_url(scheme: &str, headers: &HeaderMap) -> Option<String> {
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let plain = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    plain.then(|| format!("{scheme}://{host}"))
}

/// The caller's `opc-request-id` when it is a sensible one, else a new id.
fn request_id_of(headers: &http::HeaderMap) -> String {
    headers
        .get("opc-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 98 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("system random source failed");
    data_encoding::HEXUPPER.encode(&bytes)
}

fn respond(result: Result<Reply, ApiError>, request_id: &str) -> http::Response<Full<Bytes>> {
    let (status, body, etag, next_page) = match result {
        Ok(reply) => {
            let etag = reply.etag.then(|| wire::etag(&reply.body));
            (StatusCode::OK, reply.body, etag, reply.next_page)
        }
        Err(e) => (e.status, e.body(), None, None),
    };
    let mut response = http::Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&body).expect("JSON values serialize"),
    )));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("opc-request-id", v);
    }
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        headers.insert(http::header::ETAG, v);
    }
    if let Some(v) = next_page.and_then(|p| HeaderValue::from_str(&p).ok()) {
        headers.insert("opc-next-page", v);
    }
    response
}

/// The method check shared by the routers: `allowed` lists what the path takes.
pub(crate) fn wrong_method(method: &Method, allowed: &str) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not allowed here (use {allowed})"))
}
