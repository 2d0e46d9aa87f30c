//! PutObject.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::sse::{customer_key, encryption_request, SseHeaders};
use super::*;

pub(super) async fn put_object(face: &S3Face, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
    let input = req.input;
    let expected_md5 = content_md5(&input.content_md5)?;
    let customer = customer_key(
        face,
        &req.extensions,
        &input.sse_customer_algorithm,
        &input.sse_customer_key,
        &input.sse_customer_key_md5,
    )?;
    let params = PutParams {
        content_type: input.content_type.clone(),
        user_metadata: input.metadata.clone().unwrap_or_default().into_iter().collect(),
        expected_md5,
        encryption: encryption_request(
            face,
            &input.server_side_encryption,
            &input.ssekms_key_id,
            customer.as_ref(),
        )?,
    };
    let body = super::checksum::checked_body(input.body, &req.headers, req.trailing_headers.as_ref())?;
    let entry = face
        .objects
        .put(&input.bucket, &input.key, body, params)
        .await
        .map_err(s3_err)?;
    let sse = SseHeaders::of_object(&entry.encryption, customer.as_ref());
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(etag(&entry.etag)),
        server_side_encryption: sse.server_side_encryption,
        ssekms_key_id: sse.ssekms_key_id,
        sse_customer_algorithm: sse.sse_customer_algorithm,
        sse_customer_key_md5: sse.sse_customer_key_md5,
        ..Default::default()
    }))
}
