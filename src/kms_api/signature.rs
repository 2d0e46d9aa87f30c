//! OCI request signatures (draft-cavage HTTP signatures, `rsa-sha256`), as the `oci` CLI and
//! SDKs send them:
//!
//! ```text
//! authorization: Signature algorithm="rsa-sha256",headers="date (request-target) host …",
//!                keyId="<tenancy>/<user>/<fingerprint>",signature="<base64>",version="1"
//! ```
//!
//! The signing string is one `name: value` line per listed header, `(request-target)` being
//! `<lower-case method> <path?query exactly as received>`. Requests with a body must also sign
//! `content-length` and `x-content-sha256` (base64 SHA-256 of the body, checked here). The
//! `date` must be within five minutes of the server's clock, which bounds replays.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kms_core::audit::AuditSubject;
use kms_core::iam::{IamView, ResourceKind, Target, Verb};
use kms_core::{Ocid, Principal, ResourceType};

/// How far a request's `date` may be from the server's clock.
pub(crate) const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Who makes a call: a user of the tenancy (by a request signature or a console session), or
/// the operator of this machine through the admin socket.
#[derive(Debug, Clone)]
pub(crate) struct Caller(Who, Option<String>);

#[derive(Debug, Clone)]
enum Who {
    User { id: Ocid, name: String },
    LocalAdmin,
}

impl Caller {
    /// A user of the tenancy, authenticated by a request signature or a console session.
    pub(crate) fn user(id: Ocid, name: String) -> Self {
        Caller(Who::User { id, name }, None)
    }

    /// The same caller, calling from `source` (a client address; `console 192.0.2.7:50412`
    /// for the console), which refusals are audited with.
    pub(crate) fn from(mut self, source: impl Into<String>) -> Self {
        self.1 = Some(source.into());
        self
    }

    /// Where the call came from, when known.
    pub(crate) fn source(&self) -> Option<&str> {
        self.1.as_deref()
    }

    /// The operator of the machine that owns the data directory (`sealstore kms …` through
    /// the admin socket, whose peer is checked to be this process's user): every operation,
    /// no IAM policy in the way, recorded in the audit log as `local-admin`.
    pub(crate) fn local_admin() -> Self {
        Caller(Who::LocalAdmin, None)
    }

    /// Who the audit log names.
    pub(crate) fn principal(&self) -> Principal {
        match &self.0 {
            Who::User { id, .. } => Principal::new(id.as_str()),
            Who::LocalAdmin => Principal::local_admin(),
        }
    }

    /// A name for logs.
    pub(crate) fn name(&self) -> &str {
        match &self.0 {
            Who::User { name, .. } => name,
            Who::LocalAdmin => "local-admin",
        }
    }

    /// Whether the IAM policies in `iam` let the caller `verb` this resource.
    pub(crate) fn allowed(
        &self,
        iam: &IamView,
        verb: Verb,
        kind: ResourceKind,
        compartment: &Ocid,
        target: Target<'_>,
    ) -> bool {
        match &self.0 {
            Who::User { id, .. } => iam.allows(id, verb, kind, compartment, target),
            Who::LocalAdmin => true,
        }
    }

    /// Audits a call of this caller refused by the IAM policies.
    pub(crate) fn audit_denied(&self, kms: &kms_core::Kms, operation: String, subject: AuditSubject, reason: String) {
        let refusal = kms_core::AuditRefusal {
            principal: self.principal().as_str().to_owned(),
            principal_name: Some(self.name().to_owned()),
            source: self.source().map(str::to_owned),
            operation,
            subject,
            reason,
        };
        if let Err(e) = kms.audit_refusal(refusal) {
            tracing::error!(error = %e, "could not audit a refused call");
        }
    }
}

/// Why a request is not authenticated. The message goes back to the client: it says what is
/// wrong with the request, never anything about keys the server holds.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NotAuthenticated(pub String);

fn fail(msg: impl Into<String>) -> NotAuthenticated {
    NotAuthenticated(msg.into())
}

/// The parts of a request the signature covers.
#[derive(Debug)]
pub(crate) struct SignedRequest<'a> {
    /// The HTTP method.
    pub method: &'a http::Method,
    /// Path and query exactly as received.
    pub target: &'a str,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
    /// The whole body.
    pub body: &'a [u8],
}

