//! The signed channel between regions, shared by vault shipments ([`super::shipper`],
//! [`super::replication::apply`]) and tenancy calls ([`super::tenancy`]): requests are
//! signed with the sending region's replication key (`keyId="region/<name>"`) and checked
//! against the registered regions; failed deliveries back off per region.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use kms_core::replication::Region;
use kms_core::Kms;

use super::error::ApiError;
use super::signature::{self, RequestSigner, SignedRequest};
use crate::http_client::{error_chain, host_header, BlockingClient, Timeouts};

/// An HTTP client for calls to peer regions, trusting `extra_ca` besides the system's CAs.
/// How long a server's lease on a shipper lasts unrenewed: when that server stops, another
/// of its fleet takes the shipping over within this.
pub(crate) const SHIPPER_LEASE: Duration = Duration::from_secs(15);

/// A shipper's loop, until `stop` is set: while this server holds the shipper's lease
/// (`task`), runs `pass` (true: some shipment waits for a retry soon), then waits for new
/// work, 100 ms after a pass that left some waiting, else up to a second. A failed pass (the
/// store unreachable, say) is logged and tried again: nothing is lost, the outbox stays.
pub(crate) fn run_passes(
    kms: &Kms,
    stop: &std::sync::atomic::AtomicBool,
    task: &'static str,
    mut pass: impl FnMut() -> anyhow::Result<bool>,
) {
    let mut lease = crate::fleet::Lease::new(task, SHIPPER_LEASE, kms.is_shared());
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        let generation = kms.replication_generation();
        let wait = match lease.held(|name, holder, ttl| kms.lease(name, holder, ttl)) {
            false => Duration::from_secs(1),
            true => match pass() {
                Ok(true) => Duration::from_millis(100),
                Ok(false) => Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(task, error = %e, "a replication pass failed; retrying in a second");
                    Duration::from_secs(1)
                }
            },
        };
        kms.wait_for_replication_work(generation, wait);
    }
}

pub(crate) fn client(extra_ca: Option<&std::path::Path>, name: &str) -> anyhow::Result<BlockingClient> {
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(10),
        total: Duration::from_secs(30),
    };
    BlockingClient::new(extra_ca, timeouts, name).map_err(anyhow::Error::msg)
}

/// This region's request signer (its replication signing key).
pub(crate) fn signer(kms: &Kms) -> anyhow::Result<RequestSigner> {
    let identity = kms.replication_identity()?;
    RequestSigner::from_pkcs8(format!("region/{}", kms.region()), identity.signing_pkcs8())
        .map_err(|e| anyhow::anyhow!("replication signing key: {e}"))
}

/// A peer's answer: its status and body (any status; [`Answer::success`] makes an error of
/// a failure).
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    url: String,
}

impl Answer {
    /// The body of a 2xx answer; otherwise an error with the peer's message.
    pub(crate) fn success(self) -> anyhow::Result<Bytes> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        anyhow::bail!("{} answered {}: {message}", self.url, self.status)
    }

    /// The OCI error code of a JSON error answer.
    pub(crate) fn code(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
    }
}

/// POSTs `body` to `path` of `region`, signed by this region.
pub(crate) fn post(
    http: &BlockingClient,
    signer: &RequestSigner,
    region: &Region,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<Answer> {
    let url = reqwest::Url::parse(&region.endpoint)?;
    let host = host_header(&url)
        .ok_or_else(|| anyhow::anyhow!("region {} has no host in {}", region.name, region.endpoint))?;
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, HeaderValue::from_str(&host)?);
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    signer
        .sign(&Method::POST, path, &mut headers, Some(&body))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let url = format!("{}{path}", region.endpoint.trim_end_matches('/'));
    let answer = http
        .send(Method::POST, &url, headers, Some(body))
        .map_err(|e| anyhow::anyhow!("{url}: {}", error_chain(&e)))?;
    Ok(Answer {
        status: answer.status,
        body: answer.body,
        url,
    })
}

/// The registered region that signed a request (401 when none did).
pub(crate) fn verify(kms: &Kms, parts: &http::request::Parts, target: &str, body: &[u8]) -> Result<String, ApiError> {
    let regions = kms.list_regions()?;
    signature::verify_region(
        &SignedRequest {
            method: &parts.method,
            target,
            headers: &parts.headers,
            body,
        },
        &regions,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|e| ApiError::not_authenticated(e.0))
}

/// Retries per region after a failed delivery: 200 ms, doubling up to 5 s, reset by a
/// success.
#[derive(Debug, Default)]
pub(crate) struct Backoff(HashMap<String, (Instant, Duration)>);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(5);

    /// Whether `region` is still waiting out its last failure.
    pub(crate) fn waiting(&self, region: &str) -> bool {
        self.0.get(region).is_some_and(|(until, _)| Instant::now() < *until)
    }

    /// A delivery to `region` succeeded.
    pub(crate) fn succeeded(&mut self, region: &str) {
        self.0.remove(region);
    }

    /// A delivery to `region` failed: how long it now waits.
    pub(crate) fn failed(&mut self, region: &str) -> Duration {
        let delay = self.0.get(region).map_or(Self::FIRST, |(_, d)| (*d * 2).min(Self::MAX));
        self.0.insert(region.to_owned(), (Instant::now() + delay, delay));
        delay
    }
}
