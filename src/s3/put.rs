//! PutObject.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::sse::{request_customer_key, SseHeaders, SseOutput};
use super::*;

pub(super) async fn put_object(face: &S3Face, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
    let customer = request_customer_key(face, &req)?;
    let input = req.input;
    let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
    let params = input.put_params(face, customer.as_ref(), condition, content_md5(&input.content_md5)?)?;
    let body = super::checksum::checked_body(input.body, &req.headers, req.trailing_headers.as_ref())?;
    let entry = face
        .objects
        .put(&input.bucket, &input.key, body, params)
        .await
        .map_err(s3_err)?;
    let sse = SseHeaders::of_object(&entry.encryption, customer.as_ref());
    Ok(S3Response::new(
        PutObjectOutput {
            e_tag: Some(etag(&entry.etag)),
            ..Default::default()
        }
        .with_sse(sse),
    ))
}
