//! Server-side encryption headers: what a request asks for (SSE-S3, SSE-KMS, SSE-C), the
//! checks AWS makes on them, and the `x-amz-server-side-encryption*` headers of responses.
//!
//! Everything is encrypted at rest whatever the headers say; they only choose the key.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Result};

use super::S3Face;
use crate::object::customer_key::CustomerKey;
use crate::object::encryption::{Encryption, EncryptionRequest, UploadEncryption};

/// The address of the client a request came from, put in each request's extensions by the
/// server. SSE-C keys are only accepted from loopback clients (or with
/// `--allow-insecure-sse-c`), since this server speaks plain HTTP.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// A customer-provided key as a request gave it.
#[derive(Debug, Clone)]
pub(super) struct SseCustomer {
    pub key: Arc<CustomerKey>,
    /// Base64 MD5 of the key, echoed in responses.
    pub key_md5: String,
}

/// Operation inputs with SSE-C parameters: algorithm, key, key MD5.
pub(super) trait CustomerKeyParams {
    fn customer_key_params(&self) -> [&Option<String>; 3];
}

/// Operation inputs with copy-source SSE-C parameters.
pub(super) trait CopySourceKeyParams {
    fn copy_source_key_params(&self) -> [&Option<String>; 3];
}

macro_rules! customer_key_params {
    ($($input:ty),*) => {$(
        impl CustomerKeyParams for $input {
            fn customer_key_params(&self) -> [&Option<String>; 3] {
                [&self.sse_customer_algorithm, &self.sse_customer_key, &self.sse_customer_key_md5]
            }
        }
    )*};
}
customer_key_params!(
    PutObjectInput,
    GetObjectInput,
    HeadObjectInput,
    CopyObjectInput,
    CreateMultipartUploadInput,
    UploadPartInput,
    UploadPartCopyInput,
    CompleteMultipartUploadInput
);

macro_rules! copy_source_key_params {
    ($($input:ty),*) => {$(
        impl CopySourceKeyParams for $input {
            fn copy_source_key_params(&self) -> [&Option<String>; 3] {
                [
                    &self.copy_source_sse_customer_algorithm,
                    &self.copy_source_sse_customer_key,
                    &self.copy_source_sse_customer_key_md5,
                ]
            }
        }
    )*};
}
copy_source_key_params!(CopyObjectInput, UploadPartCopyInput);

/// The customer key (SSE-C) a request supplies, if any.
pub(super) fn request_customer_key<T: CustomerKeyParams>(
    face: &S3Face,
    req: &S3Request<T>,
) -> S3Result<Option<SseCustomer>> {
    let [algorithm, key, key_md5] = req.input.customer_key_params();
    customer_key(face, &req.extensions, algorithm, key, key_md5)
}

/// The customer key (SSE-C) a copy supplies for its source, if any.
pub(super) fn copy_source_customer_key<T: CopySourceKeyParams>(
    face: &S3Face,
    req: &S3Request<T>,
) -> S3Result<Option<SseCustomer>> {
    let [algorithm, key, key_md5] = req.input.copy_source_key_params();
    customer_key(face, &req.extensions, algorithm, key, key_md5)
}

/// SSE-C parameters checked as AWS checks them.
fn customer_key(
    face: &S3Face,
    extensions: &http::Extensions,
    algorithm: &Option<String>,
    key: &Option<String>,
    key_md5: &Option<String>,
) -> S3Result<Option<SseCustomer>> {
    let (algorithm, key) = match (algorithm, key) {
        (None, None) if key_md5.is_none() => return Ok(None),
        (Some(a), Some(k)) => (a, k),
        (None, _) => {
            return Err(s3_error!(
                InvalidArgument,
                "requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm"
            ))
        }
        (Some(_), None) => {
            return Err(s3_error!(
                InvalidArgument,
                "requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key"
            ))
        }
    };
    if algorithm != "AES256" {
        return Err(s3_error!(
            InvalidEncryptionAlgorithmError,
            "the encryption request you specified is not valid: the only customer key algorithm is AES256"
        ));
    }
    let secure = face.allow_insecure_sse_c
        || extensions
            .get::<ClientAddr>()
            .is_some_and(|ClientAddr(addr)| addr.ip().is_loopback());
    if !secure {
        return Err(s3_error!(
            InvalidRequest,
            "requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection; \
             this server speaks plain HTTP, so it takes them only from clients on loopback \
             (start it with --allow-insecure-sse-c behind a TLS proxy)"
        ));
    }
    let bytes = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_err(|_| s3_error!(InvalidArgument, "the secret key is not valid base64"))?,
    );
    let customer = CustomerKey::from_bytes(&bytes).map_err(|_| {
        s3_error!(
            InvalidArgument,
            "the secret key was invalid for the specified algorithm: AES256 needs 256 bits"
        )
    })?;
    let digest = Md5::digest(bytes.as_slice());
    let computed = base64::engine::general_purpose::STANDARD.encode(digest);
    // AWS requires the key's MD5 (it guards against a key garbled on its way).
    let Some(given) = key_md5 else {
        return Err(s3_error!(
            InvalidArgument,
            "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key."
        ));
    };
    if *given != computed {
        return Err(s3_error!(
            InvalidArgument,
            "the calculated MD5 hash of the key did not match the hash that was provided"
        ));
    }
    Ok(Some(SseCustomer {
        key: Arc::new(customer),
        key_md5: computed,
    }))
}