/// Checks a request's signature: the parts every signed request shares (headers covered,
/// date window, body hash), then the signature itself with the key `lookup` finds for the
/// `keyId` (which also says who that is).
fn verify_with<T>(
    req: &SignedRequest<'_>,
    now_unix_secs: i64,
    lookup: impl FnOnce(&str) -> Result<(std::sync::Arc<aws_lc_rs::signature::ParsedPublicKey>, T), NotAuthenticated>,
) -> Result<T, NotAuthenticated> {
    let header = req
        .headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| fail("the request is not signed (no authorization header)"))?
        .to_str()
        .map_err(|_| fail("the authorization header is not text"))?;
    let params = parse_authorization(header)?;
    let param = |name: &str| params.get(name).map(String::as_str);

    if let Some(alg) = param("algorithm") {
        if !alg.eq_ignore_ascii_case("rsa-sha256") {
            return Err(fail(format!(
                "signature algorithm '{alg}' is not supported (use rsa-sha256)"
            )));
        }
    }
    if let Some(version) = param("version") {
        if version != "1" {
            return Err(fail(format!("signature version '{version}' is not supported (use 1)")));
        }
    }
    let key_id = param("keyId").ok_or_else(|| fail("the signature has no keyId"))?;
    let signature = param("signature").ok_or_else(|| fail("the signature has no signature value"))?;
    let signed: Vec<String> = param("headers")
        .unwrap_or("date")
        .split_ascii_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();

    let mut required = vec!["(request-target)", "host"];
    let date_header = if signed.iter().any(|h| h == "x-date") {
        "x-date"
    } else {
        "date"
    };
    required.push(date_header);
    let has_body = matches!(
        *req.method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH
    );
    if has_body {
        required.extend(["content-length", "x-content-sha256"]);
    }
    for name in required {
        if !signed.iter().any(|h| h == name) {
            return Err(fail(format!("the signature must cover the '{name}' header")));
        }
    }

    // The date bounds replays: checked before the (more expensive) signature.
    let date = header_str(req.headers, date_header)?;
    let sent = chrono::DateTime::parse_from_rfc2822(date)
        .map_err(|_| fail(format!("the {date_header} header '{date}' is not an HTTP date")))?
        .timestamp();
    if (sent - now_unix_secs).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(fail(format!(
            "the request's {date_header} ({date}) is more than {} minutes from the server's clock",
            MAX_CLOCK_SKEW_SECS / 60
        )));
    }
    if has_body {
        let declared = header_str(req.headers, "content-length")?;
        if declared.parse::<usize>().ok() != Some(req.body.len()) {
            return Err(fail("content-length does not match the body"));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, req.body);
        if header_str(req.headers, "x-content-sha256")? != B64.encode(digest.as_ref()) {
            return Err(fail("x-content-sha256 does not match the body"));
        }
    }

    let (public_key, who) = lookup(key_id)?;
    let signing_string = signing_string(&signed, req.method, req.target, req.headers)?;
    let signature = B64.decode(signature).map_err(|_| fail("the signature is not base64"))?;
    public_key
        .verify_sig(signing_string.as_bytes(), &signature)
        .map_err(|_| fail("the request signature does not verify"))?;
    Ok(who)
}

/// Checks the request's signature against the keys in `iam` and returns who signed it.
pub(crate) fn verify(
    req: &SignedRequest<'_>,
    iam: &IamView,
    tenancy: &Ocid,
    now_unix_secs: i64,
) -> Result<Caller, NotAuthenticated> {
    verify_with(req, now_unix_secs, |key_id| {
        let mut parts = key_id.split('/');
        let (Some(key_tenancy), Some(user), Some(fingerprint), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fail("keyId must be <tenancy id>/<user id>/<key fingerprint>"));
        };
        if key_tenancy != tenancy.as_str() {
            return Err(fail("keyId names another tenancy"));
        }
        let user_id = Ocid::parse(ResourceType::User, user).map_err(|_| fail("keyId does not name a user id"))?;
        let key = iam
            .signing_key(&user_id, fingerprint)
            .ok_or_else(|| fail("the signing key is unknown (wrong user, fingerprint or tenancy)"))?;
        Ok((key.public_key, Caller::user(user_id, key.user_name)))
    })
}

/// The user a request's `authorization` header claims to sign as (its `keyId`'s user id), for
/// the audit entry of a refused request; nothing is verified here.
pub(crate) fn claimed_user(headers: &http::HeaderMap) -> Option<Ocid> {
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let key_id = auth.split("keyId=\"").nth(1)?.split('"').next()?;
    Ocid::parse(ResourceType::User, key_id.split('/').nth(1)?).ok()
}

/// Checks a request signed by a peer region (`keyId="region/<name>"`) against the signing
/// keys of the registered `regions`; returns the region's name.
pub(crate) fn verify_region(
    req: &SignedRequest<'_>,
    regions: &[kms_core::replication::Region],
    now_unix_secs: i64,
) -> Result<String, NotAuthenticated> {
    verify_with(req, now_unix_secs, |key_id| {
        let name = key_id
            .strip_prefix("region/")
            .ok_or_else(|| fail("keyId must be region/<name>"))?;
        let region = regions
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| fail(format!("region {name} is not registered here")))?;
        let der = B64
            .decode(&region.signing_key)
            .map_err(|_| fail("the region's registered key is unusable"))?;
        let key = aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, &der)
            .map_err(|_| fail("the region's registered key is unusable"))?;
        Ok((std::sync::Arc::new(key), name.to_owned()))
    })
}

/// The string a signature covers: one `name: value` line per signed header, in order.
fn signing_string(
    signed: &[impl AsRef<str>],
    method: &http::Method,
    target: &str,
    headers: &http::HeaderMap,
) -> Result<String, NotAuthenticated> {
    let mut lines = Vec::with_capacity(signed.len());
    for name in signed {
        let name = name.as_ref();
        lines.push(if name == "(request-target)" {
            format!("(request-target): {} {target}", method.as_str().to_ascii_lowercase())
        } else {
            format!("{name}: {}", header_str(headers, name)?)
        });
    }
    Ok(lines.join("\n"))
}

