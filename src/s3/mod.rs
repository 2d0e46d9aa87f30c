//! The S3-compatible object API: s3s does the protocol (routing, SigV4, XML); this module
//! maps each operation onto the [`ObjectService`], so every byte at rest goes through
//! EncryptedStore.
//!
//! One file per operation family: `bucket` (and bucket encryption), `put`, `get` (and
//! head), `delete`, `copy`, `list`, `multipart`; server-side-encryption headers are read
//! and written in `sse`, and object-service errors become S3 errors in `error`. The [`S3`] impl at the bottom only routes to them. Requests are
//! signed with the access keys of the users in [`credentials`]. [`service`] is what every
//! request goes through around s3s (request ids, CORS preflights, logging).
//!
//! S3's own protocol rules are kept here, not in the object service: bucket names are held to
//! S3's naming rules by s3s as it routes a request (`InvalidBucketName`, with the message
//! `service` gives), and every part of a multipart upload but the last must be at least 5 MiB
//! (`multipart`).

mod bucket;
mod checksum;
mod copy;
pub(crate) mod credentials;
mod delete;
mod error;
mod get;
pub(crate) mod host;
mod list;
mod multipart;
mod put;
pub(crate) mod service;
mod sse;

pub(crate) use sse::ClientAddr;

use error::{log_body_failure, s3_err};

use std::sync::Arc;

use object_store::GetRange;
use s3s::dto::*;
use s3s::{s3_error, S3ErrorCode, S3Request, S3Response, S3Result, S3};

use crate::object::index::{ContentHeaders, ListPage, ObjectEntry};
use crate::object::{ObjectService, OpenObject, PutParams, WriteCondition};

/// The S3 face of the object service.
#[derive(Debug, Clone)]
pub(crate) struct S3Face {
    objects: Arc<ObjectService>,
    allow_insecure_sse_c: bool,
    users: Option<Arc<credentials::UserStore>>,
}

impl S3Face {
    /// Serves `objects`. Customer-provided keys (SSE-C) are taken from loopback clients only.
    pub(crate) fn new(objects: Arc<ObjectService>) -> Self {
        S3Face {
            objects,
            allow_insecure_sse_c: false,
            users: None,
        }
    }

    /// Names the users of signed requests (the `Owner` of listings) from `users`.
    pub(crate) fn users(mut self, users: Arc<credentials::UserStore>) -> Self {
        self.users = Some(users);
        self
    }

    /// The `Owner` listings report: the user who signed the request (every user may use every
    /// bucket, so the caller is who listings name). `None` for anonymous requests.
    fn owner(&self, credentials: Option<&s3s::auth::Credentials>) -> Option<Owner> {
        let access_key = &credentials?.access_key;
        let user = match self.users.as_ref()?.by_access_key(access_key) {
            Ok(user) => user?,
            Err(e) => {
                tracing::error!(error = %e, "S3 user lookup failed");
                return None;
            }
        };
        Some(Owner {
            id: Some(user.canonical_id()),
            display_name: Some(user.name),
        })
    }

    /// Also takes customer-provided keys from clients that are not on loopback, over plain
    /// HTTP: for a server behind a TLS-terminating proxy.
    pub(crate) fn allow_insecure_sse_c(mut self, allow: bool) -> Self {
        self.allow_insecure_sse_c = allow;
        self
    }
}

fn etag(hex: &str) -> ETag {
    ETag::Strong(hex.to_owned())
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp::from(std::time::SystemTime::from(t))
}

/// The digest of a `Content-MD5` header, or `InvalidDigest`.
fn content_md5(header: &Option<String>) -> S3Result<Option<Vec<u8>>> {
    use base64::Engine;
    header
        .as_ref()
        .map(|md5| {
            base64::engine::general_purpose::STANDARD
                .decode(md5)
                .ok()
                .filter(|d| d.len() == 16)
                .ok_or_else(|| s3_error!(InvalidDigest, "the Content-MD5 you specified is not valid"))
        })
        .transpose()
}