/// What a write asks for: `x-amz-server-side-encryption` (`AES256` or `aws:kms`), the KMS
/// key id (an OCID or `alias/NAME`), or a customer key. Conflicting combinations are 400s.
pub(super) fn encryption_request(
    face: &S3Face,
    sse: &Option<ServerSideEncryption>,
    kms_key_id: &Option<String>,
    customer: Option<&SseCustomer>,
) -> S3Result<EncryptionRequest> {
    if let Some(customer) = customer {
        if sse.is_some() || kms_key_id.is_some() {
            return Err(s3_error!(
                InvalidArgument,
                "Server Side Encryption with Customer provided key is incompatible with the encryption method specified"
            ));
        }
        return Ok(EncryptionRequest::Customer(customer.key.clone()));
    }
    match (sse.as_ref().map(|s| s.as_str()), kms_key_id) {
        (None, None) => Ok(EncryptionRequest::BucketDefault),
        (Some(ServerSideEncryption::AES256), None) => Ok(EncryptionRequest::ServiceKey),
        (Some(ServerSideEncryption::AWS_KMS), None) => Ok(EncryptionRequest::Kms(None)),
        (Some(ServerSideEncryption::AWS_KMS), Some(id)) => Ok(EncryptionRequest::Kms(Some(
            face.objects.resolve_kms_key(id).map_err(super::s3_err)?,
        ))),
        (_, Some(_)) => Err(s3_error!(
            InvalidArgument,
            "Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms"
        )),
        (Some(other), None) => Err(s3_error!(
            InvalidArgument,
            "the encryption method specified is not supported: '{}' (use AES256, aws:kms, or a customer-provided key)",
            other
        )),
    }
}

/// The `x-amz-server-side-encryption*` response headers for an object or upload.
#[derive(Debug, Default)]
pub(super) struct SseHeaders {
    pub server_side_encryption: Option<ServerSideEncryption>,
    pub ssekms_key_id: Option<String>,
    pub sse_customer_algorithm: Option<String>,
    pub sse_customer_key_md5: Option<String>,
}

impl SseHeaders {
    fn kms(key_id: &kms_core::Ocid, sse_kms: bool) -> Self {
        if sse_kms {
            SseHeaders {
                server_side_encryption: Some(ServerSideEncryption::from_static(ServerSideEncryption::AWS_KMS)),
                ssekms_key_id: Some(key_id.to_string()),
                ..Default::default()
            }
        } else {
            SseHeaders {
                server_side_encryption: Some(ServerSideEncryption::from_static(ServerSideEncryption::AES256)),
                ..Default::default()
            }
        }
    }

    fn customer(customer: Option<&SseCustomer>) -> Self {
        SseHeaders {
            sse_customer_algorithm: Some("AES256".into()),
            sse_customer_key_md5: customer.map(|c| c.key_md5.clone()),
            ..Default::default()
        }
    }

    /// For a stored object (`customer`: the key the request gave, for its MD5).
    pub(super) fn of_object(encryption: &Encryption, customer: Option<&SseCustomer>) -> Self {
        match encryption {
            Encryption::Kms { key_id, sse_kms, .. } => Self::kms(key_id, *sse_kms),
            Encryption::Customer { .. } => Self::customer(customer),
        }
    }

    /// For a multipart upload and its parts.
    pub(super) fn of_upload(encryption: &UploadEncryption, customer: Option<&SseCustomer>) -> Self {
        match encryption {
            UploadEncryption::Kms { key_id, sse_kms } => Self::kms(key_id, *sse_kms),
            UploadEncryption::Customer { .. } => Self::customer(customer),
        }
    }
}

/// Operation outputs with `x-amz-server-side-encryption*` headers.
pub(super) trait SseOutput {
    /// The output with `sse`'s headers.
    fn with_sse(self, sse: SseHeaders) -> Self;
}

macro_rules! sse_output {
    ($($output:ty),*) => {$(
        impl SseOutput for $output {
            fn with_sse(self, sse: SseHeaders) -> Self {
                Self {
                    server_side_encryption: sse.server_side_encryption,
                    ssekms_key_id: sse.ssekms_key_id,
                    sse_customer_algorithm: sse.sse_customer_algorithm,
                    sse_customer_key_md5: sse.sse_customer_key_md5,
                    ..self
                }
            }
        }
    )*};
}
sse_output!(
    PutObjectOutput,
    GetObjectOutput,
    HeadObjectOutput,
    CopyObjectOutput,
    CreateMultipartUploadOutput,
    UploadPartOutput,
    UploadPartCopyOutput
);

impl SseOutput for CompleteMultipartUploadOutput {
    // S3 reports no SSE-C headers on completion.
    fn with_sse(self, sse: SseHeaders) -> Self {
        Self {
            server_side_encryption: sse.server_side_encryption,
            ssekms_key_id: sse.ssekms_key_id,
            ..self
        }
    }
}
