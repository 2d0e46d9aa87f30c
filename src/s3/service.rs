//! What every S3 request goes through around the s3s service, in one place: a request id,
//! the CORS preflight answer, the client's address, logging, and closing connections whose
//! request body was left unread.
//!
//! Each request gets an id, as AWS gives one: 16 upper-case hex digits in
//! `x-amz-request-id`, with an opaque `x-amz-id-2` beside it, on every answer (errors, a
//! HEAD's 404, 501s and authentication failures too). Error bodies carry the same id in
//! `<RequestId>` (and `x-amz-id-2` in `<HostId>`). Everything logged while serving a request
//! is inside a span holding its id, so a client's id finds the server's log lines.
//!
//! Client mistakes (4xx) and probes for operations sealstore does not implement (501) are
//! logged at debug; other 5xx answers at ERROR.

use std::net::SocketAddr;

use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Method, StatusCode};
use s3s::service::S3Service;
use s3s::{HttpError, HttpResponse, S3Error, S3ErrorCode};
use tracing::Instrument;

use super::ClientAddr;

/// In a response's extensions: answer 206 Partial Content (s3s sets it for GetObject's
/// ranges only; a HEAD of `?partNumber=N` needs it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartialContent;

/// The id of the request being served, in each request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestId(pub String);

impl RequestId {
    /// A fresh id: 64 random bits as 16 upper-case hex digits.
    pub(crate) fn new() -> Self {
        let mut bytes = [0u8; 8];
        aws_lc_rs::rand::fill(&mut bytes).expect("system random source failed");
        RequestId(data_encoding::HEXUPPER.encode(&bytes))
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

/// An opaque `x-amz-id-2` (AWS's "host id"): random, base64.
fn host_id() -> String {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).expect("system random source failed");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The s3s service as one connection serves it: `peer` is the client's address.
#[derive(Clone)]
pub(crate) struct S3Connection {
    inner: S3Service,
    peer: SocketAddr,
}

impl std::fmt::Debug for S3Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Connection").field("peer", &self.peer).finish()
    }
}

impl S3Connection {
    /// Serves the requests of a connection from `peer` with `inner`.
    pub(crate) fn new(inner: S3Service, peer: SocketAddr) -> Self {
        S3Connection { inner, peer }
    }

    async fn serve(
        self,
        mut req: http::Request<hyper::body::Incoming>,
        id: RequestId,
    ) -> Result<HttpResponse, HttpError> {
        let peer = self.peer;
        // Each request carries its client's address (SSE-C is taken from loopback only).
        req.extensions_mut().insert(ClientAddr(peer));
        req.extensions_mut().insert(id.clone());
        let has_body = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
            || req.headers().contains_key(http::header::TRANSFER_ENCODING);
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let mut response = if method == Method::OPTIONS {
            preflight(req.headers())
        } else {
            match hyper::service::Service::call(&self.inner, req).await {
                Ok(response) => response,
                Err(e) => {
                    tracing::error!(%peer, %method, path, error = ?e, "S3 request failed without an answer");
                    return Err(e);
                }
            }
        };
        if response.extensions_mut().remove::<PartialContent>().is_some() && response.status() == StatusCode::OK {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        let status = response.status();
        let host = host_id();
        if status.is_client_error() || status.is_server_error() {
            add_ids_to_error_body(&mut response, &id.0, &host);
        }
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&id.0) {
            headers.insert("x-amz-request-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(&host) {
            headers.insert("x-amz-id-2", v);
        }
        let code = status.as_u16();
        if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
            tracing::error!(%peer, %method, path, status = code, "S3 request failed");
        } else if status.is_client_error() || status.is_server_error() {
            tracing::debug!(%peer, %method, path, status = code, "S3 request refused");
        } else {
            tracing::debug!(%peer, %method, path, status = code, "S3 request");
        }
        // An error answered before the body was read leaves the body's bytes (or a client
        // still deciding whether to send them after `Expect: 100-continue`) on the
        // connection; closing it keeps the next request from being misread.
        if has_body && (status.is_client_error() || status.is_server_error()) {
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(response)
    }
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for S3Connection {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = BoxFuture<'static, Result<HttpResponse, HttpError>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let id = RequestId::new();
        // An info span: its id then shows on every line logged while serving the request,
        // ERRORs and WARNs included, at the default log level.
        let span = tracing::info_span!("s3", request_id = %id.0);
        Box::pin(self.clone().serve(req, id).instrument(span))
    }
}

/// An S3 error as an answer (status, XML body).
fn error_response(code: &'static str, status: StatusCode, message: &'static str) -> HttpResponse {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), message);
    e.set_status_code(status);
    e.to_http_response().unwrap_or_else(|_| {
        let mut response = HttpResponse::new(s3s::Body::empty());
        *response.status_mut() = status;
        response
    })
}

