//! CopyObject: decrypt and encrypt again under the destination name and the current key
//! version of the key the request (or the destination bucket's default) names.

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::sse::{copy_source_customer_key, encryption_request, request_customer_key, SseHeaders, SseOutput};
use super::*;

pub(super) async fn copy_object(
    face: &S3Face,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let source_customer = copy_source_customer_key(face, &req)?;
    let customer = request_customer_key(face, &req)?;
    let input = req.input;
    let (src_bucket, src_key) = copy_source(&input.copy_source)?;
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
    Ok(S3Response::new(
        CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&entry.etag)),
                last_modified: Some(timestamp(entry.last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        }
        .with_sse(sse),
    ))
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
