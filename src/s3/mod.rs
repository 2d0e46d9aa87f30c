//! The S3-compatible object API: s3s does the protocol (routing, SigV4, XML); this module
//! maps each operation onto the [`ObjectService`], so every byte at rest goes through
//! EncryptedStore.
//!
//! So far: bucket lifecycle, PutObject, GetObject (ranges), HeadObject, DeleteObject,
//! DeleteObjects, CopyObject (re-encrypting), ListObjects, ListObjectsV2,
//! ListObjectVersions. One admin key pair ([`credentials`]).

pub mod credentials;

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::GetRange;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};

use crate::object::index::{ListPage, ObjectEntry};
use crate::object::{ObjectError, ObjectService, PutParams};

/// The S3 face of the object service.
#[derive(Debug, Clone)]
pub struct S3Face {
    objects: Arc<ObjectService>,
}

impl S3Face {
    /// Serves `objects`.
    pub fn new(objects: Arc<ObjectService>) -> Self {
        S3Face { objects }
    }
}

/// Maps object-service errors to S3 error codes.
fn s3_err(e: ObjectError) -> S3Error {
    let (code, message) = match &e {
        ObjectError::InvalidBucketName(_) => (S3ErrorCode::InvalidBucketName, e.to_string()),
        ObjectError::NoSuchBucket(_) => (S3ErrorCode::NoSuchBucket, e.to_string()),
        ObjectError::BucketExists(_) => (S3ErrorCode::BucketAlreadyOwnedByYou, e.to_string()),
        ObjectError::BucketNotEmpty(_) => (S3ErrorCode::BucketNotEmpty, e.to_string()),
        ObjectError::NoSuchKey { .. } => (S3ErrorCode::NoSuchKey, e.to_string()),
        ObjectError::Body(_) => (S3ErrorCode::IncompleteBody, e.to_string()),
        ObjectError::BadDigest => (S3ErrorCode::BadDigest, e.to_string()),
        ObjectError::NoSuchUpload(_) => (S3ErrorCode::NoSuchUpload, e.to_string()),
        ObjectError::InvalidPart(_) => (S3ErrorCode::InvalidPart, e.to_string()),
        ObjectError::EntityTooSmall(_) => (S3ErrorCode::EntityTooSmall, e.to_string()),
        _ => {
            tracing::error!(error = %e, "object operation failed");
            (
                S3ErrorCode::InternalError,
                "internal error; see the server log".to_owned(),
            )
        }
    };
    S3Error::with_message(code, message)
}

fn etag(hex: &str) -> ETag {
    ETag::Strong(hex.to_owned())
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp::from(std::time::SystemTime::from(t))
}

/// The plaintext range of a `Range` header over an object of `size` bytes, or `InvalidRange`.
fn byte_range(range: &Range, size: u64) -> S3Result<(GetRange, u64, u64)> {
    let (first, last) = match *range {
        Range::Int { first, last } => (
            first,
            last.map_or(size.saturating_sub(1), |l| l.min(size.saturating_sub(1))),
        ),
        Range::Suffix { length } => (size.saturating_sub(length), size.saturating_sub(1)),
    };
    if size == 0 || first >= size || first > last {
        return Err(s3_error!(
            InvalidRange,
            "the range is not satisfiable for an object of {size} bytes"
        ));
    }
    Ok((GetRange::Bounded(first..last + 1), first, last))
}

fn entry_or_missing(objects: &ObjectService, bucket: &str, key: &str) -> S3Result<ObjectEntry> {
    objects.bucket(bucket).map_err(s3_err)?;
    objects
        .index()
        .get(bucket, key)
        .map_err(|e| s3_err(e.into()))?
        .ok_or_else(|| {
            s3_err(ObjectError::NoSuchKey {
                bucket: bucket.into(),
                key: key.into(),
            })
        })
}

