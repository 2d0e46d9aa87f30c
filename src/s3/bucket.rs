//! Bucket operations: list, create, head, delete, location.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::*;

pub(super) async fn list_buckets(
    face: &S3Face,
    _req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let buckets = face.objects.index().buckets().map_err(|e| s3_err(e.into()))?;
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

pub(super) async fn create_bucket(
    face: &S3Face,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    face.objects.create_bucket(&req.input.bucket).map_err(s3_err)?;
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{}", req.input.bucket)),
    }))
}

pub(super) async fn head_bucket(
    face: &S3Face,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    face.objects.bucket(&req.input.bucket).map_err(s3_err)?;
    Ok(S3Response::new(HeadBucketOutput::default()))
}

pub(super) async fn delete_bucket(
    face: &S3Face,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    face.objects.delete_bucket(&req.input.bucket).map_err(s3_err)?;
    Ok(S3Response::new(DeleteBucketOutput::default()))
}

pub(super) async fn get_bucket_location(
    face: &S3Face,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    face.objects.bucket(&req.input.bucket).map_err(s3_err)?;
    Ok(S3Response::new(GetBucketLocationOutput::default()))
}
