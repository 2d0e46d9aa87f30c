//! The one HTTP client sealstore uses to call out (another sealstore's KMS API, an external
//! key manager), for callers that block: the key-provider and key-protection traits are
//! synchronous, and their callers may be on any thread, async workers included.
//!
//! Requests run on a small runtime of the client's own and the caller waits on a channel, so
//! it works from any thread ([`BlockingClient::send`], [`BlockingClient::wait`]). Async
//! callers (the remote key provider under the key service) await the same client on their
//! own runtime instead ([`BlockingClient::send_async`]), holding no thread. TLS is rustls on
//! aws-lc, trusting the system's CAs plus one optional extra certificate (a private CA, or a
//! pinned self-signed server certificate).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

/// The `host` header value for `url` (`host[:port]`, the port only when the URL names one),
/// as request signatures cover it; `None` when the URL has no host.
pub(crate) fn host_header(url: &reqwest::Url) -> Option<String> {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => Some(format!("{h}:{p}")),
        (Some(h), None) => Some(h.to_owned()),
        (None, _) => None,
    }
}

/// An HTTP answer, read to its end.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// A blocking HTTP client with its own runtime (see the module docs).
pub(crate) struct BlockingClient {
    client: reqwest::Client,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for BlockingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingClient").finish_non_exhaustive()
    }
}

impl Drop for BlockingClient {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code: let it wind down alone.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Timeouts of a [`BlockingClient`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// To establish TCP (and TLS).
    pub connect: Duration,
    /// Between reads of the answer once connected.
    pub read: Duration,
    /// For a whole request.
    pub total: Duration,
}

impl BlockingClient {
    /// A client trusting the system's CAs and `extra_ca` (PEM); `name` names its thread.
    pub(crate) fn new(extra_ca: Option<&Path>, timeouts: Timeouts, name: &str) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(extra_ca)?)
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.read)
            .timeout(timeouts.total)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|e| format!("starting the {name} HTTP client: {e}"))?;
        Ok(BlockingClient {
            client,
            runtime: Some(runtime),
        })
    }

    /// Sends one request and reads the whole answer, waiting from any thread.
    pub(crate) fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, reqwest::Error> {
        self.wait(self.send_async(method, url, headers, body))
    }

    /// Sends one request and reads the whole answer, on the caller's runtime (the future
    /// needs one: await it from async code).
    pub(crate) fn send_async(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<Answer, reqwest::Error>> + Send + 'static {
        let mut request = self.client.request(method, url).headers(headers);
        if let Some(b) = body {
            request = request.body(b);
        }
        async move {
            let response = request.send().await?;
            let (status, headers) = (response.status(), response.headers().clone());
            let body = response.bytes().await?;
            Ok(Answer { status, headers, body })
        }
    }

    /// Runs `work` (requests made with [`BlockingClient::send_async`], and whatever goes with
    /// them) on the client's runtime, waiting for it from any thread.
    pub(crate) fn wait<T: Send + 'static>(&self, work: impl std::future::Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .spawn(async move {
                let _ = tx.send(work.await);
            });
        rx.recv().expect("the client's runtime runs every task it was given")
    }
}

/// TLS for an `https` endpoint: the system's CAs, plus `extra` — a CA certificate, or the
/// server's own self-signed certificate, which is then trusted exactly as it is (pinned).
fn tls_config(extra: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot parse is the system's problem, not a reason to fail.
        let _ = roots.add(cert);
    }
    let mut pinned = Vec::new();
    if let Some(path) = extra {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| format!("reading the CA certificate {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no certificate", path.display()));
        }
        for cert in certs {
            // A self-signed server certificate usually says CA:TRUE, which webpki will not
            // accept as the server's own: it is pinned as well.
            let _ = roots.add(cert.clone());
            pinned.push(cert);
        }
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("TLS setup: {e}"))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedOrWebPki { pinned, webpki }))
        .with_no_client_auth())
}

/// Accepts a server certificate that is byte for byte one of `pinned`; anything else is
/// checked by webpki against the roots (chain, validity, host name).
#[derive(Debug)]
struct PinnedOrWebPki {
    pinned: Vec<rustls::pki_types::CertificateDer<'static>>,
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    // The handshake signatures are checked against the certificate's key either way.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// An error and its causes on one line (reqwest's own message hides the cause).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A remote server's error `message` without the words an error of kind `kind` begins with
/// ("access denied: "), when it begins with them: the error made of it says them.
pub(crate) fn said_once(message: String, kind: impl FnOnce(String) -> kms_core::KmsError) -> String {
    let prefix = kind(String::new()).to_string();
    match message.strip_prefix(&prefix) {
        Some(rest) => rest.to_owned(),
        None => message,
    }
}