/// A CORS preflight (`OPTIONS`). sealstore has no CORS configuration, so it answers as AWS
/// does for a bucket without one: 403; a request without `Origin` is no preflight: 400.
fn preflight(headers: &http::HeaderMap) -> HttpResponse {
    if headers.contains_key(http::header::ORIGIN) {
        error_response(
            "AccessForbidden",
            StatusCode::FORBIDDEN,
            "CORSResponse: CORS is not enabled for this bucket.",
        )
    } else {
        error_response(
            "BadRequest",
            StatusCode::BAD_REQUEST,
            "Insufficient information. Origin request header needed.",
        )
    }
}

/// Puts `<RequestId>` and `<HostId>` into the XML error body of `response`, as AWS's error
/// bodies have them (s3s writes its error bodies whole, never streamed).
fn add_ids_to_error_body(response: &mut HttpResponse, request_id: &str, host_id: &str) {
    let Some(body) = response.body().bytes() else {
        return;
    };
    if let Some(with_ids) = with_ids(&body, request_id, host_id) {
        *response.body_mut() = s3s::Body::from(with_ids);
        response.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
}

/// `body` (an S3 XML error) with the ids before its closing `</Error>`; `None` when it is no
/// such body or already has an id.
fn with_ids(body: &Bytes, request_id: &str, host_id: &str) -> Option<Bytes> {
    const CLOSE: &[u8] = b"</Error>";
    let text = body.as_ref();
    if text.windows(b"<RequestId>".len()).any(|w| w == b"<RequestId>") {
        return None;
    }
    let at = text.windows(CLOSE.len()).rposition(|w| w == CLOSE)?;
    let mut out = Vec::with_capacity(text.len() + 160);
    out.extend_from_slice(&text[..at]);
    // Errors s3s raises itself (request validation) come without a message: give one.
    if !text.windows(b"<Message>".len()).any(|w| w == b"<Message>") {
        let message = default_message(error_code(text).unwrap_or_default());
        out.extend_from_slice(format!("<Message>{message}</Message>").as_bytes());
    }
    // Both ids are hex and base64: nothing to escape.
    out.extend_from_slice(format!("<RequestId>{request_id}</RequestId><HostId>{host_id}</HostId>").as_bytes());
    out.extend_from_slice(&text[at..]);
    Some(Bytes::from(out))
}

/// The `<Code>` of an XML error body.
fn error_code(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    Some(&text[start..end])
}

/// AWS's message for an error code (for errors raised without one). No `<`, `>` or `&`.
fn default_message(code: &str) -> &'static str {
    match code {
        "InvalidBucketName" => {
            "The specified bucket is not valid: bucket names are 3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit."
        }
        "KeyTooLongError" => "Your key is too long: object keys are at most 1024 bytes.",
        "InvalidArgument" => "Invalid Argument.",
        "InvalidRequest" => "The request is not valid.",
        "MalformedXML" => {
            "The XML you provided was not well-formed or did not validate against our published schema."
        }
        "InvalidDigest" => "The Content-MD5 you specified is not valid.",
        "MissingContentLength" => "You must provide the Content-Length HTTP header.",
        "EntityTooLarge" => "Your proposed upload exceeds the maximum allowed size.",
        "NotImplemented" => "A header or operation you provided implies functionality that is not implemented.",
        "MethodNotAllowed" => "The specified method is not allowed against this resource.",
        "AccessDenied" => "Access Denied.",
        "SignatureDoesNotMatch" => {
            "The request signature we calculated does not match the signature you provided. Check your key and signing method."
        }
        "InvalidAccessKeyId" => "The AWS access key Id you provided does not exist in our records.",
        _ => "The request was refused; the error code says why.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_without_a_message_get_one() {
        let body = Bytes::from_static(b"<?xml version=\"1.0\"?><Error><Code>KeyTooLongError</Code></Error>");
        let out = with_ids(&body, "ID", "HOST").unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains("<Message>Your key is too long"), "{text}");
        let with_message = Bytes::from_static(b"<Error><Code>X</Code><Message>m</Message></Error>");
        let out = with_ids(&with_message, "ID", "HOST").unwrap();
        assert_eq!(std::str::from_utf8(&out).unwrap().matches("<Message>").count(), 1);
    }

    #[test]
    fn request_ids_are_16_upper_case_hex_digits_and_differ() {
        let (a, b) = (RequestId::new(), RequestId::new());
        assert_eq!(a.0.len(), 16);
        assert!(a.0.bytes().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn ids_go_before_the_end_of_an_error_body_once() {
        let body =
            Bytes::from_static(b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>m</Message></Error>");
        let with = with_ids(&body, "0123456789ABCDEF", "aG9zdA==").unwrap();
        assert_eq!(
            std::str::from_utf8(&with).unwrap(),
            "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>m</Message>\
             <RequestId>0123456789ABCDEF</RequestId><HostId>aG9zdA==</HostId></Error>"
        );
        assert!(with_ids(&with, "X", "Y").is_none());
        assert!(with_ids(&Bytes::from_static(b"not xml"), "X", "Y").is_none());
    }

    #[test]
    fn preflights_without_origin_are_400_and_with_origin_403() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(preflight(&headers).status(), StatusCode::BAD_REQUEST);
        headers.insert(http::header::ORIGIN, HeaderValue::from_static("https://example.com"));
        assert_eq!(preflight(&headers).status(), StatusCode::FORBIDDEN);
    }
}
