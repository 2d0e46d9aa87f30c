//! PutObject.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::*;

pub(super) async fn put_object(face: &S3Face, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
    let input = req.input;
    let expected_md5 = content_md5(&input.content_md5)?;
    let params = PutParams {
        content_type: input.content_type.clone(),
        user_metadata: input.metadata.clone().unwrap_or_default().into_iter().collect(),
        expected_md5,
    };
    let body = input.body.unwrap_or_else(empty_body);
    let entry = face
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
