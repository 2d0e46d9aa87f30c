//! DeleteObject and DeleteObjects.

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::*;

/// Keys one DeleteObjects request may name.
const MAX_DELETE_KEYS: usize = 1000;

pub(super) async fn delete_object(
    face: &S3Face,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    face.objects
        .delete(&req.input.bucket, &req.input.key)
        .await
        .map_err(s3_err)?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

pub(super) async fn delete_objects(
    face: &S3Face,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let input = req.input;
    // S3's schema allows at most 1000 keys per request; AWS answers more with MalformedXML.
    if input.delete.objects.len() > MAX_DELETE_KEYS {
        return Err(s3_error!(
            MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema (at most {MAX_DELETE_KEYS} keys per DeleteObjects request)"
        ));
    }
    face.objects.require_bucket(&input.bucket).map_err(s3_err)?;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for object in input.delete.objects {
        match face.objects.delete(&input.bucket, &object.key).await {
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