#[async_trait::async_trait]
impl S3 for S3Face {
    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self.objects.index().buckets().map_err(|e| s3_err(e.into()))?;
        let buckets = buckets
            .into_iter()
            .map(|(name, created)| Bucket {
                name: Some(name),
                creation_date: Some(timestamp(created)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        self.objects.create_bucket(&req.input.bucket).map_err(s3_err)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
        }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.objects.bucket(&req.input.bucket).map_err(s3_err)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.objects.delete_bucket(&req.input.bucket).map_err(s3_err)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.objects.bucket(&req.input.bucket).map_err(s3_err)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let expected_md5 = content_md5(&input.content_md5)?;
        let params = PutParams {
            content_type: input.content_type.clone(),
            user_metadata: input.metadata.clone().unwrap_or_default().into_iter().collect(),
            expected_md5,
        };
        let body = input.body.unwrap_or_else(empty_body);
        let entry = self
            .objects
            .put(
                &input.bucket,
                &input.key,
                body.map_err(|e| ObjectError::Body(e.to_string())),
                params,
            )
            .await
            .map_err(s3_err)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&entry.etag)),
            server_side_encryption: Some(ServerSideEncryption::from_static(ServerSideEncryption::AES256)),
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let entry = entry_or_missing(&self.objects, &input.bucket, &input.key)?;
        let range = input.range.as_ref().map(|r| byte_range(r, entry.size)).transpose()?;
        let got = self
            .objects
            .get(&input.bucket, &input.key, range.as_ref().map(|(r, _, _)| r.clone()))
            .await
            .map_err(s3_err)?;
        let length = got.range.end - got.range.start;
        // s3s wants a Sync body; object_store streams are only Send. A small channel bridges
        // them (two chunks in flight keeps memory bounded).
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<bytes::Bytes, object_store::Error>>(2);
        let mut source = got.into_stream();
        tokio::spawn(async move {
            use futures::{SinkExt, StreamExt};
            while let Some(chunk) = source.next().await {
                if tx.send(chunk).await.is_err() {
                    break; // the client went away
                }
            }
        });
        let output = GetObjectOutput {
            body: Some(StreamingBlob::wrap(rx)),
            content_length: Some(length as i64),
            content_range: range
                .as_ref()
                .map(|(_, first, last)| format!("bytes {first}-{last}/{}", entry.size)),
            accept_ranges: Some("bytes".into()),
            content_type: entry.content_type.clone(),
            e_tag: Some(etag(&entry.etag)),
            last_modified: Some(timestamp(entry.last_modified)),
            metadata: (!entry.user_metadata.is_empty()).then(|| entry.user_metadata.clone().into_iter().collect()),
            server_side_encryption: Some(ServerSideEncryption::from_static(ServerSideEncryption::AES256)),
            ..Default::default()
        };
        let mut response = S3Response::new(output);
        if range.is_some() {
            response.status = Some(http::StatusCode::PARTIAL_CONTENT);
        }
        Ok(response)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let entry = entry_or_missing(&self.objects, &req.input.bucket, &req.input.key)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(entry.size as i64),
            content_type: entry.content_type.clone(),
            e_tag: Some(etag(&entry.etag)),
            last_modified: Some(timestamp(entry.last_modified)),
            accept_ranges: Some("bytes".into()),
            metadata: (!entry.user_metadata.is_empty()).then(|| entry.user_metadata.clone().into_iter().collect()),
            server_side_encryption: Some(ServerSideEncryption::from_static(ServerSideEncryption::AES256)),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.objects
            .delete(&req.input.bucket, &req.input.key)
            .await
            .map_err(s3_err)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "copying from an access point is not supported"
            ));
        };
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        // A copy onto itself is allowed: it re-encrypts the object under the current key version.
        let params = replace.then(|| PutParams {
            content_type: input.content_type.clone(),
            user_metadata: input.metadata.clone().unwrap_or_default().into_iter().collect(),
            expected_md5: None,
        });
        let entry = self
            .objects
            .copy((src_bucket, src_key), (&input.bucket, &input.key), params)
            .await
            .map_err(s3_err)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&entry.etag)),
                last_modified: Some(timestamp(entry.last_modified)),
                ..Default::default()
            }),
            server_side_encryption: Some(ServerSideEncryption::from_static(ServerSideEncryption::AES256)),
            ..Default::default()
        }))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.objects.bucket(&input.bucket).map_err(s3_err)?;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in input.delete.objects {
            match self.objects.delete(&input.bucket, &object.key).await {
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(object.key),
                    version_id: object.version_id,
                    ..Default::default()
                }),
                Err(e) => errors.push(Error {
                    key: Some(object.key),
                    code: Some("InternalError".into()),
                    message: Some(e.to_string()),
                    ..Default::default()
                }),
            }
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!quiet).then_some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let listing = Listing::new(
            &self.objects,
            &input.bucket,
            &input.prefix,
            &input.delimiter,
            &input.encoding_type,
            input.max_keys,
        )?;
        let page = listing.page(&self.objects, input.marker.as_deref())?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket.clone()),
            prefix: Some(listing.enc(&listing.prefix)),
            marker: input.marker.clone(),
            delimiter: input.delimiter.clone(),
            max_keys: Some(listing.max_keys as i32),
            is_truncated: Some(page.next_start_after.is_some()),
            next_marker: page.next_start_after.as_deref().map(|m| listing.enc(m)),
            contents: Some(listing.objects(&page)),
            common_prefixes: listing.common_prefixes(&page),
            encoding_type: input.encoding_type.clone(),
            ..Default::default()
        }))
    }

    /// Buckets are unversioned: every object is its own latest version, `null`. Tools that
    /// clean up through this call (and not ListObjects) work.
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        let listing = Listing::new(
            &self.objects,
            &input.bucket,
            &input.prefix,
            &input.delimiter,
            &input.encoding_type,
            input.max_keys,
        )?;
        let page = listing.page(&self.objects, input.key_marker.as_deref())?;
        let versions = page
            .objects
            .iter()
            .map(|(key, e)| ObjectVersion {
                key: Some(listing.enc(key)),
                version_id: Some("null".into()),
                is_latest: Some(true),
                size: Some(e.size as i64),
                e_tag: Some(etag(&e.etag)),
                last_modified: Some(timestamp(e.last_modified)),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket.clone()),
            prefix: Some(listing.enc(&listing.prefix)),
            delimiter: input.delimiter.clone(),
            key_marker: input.key_marker.clone(),
            max_keys: Some(listing.max_keys as i32),
            is_truncated: Some(page.next_start_after.is_some()),
            next_key_marker: page.next_start_after.as_deref().map(|m| listing.enc(m)),
            next_version_id_marker: page.next_start_after.as_ref().map(|_| "null".into()),
            versions: Some(versions),
            common_prefixes: listing.common_prefixes(&page),
            encoding_type: input.encoding_type.clone(),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let params = PutParams {
            content_type: input.content_type.clone(),
            user_metadata: input.metadata.clone().unwrap_or_default().into_iter().collect(),
            expected_md5: None,
        };
        let upload_id = self
            .objects
            .create_upload(&input.bucket, &input.key, params)
            .map_err(s3_err)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            server_side_encryption: Some(ServerSideEncryption::from_static(ServerSideEncryption::AES256)),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let expected_md5 = content_md5(&input.content_md5)?;
        let body = input.body.unwrap_or_else(empty_body);
        let part_number =
            u32::try_from(input.part_number).map_err(|_| s3_error!(InvalidArgument, "bad part number"))?;
        let etag_hex = self
            .objects
            .put_part(
                (&input.bucket, &input.key, &input.upload_id),
                part_number,
                body.map_err(|e| ObjectError::Body(e.to_string())),
                expected_md5.as_deref(),
            )
            .await
            .map_err(s3_err)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&etag_hex)),
            server_side_encryption: Some(ServerSideEncryption::from_static(ServerSideEncryption::AES256)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let parts: Vec<(u32, String)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let number = p.part_number.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
                let tag = p.e_tag.map(|t| t.value().to_owned()).unwrap_or_default();
                (number, tag)
            })
            .collect();
        let entry = self
            .objects
            .complete_upload((&input.bucket, &input.key, &input.upload_id), &parts)
            .await
            .map_err(s3_err)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(etag(&entry.etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            server_side_encryption: Some(ServerSideEncryption::from_static(ServerSideEncryption::AES256)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.objects
            .abort_upload((&input.bucket, &input.key, &input.upload_id))
            .await
            .map_err(s3_err)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let marker = input
            .part_number_marker
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(0);
        let max = input.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
        let all = self
            .objects
            .list_parts((&input.bucket, &input.key, &input.upload_id))
            .map_err(s3_err)?;
        let after: Vec<_> = all.into_iter().filter(|(n, _)| *n > marker).collect();
        let truncated = after.len() > max;
        let page: Vec<_> = after.into_iter().take(max).collect();
        let next = if truncated {
            page.last().map(|(n, _)| *n as i32)
        } else {
            None
        };
        let parts = page
            .into_iter()
            .map(|(n, r)| Part {
                part_number: Some(n as i32),
                size: Some(r.size as i64),
                e_tag: Some(etag(&r.etag)),
                last_modified: Some(timestamp(r.last_modified)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let uploads = self
            .objects
            .list_uploads(&input.bucket)
            .map_err(s3_err)?
            .into_iter()
            .filter(|(_, u)| u.key.starts_with(&prefix))
            .map(|(id, u)| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(id),
                initiated: Some(timestamp(u.initiated)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            is_truncated: Some(false),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let listing = Listing::new(
            &self.objects,
            &input.bucket,
            &input.prefix,
            &input.delimiter,
            &input.encoding_type,
            input.max_keys,
        )?;
        // Continuation tokens are the last key (or common prefix) returned, base64url-encoded.
        let after = match &input.continuation_token {
            Some(token) => Some(
                data_encoding::BASE64URL_NOPAD
                    .decode(token.as_bytes())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not valid"))?,
            ),
            None => input.start_after.clone(),
        };
        let page = listing.page(&self.objects, after.as_deref())?;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket.clone()),
            prefix: Some(listing.enc(&listing.prefix)),
            delimiter: input.delimiter.clone(),
            max_keys: Some(listing.max_keys as i32),
            key_count: Some((page.objects.len() + page.common_prefixes.len()) as i32),
            is_truncated: Some(page.next_start_after.is_some()),
            continuation_token: input.continuation_token.clone(),
            next_continuation_token: page
                .next_start_after
                .as_ref()
                .map(|n| data_encoding::BASE64URL_NOPAD.encode(n.as_bytes())),
            start_after: input.start_after.clone(),
            contents: Some(listing.objects(&page)),
            common_prefixes: listing.common_prefixes(&page),
            encoding_type: input.encoding_type.clone(),
            ..Default::default()
        }))
    }
}

/// What ListObjects, ListObjectsV2 and ListObjectVersions share: parameters, the index
/// page, and the mapping of keys (URL-encoded when the client asks for it).
struct Listing {
    bucket: String,
    prefix: String,
    delimiter: Option<String>,
    url: bool,
    max_keys: usize,
}

impl Listing {
    fn new(
        objects: &ObjectService,
        bucket: &str,
        prefix: &Option<String>,
        delimiter: &Option<String>,
        encoding: &Option<EncodingType>,
        max_keys: Option<i32>,
    ) -> S3Result<Listing> {
        objects.bucket(bucket).map_err(s3_err)?;
        Ok(Listing {
            bucket: bucket.to_owned(),
            prefix: prefix.clone().unwrap_or_default(),
            delimiter: delimiter.clone().filter(|d| !d.is_empty()),
            url: encoding.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL),
            max_keys: max_keys.unwrap_or(1000).clamp(0, 1000) as usize,
        })
    }

    fn page(&self, objects: &ObjectService, after: Option<&str>) -> S3Result<ListPage> {
        objects
            .index()
            .list(
                &self.bucket,
                &self.prefix,
                self.delimiter.as_deref(),
                after,
                self.max_keys,
            )
            .map_err(|e| s3_err(e.into()))
    }

    fn enc(&self, s: &str) -> String {
        if self.url {
            urlencoding_path(s)
        } else {
            s.to_owned()
        }
    }

    fn objects(&self, page: &ListPage) -> Vec<Object> {
        page.objects
            .iter()
            .map(|(key, e)| Object {
                key: Some(self.enc(key)),
                size: Some(e.size as i64),
                e_tag: Some(etag(&e.etag)),
                last_modified: Some(timestamp(e.last_modified)),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                ..Default::default()
            })
            .collect()
    }

    fn common_prefixes(&self, page: &ListPage) -> Option<Vec<CommonPrefix>> {
        let prefixes: Vec<CommonPrefix> = page
            .common_prefixes
            .iter()
            .map(|p| CommonPrefix {
                prefix: Some(self.enc(p)),
            })
            .collect();
        (!prefixes.is_empty()).then_some(prefixes)
    }
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

fn empty_body() -> StreamingBlob {
    StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>())
}

/// Percent-encodes a key as S3 does for `encoding-type=url` (everything but unreserved
/// characters and '/').
fn urlencoding_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
