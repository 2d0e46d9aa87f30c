//! CopyObject: decrypt and encrypt again under the destination name and the current key
//! version of the key the request (or the destination bucket's default) names.

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::sse::{copy_source_customer_key, request_customer_key, CopySourceKeyParams, SseHeaders, SseOutput};
use super::*;

pub(super) async fn copy_object(
    face: &S3Face,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let source = open_copy_source(face, &req).await?;
    let customer = request_customer_key(face, &req)?;
    // Conditions on the destination (S3's conditional writes), not on the source.
    let condition = write_condition(
        header_condition(&req.headers, "if-match")?.as_ref(),
        header_condition(&req.headers, "if-none-match")?.as_ref(),
    )?;
    let input = req.input;
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    // A copy onto itself re-encrypts the object under the current key version (of the key the
    // request names, which may be another one); as in AWS, it must ask for some change.
    refuse_unchanged_self_copy(&input, replace)?;
    let params = input.put_params(face, customer.as_ref(), condition, None)?;
    let entry = face
        .objects
        .copy(source, (&input.bucket, &input.key), params, !replace)
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

/// AWS refuses a copy of an object onto itself that changes nothing: no REPLACE metadata
/// directive (`replace`), and no encryption (SSE-S3, SSE-KMS, SSE-C), storage class or
/// website redirect asked for.
fn refuse_unchanged_self_copy(input: &CopyObjectInput, replace: bool) -> S3Result<()> {
    let CopySource::Bucket { bucket, key, .. } = &input.copy_source else {
        return Ok(());
    };
    let onto_itself = **bucket == *input.bucket && **key == *input.key;
    let changes = replace
        || input.server_side_encryption.is_some()
        || input.ssekms_key_id.is_some()
        || input.sse_customer_algorithm.is_some()
        || input.sse_customer_key.is_some()
        || input.storage_class.is_some()
        || input.website_redirect_location.is_some();
    if onto_itself && !changes {
        return Err(s3_error!(
            InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
        ));
    }
    Ok(())
}

/// Inputs that copy from an object, with `x-amz-copy-source-if-*` conditions.
pub(super) trait CopySourceInput {
    /// `x-amz-copy-source`.
    fn copy_source(&self) -> &CopySource;
    /// If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since.
    fn copy_source_conditions(
        &self,
    ) -> (
        &Option<ETagCondition>,
        &Option<ETagCondition>,
        &Option<Timestamp>,
        &Option<Timestamp>,
    );
}

macro_rules! copy_source_input {
    ($($input:ty),*) => {$(
        impl CopySourceInput for $input {
            fn copy_source(&self) -> &CopySource {
                &self.copy_source
            }

            fn copy_source_conditions(
                &self,
            ) -> (&Option<ETagCondition>, &Option<ETagCondition>, &Option<Timestamp>, &Option<Timestamp>) {
                (
                    &self.copy_source_if_match,
                    &self.copy_source_if_none_match,
                    &self.copy_source_if_modified_since,
                    &self.copy_source_if_unmodified_since,
                )
            }
        }
    )*};
}
copy_source_input!(CopyObjectInput, UploadPartCopyInput);

/// The source object of a copy (CopyObject, UploadPartCopy), once the request may read it
/// (its copy-source SSE-C key) and its copy-source conditions hold.
pub(super) async fn open_copy_source<T: CopySourceInput + CopySourceKeyParams>(
    face: &S3Face,
    req: &S3Request<T>,
) -> S3Result<OpenObject> {
    let customer = copy_source_customer_key(face, req)?;
    let (bucket, key) = match req.input.copy_source() {
        CopySource::Bucket { bucket, key, .. } => (bucket, key),
        _ => {
            return Err(s3_error!(
                NotImplemented,
                "copying from an access point is not supported"
            ))
        }
    };
    let source = face
        .objects
        .open_for_read(bucket, key, customer.as_ref().map(|c| &c.key))
        .await
        .map_err(s3_err)?;
    let (if_match, if_none_match, if_modified_since, if_unmodified_since) = req.input.copy_source_conditions();
    super::get::check_copy_source_conditions(
        &source.entry,
        if_match,
        if_none_match,
        if_modified_since,
        if_unmodified_since,
    )?;
    Ok(source)
}
