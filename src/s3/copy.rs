//! CopyObject: decrypt and encrypt again under the destination name and the current key
//! version of the key the request (or the destination bucket's default) names.

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::sse::{customer_key, encryption_request, SseHeaders};
use super::*;

pub(super) async fn copy_object(
    face: &S3Face,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let input = req.input;
    let (src_bucket, src_key) = copy_source(&input.copy_source)?;
    let source_customer = customer_key(
        face,
        &req.extensions,
        &input.copy_source_sse_customer_algorithm,
        &input.copy_source_sse_customer_key,
        &input.copy_source_sse_customer_key_md5,
    )?;
    let customer = customer_key(
        face,
        &req.extensions,
        &input.sse_customer_algorithm,
        &input.sse_customer_key,
        &input.sse_customer_key_md5,
    )?;
    let (source_entry, _) = face
        .objects
        .open_for_read(src_bucket, src_key, source_customer.as_ref().map(|c| &c.key))
        .map_err(s3_err)?;
    super::get::check_copy_source_conditions(
        &source_entry,
        &input.copy_source_if_match,
        &input.copy_source_if_none_match,
        &input.copy_source_if_modified_since,
        &input.copy_source_if_unmodified_since,
    )?;
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    // A copy onto itself is allowed: it re-encrypts the object under the current key version
    // (of the key the request names, which may be another one).
    let params = PutParams {
        content_type: input.content_type.clone(),
        user_metadata: input.metadata.clone().unwrap_or_default().into_iter().collect(),
        expected_md5: None,
        encryption: encryption_request(
            face,
            &input.server_side_encryption,
            &input.ssekms_key_id,
            customer.as_ref(),
        )?,
    };
    let entry = face
        .objects
        .copy(
            (src_bucket, src_key, source_customer.as_ref().map(|c| &c.key)),
            (&input.bucket, &input.key),
            params,
            !replace,
        )
        .await
        .map_err(s3_err)?;
    let sse = SseHeaders::of_object(&entry.encryption, customer.as_ref());
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag(&entry.etag)),
            last_modified: Some(timestamp(entry.last_modified)),
            ..Default::default()
        }),
        server_side_encryption: sse.server_side_encryption,
        ssekms_key_id: sse.ssekms_key_id,
        sse_customer_algorithm: sse.sse_customer_algorithm,
        sse_customer_key_md5: sse.sse_customer_key_md5,
        ..Default::default()
    }))
}

/// Bucket and key of an `x-amz-copy-source`.
pub(super) fn copy_source(source: &CopySource) -> S3Result<(&str, &str)> {
    match source {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket, key)),
        _ => Err(s3_error!(
            NotImplemented,
            "copying from an access point is not supported"
        )),
    }
}
