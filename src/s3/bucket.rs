//! Bucket operations: list, create, head, delete, location, default encryption.

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use crate::object::encryption::BucketEncryption;

use super::*;

pub(super) async fn list_buckets(
    face: &S3Face,
    req: S3Request<ListBucketsInput>,
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
        owner: face.owner(req.credentials.as_ref()),
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
    face.objects.require_bucket(&req.input.bucket).map_err(s3_err)?;
    Ok(S3Response::new(HeadBucketOutput::default()))
}

pub(super) async fn delete_bucket(
    face: &S3Face,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    face.objects.delete_bucket(&req.input.bucket).await.map_err(s3_err)?;
    Ok(S3Response::new(DeleteBucketOutput::default()))
}

pub(super) async fn get_bucket_location(
    face: &S3Face,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    face.objects.require_bucket(&req.input.bucket).map_err(s3_err)?;
    Ok(S3Response::new(GetBucketLocationOutput::default()))
}

/// PutBucketEncryption: the key new objects get when a write names none. One rule, SSE-S3
/// (`AES256`) or SSE-KMS (`aws:kms`, with a key OCID or `alias/NAME`, else the default key).
pub(super) async fn put_bucket_encryption(
    face: &S3Face,
    req: S3Request<PutBucketEncryptionInput>,
) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
    let input = req.input;
    let rules = &input.server_side_encryption_configuration.rules;
    let [rule] = rules.as_slice() else {
        return Err(s3_error!(
            MalformedXML,
            "a bucket encryption configuration has exactly one rule, not {}",
            rules.len()
        ));
    };
    let Some(default) = &rule.apply_server_side_encryption_by_default else {
        return Err(s3_error!(
            MalformedXML,
            "the rule needs an ApplyServerSideEncryptionByDefault element"
        ));
    };
    let config = match (default.sse_algorithm.as_str(), &default.kms_master_key_id) {
        (ServerSideEncryption::AES256, None) => BucketEncryption::ServiceKey,
        (ServerSideEncryption::AES256, Some(_)) => {
            return Err(s3_error!(
                InvalidArgument,
                "KMSMasterKeyID may only be given with SSEAlgorithm aws:kms"
            ))
        }
        (ServerSideEncryption::AWS_KMS, key) => BucketEncryption::Kms {
            key_id: key
                .as_deref()
                .map(|k| face.objects.resolve_kms_key(k))
                .transpose()
                .map_err(s3_err)?,
        },
        (other, _) => {
            return Err(s3_error!(
                InvalidArgument,
                "unsupported SSEAlgorithm '{}': use AES256 or aws:kms",
                other
            ))
        }
    };
    face.objects
        .set_bucket_encryption(&input.bucket, Some(config))
        .await
        .map_err(s3_err)?;
    Ok(S3Response::new(PutBucketEncryptionOutput::default()))
}

/// GetBucketEncryption: every bucket has one; SSE-S3 unless configured otherwise (as AWS
/// reports since all buckets are encrypted by default).
pub(super) async fn get_bucket_encryption(
    face: &S3Face,
    req: S3Request<GetBucketEncryptionInput>,
) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
    let config = face.objects.bucket_encryption(&req.input.bucket).map_err(s3_err)?;
    let by_default = match config {
        BucketEncryption::ServiceKey => ServerSideEncryptionByDefault {
            sse_algorithm: ServerSideEncryption::from_static(ServerSideEncryption::AES256),
            kms_master_key_id: None,
        },
        BucketEncryption::Kms { key_id } => ServerSideEncryptionByDefault {
            sse_algorithm: ServerSideEncryption::from_static(ServerSideEncryption::AWS_KMS),
            kms_master_key_id: key_id.map(|k| k.to_string()),
        },
    };
    Ok(S3Response::new(GetBucketEncryptionOutput {
        server_side_encryption_configuration: Some(ServerSideEncryptionConfiguration {
            rules: vec![ServerSideEncryptionRule {
                apply_server_side_encryption_by_default: Some(by_default),
                bucket_key_enabled: Some(false),
            }],
        }),
    }))
}

/// DeleteBucketEncryption: back to SSE-S3 (objects stay as they are).
pub(super) async fn delete_bucket_encryption(
    face: &S3Face,
    req: S3Request<DeleteBucketEncryptionInput>,
) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
    face.objects
        .set_bucket_encryption(&req.input.bucket, None)
        .await
        .map_err(s3_err)?;
    Ok(S3Response::new(DeleteBucketEncryptionOutput::default()))
}