/// The condition of a conditional write: `If-None-Match: *` or `If-Match` (S3 supports no
/// other `If-None-Match` on writes).
fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<Option<WriteCondition>> {
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(s3_error!(
            NotImplemented,
            "If-Match and If-None-Match cannot be combined on a write"
        )),
        (None, Some(ETagCondition::Any)) => Ok(Some(WriteCondition::IfNoneMatch)),
        (None, Some(ETagCondition::ETag(_))) => {
            Err(s3_error!(NotImplemented, "on a write, If-None-Match only takes *"))
        }
        (Some(ETagCondition::Any), None) => Ok(Some(WriteCondition::IfMatch(None))),
        (Some(ETagCondition::ETag(tag)), None) => Ok(Some(WriteCondition::IfMatch(Some(tag.value().to_owned())))),
        (None, None) => Ok(None),
    }
}

/// An `If-Match`/`If-None-Match` header of a request whose input type does not carry it
/// (CopyObject's destination conditions).
fn header_condition(headers: &http::HeaderMap, name: &str) -> S3Result<Option<ETagCondition>> {
    headers
        .get(name)
        .map(|v| {
            let v = v
                .to_str()
                .map_err(|_| s3_error!(InvalidArgument, "the {} header is not valid", name))?
                .trim();
            Ok(if v == "*" {
                ETagCondition::Any
            } else {
                ETagCondition::ETag(ETag::Strong(v.trim_matches('"').to_owned()))
            })
        })
        .transpose()
}

/// Requests that write an object (PutObject, CreateMultipartUpload, CopyObject): what they
/// say about it besides its bytes.
trait WriteRequest {
    /// The object's content type, user metadata, standard headers and encryption, with
    /// the write's `condition` and `expected_md5`.
    fn put_params(
        &self,
        face: &S3Face,
        customer: Option<&sse::SseCustomer>,
        condition: Option<WriteCondition>,
        expected_md5: Option<Vec<u8>>,
    ) -> S3Result<PutParams>;
}

macro_rules! write_request {
    ($($input:ty),*) => {$(
        impl WriteRequest for $input {
            fn put_params(
                &self,
                face: &S3Face,
                customer: Option<&sse::SseCustomer>,
                condition: Option<WriteCondition>,
                expected_md5: Option<Vec<u8>>,
            ) -> S3Result<PutParams> {
                Ok(PutParams {
                    content_type: self.content_type.clone(),
                    user_metadata: self.metadata.clone().unwrap_or_default().into_iter().collect(),
                    headers: ContentHeaders {
                        cache_control: self.cache_control.clone(),
                        content_disposition: self.content_disposition.clone(),
                        content_encoding: self.content_encoding.clone(),
                        content_language: self.content_language.clone(),
                        expires: self.expires.as_ref().and_then(http_date),
                    },
                    condition,
                    expected_md5,
                    encryption: sse::encryption_request(face, &self.server_side_encryption, &self.ssekms_key_id, customer)?,
                })
            }
        }
    )*};
}
write_request!(PutObjectInput, CreateMultipartUploadInput, CopyObjectInput);

/// A timestamp as an HTTP date (`Expires` is kept as the text a response sends).
fn http_date(t: &Timestamp) -> Option<String> {
    let mut text = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut text).ok()?;
    String::from_utf8(text).ok()
}

/// A stored `Expires` as a timestamp for the response.
fn stored_expires(headers: &ContentHeaders) -> Option<Timestamp> {
    headers
        .expires
        .as_deref()
        .and_then(|e| Timestamp::parse(TimestampFormat::HttpDate, e).ok())
}

fn empty_body() -> StreamingBlob {
    StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>())
}

#[async_trait::async_trait]
impl S3 for S3Face {
    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        bucket::list_buckets(self, _req).await
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        bucket::create_bucket(self, req).await
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        bucket::head_bucket(self, req).await
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        bucket::delete_bucket(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        bucket::get_bucket_location(self, req).await
    }

    async fn put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        bucket::put_bucket_encryption(self, req).await
    }

    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        bucket::get_bucket_encryption(self, req).await
    }

    async fn delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        bucket::delete_bucket_encryption(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        multipart::upload_part_copy(self, req).await
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        put::put_object(self, req).await
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        get::get_object(self, req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        get::head_object(self, req).await
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        delete::delete_object(self, req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        copy::copy_object(self, req).await
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        delete::delete_objects(self, req).await
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        list::list_objects(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        list::list_object_versions(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create_multipart_upload(self, req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(self, req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_multipart_uploads(self, req).await
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        list::list_objects_v2(self, req).await
    }
}