/// Signs requests as one user's API key, the way the OCI SDKs do; the client half of
/// [`verify`], used by sealstore's remote key provider.
pub(crate) struct RequestSigner {
    key_id: String,
    key: aws_lc_rs::signature::RsaKeyPair,
}

impl std::fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Why a signing key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadSigningKey(String);

impl RequestSigner {
    /// A signer for `keyId="<tenancy>/<user>/<fingerprint>"` with the RSA private key in
    /// `pem` (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`, unencrypted).
    pub(crate) fn new(tenancy: &str, user: &str, fingerprint: &str, pem: &[u8]) -> Result<Self, BadSigningKey> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::PrivateKeyDer;
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
            BadSigningKey(format!(
                "not an unencrypted PEM private key ({e}); sealstore cannot use pass-phrase protected keys"
            ))
        })?;
        let key = match &der {
            PrivateKeyDer::Pkcs1(k) => aws_lc_rs::signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => aws_lc_rs::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            _ => return Err(BadSigningKey("the API key must be an RSA key".into())),
        }
        .map_err(|e| BadSigningKey(format!("the API key is not a usable RSA key: {e}")))?;
        Ok(RequestSigner {
            key_id: format!("{tenancy}/{user}/{fingerprint}"),
            key,
        })
    }

    /// A signer with keyId `key_id` and the RSA key in `pkcs8` (DER): how regions sign
    /// replication requests (`region/<name>`).
    pub(crate) fn from_pkcs8(key_id: String, pkcs8: &[u8]) -> Result<Self, BadSigningKey> {
        let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(pkcs8)
            .map_err(|e| BadSigningKey(format!("not a usable RSA key: {e}")))?;
        Ok(RequestSigner { key_id, key })
    }

    /// Adds `date`, `x-content-sha256`, `content-length` (with a body) and the
    /// `authorization` signature to `headers`. `host` must already be there; `target` is the
    /// path and query exactly as they will be sent.
    pub(crate) fn sign(
        &self,
        method: &http::Method,
        target: &str,
        headers: &mut http::HeaderMap,
        body: Option<&[u8]>,
    ) -> Result<(), BadSigningKey> {
        use http::HeaderValue;
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        headers.insert(
            http::header::DATE,
            HeaderValue::from_str(&date).expect("a date is a header value"),
        );
        let mut signed = vec!["date", "(request-target)", "host"];
        if let Some(body) = body {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
            let digest = HeaderValue::from_str(&B64.encode(digest.as_ref())).expect("base64 is a header value");
            headers.insert("x-content-sha256", digest);
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            signed.extend(["x-content-sha256", "content-type", "content-length"]);
        }
        let text = signing_string(&signed, method, target, headers).map_err(|e| BadSigningKey(e.0))?;
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                text.as_bytes(),
                &mut signature,
            )
            .map_err(|_| BadSigningKey("signing failed".into()))?;
        let authorization = format!(
            "Signature version=\"1\",headers=\"{}\",keyId=\"{}\",algorithm=\"rsa-sha256\",signature=\"{}\"",
            signed.join(" "),
            self.key_id,
            B64.encode(&signature)
        );
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&authorization).map_err(|_| BadSigningKey("the keyId is not header text".into()))?,
        );
        Ok(())
    }
}

fn header_str<'a>(headers: &'a http::HeaderMap, name: &str) -> Result<&'a str, NotAuthenticated> {
    headers
        .get(name)
        .ok_or_else(|| fail(format!("the signed header '{name}' is missing")))?
        .to_str()
        .map_err(|_| fail(format!("the header '{name}' is not text")))
}

/// Parses `Signature k1="v1",k2="v2"`; parameters may come in any order (the SDK sorts them).
fn parse_authorization(header: &str) -> Result<HashMap<String, String>, NotAuthenticated> {
    let rest = header
        .strip_prefix("Signature ")
        .ok_or_else(|| fail("the authorization header must be an OCI request signature ('Signature …')"))?;
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| fail("malformed signature parameters"))?;
        let (value, after) = after
            .split_once('"')
            .ok_or_else(|| fail("malformed signature parameters"))?;
        params.insert(name.trim().to_owned(), value.to_owned());
        rest = after.trim_start().strip_prefix(',').unwrap_or(after).trim_start();
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_parse_in_any_order() {
        let p = parse_authorization(
            r#"Signature algorithm="rsa-sha256",headers="date (request-target) host",keyId="t/u/f",signature="c2ln",version="1""#,
        )
        .unwrap();
        assert_eq!(p["keyId"], "t/u/f");
        assert_eq!(p["headers"], "date (request-target) host");
        assert_eq!(p["signature"], "c2ln");
        assert!(parse_authorization("Bearer abc").is_err());
        assert!(parse_authorization(r#"Signature keyId="unterminated"#).is_err());
    }
}
