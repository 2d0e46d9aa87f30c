//! CopyObject: decrypt and encrypt again under the destination name and the current key version.

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::*;

pub(super) async fn copy_object(
    face: &S3Face,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
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
    let entry = face
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
