//! Object-service errors as S3 errors: the one place where [`ObjectError`], and the
//! [`EncryptedStoreError`] and [`KmsError`] it carries, become an S3 code, status and message.

use kms_core::{KmsError, Refusal};
use s3s::{S3Error, S3ErrorCode};

use crate::object::error::{IndexError, IntegrityProblem};
use crate::object::{EncryptedStoreError, ObjectError};

/// An S3 error with a code s3s does not know (such as `KMS.NotFoundException`) and status 400.
pub(super) fn custom_400(code: &'static str, message: String) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), message);
    e.set_status_code(http::StatusCode::BAD_REQUEST);
    e
}

/// The S3 error code of an object whose stored bytes fail their integrity checks.
pub(super) const TAMPERED_CODE: &str = "ObjectTampered";

/// The answer for a damaged object: 409 `ObjectTampered` (a 4xx, so that clients do not retry
/// a read that cannot succeed). Logs the damage, once, at WARN.
fn tampered(bucket: &str, key: &str, problem: &IntegrityProblem) -> S3Error {
    log_damage(bucket, key, problem);
    let mut err = S3Error::with_message(
        S3ErrorCode::Custom(TAMPERED_CODE.into()),
        "The object's stored data failed its integrity check: it was altered or damaged at rest and cannot be returned.",
    );
    err.set_status_code(http::StatusCode::CONFLICT);
    err
}

/// Logs damage found in a stored object: bucket, key and first bad segment, at WARN.
fn log_damage(bucket: &str, key: &str, problem: &IntegrityProblem) {
    tracing::warn!(
        bucket = %bucket,
        key = %key,
        segment = problem.segment(),
        problem = %problem,
        "stored object failed its integrity check"
    );
}

/// Logs why an object's body failed after its answer had started (all that is left to do
/// is to cut the body short): damage at WARN, as when it is found before, anything else at
/// ERROR.
pub(super) fn log_body_failure(e: &object_store::Error) {
    match EncryptedStoreError::from_object_store(e) {
        Some(EncryptedStoreError::Integrity { bucket, key, problem }) => log_damage(bucket, key, problem),
        _ => tracing::error!(error = %e, "reading an object failed after its answer started"),
    }
}

/// The S3 error for what the encrypted store failed with; `None` for an internal error.
/// Backend errors are internal here: where a missing object means a missing key, the
/// object service has already said so ([`ObjectError::NoSuchKey`]).
fn store_err(e: &EncryptedStoreError) -> Option<S3Error> {
    match e {
        EncryptedStoreError::Integrity { bucket, key, problem } => Some(tampered(bucket, key, problem)),
        EncryptedStoreError::Key { source, .. } => kms_err(source),
        _ => None,
    }
}

/// The S3 error for a refusal of key management on the data path (its policy, or a key
/// state that changed after the up-front check), or its absence; `None` for an internal error.
fn kms_err(e: &KmsError) -> Option<S3Error> {
    let code = match e {
        KmsError::AccessDenied(_) | KmsError::VaultDeleted(_) => S3ErrorCode::AccessDenied,
        KmsError::Unavailable(_) => S3ErrorCode::ServiceUnavailable,
        KmsError::Metadata(m) if m.is_unavailable() => S3ErrorCode::ServiceUnavailable,
        _ => return None,
    };
    Some(S3Error::with_message(code, xml_safe(&e.to_string())))
}

/// Maps object-service errors to S3 error codes.
pub(super) fn s3_err(e: ObjectError) -> S3Error {
    let typed = match &e {
        ObjectError::Store(store) => store_err(store),
        ObjectError::Kms(kms) => kms_err(kms),
        ObjectError::Index(IndexError::Metadata(m)) if m.is_unavailable() => {
            tracing::warn!(error = %e, "metadata store unavailable");
            Some(S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                "the metadata store cannot be reached; retry later",
            ))
        }
        _ => None,
    };
    if let Some(err) = typed {
        return err;
    }
    let (code, message) = match &e {
        ObjectError::InvalidBucketName(_) => (S3ErrorCode::InvalidBucketName, e.to_string()),
        ObjectError::NoSuchBucket(_) => (S3ErrorCode::NoSuchBucket, e.to_string()),
        ObjectError::BucketExists(_) => (S3ErrorCode::BucketAlreadyOwnedByYou, e.to_string()),
        ObjectError::BucketNotEmpty(_) => (S3ErrorCode::BucketNotEmpty, e.to_string()),
        ObjectError::NoSuchKey { .. } => (S3ErrorCode::NoSuchKey, e.to_string()),
        ObjectError::PreconditionFailed(_) => (S3ErrorCode::PreconditionFailed, e.to_string()),
        ObjectError::KeyTooLong(_) => (S3ErrorCode::KeyTooLongError, e.to_string()),
        ObjectError::Body(_) => (S3ErrorCode::IncompleteBody, e.to_string()),
        ObjectError::BadDigest | ObjectError::BadChecksum(_) => (S3ErrorCode::BadDigest, e.to_string()),
        ObjectError::NoSuchUpload(_) => (S3ErrorCode::NoSuchUpload, e.to_string()),
        ObjectError::InvalidPart(_) => (S3ErrorCode::InvalidPart, e.to_string()),
        ObjectError::EntityTooSmall { part, minimum } => (
            S3ErrorCode::EntityTooSmall,
            format!(
                "part {part} is smaller than the {} MiB minimum for all parts but the last",
                minimum >> 20
            ),
        ),
        ObjectError::KmsKeyNotFound(_) => return custom_400("KMS.NotFoundException", e.to_string()),
        ObjectError::KmsKeyUnusable(denial) if denial.reason == Refusal::KeyDisabled => {
            return custom_400("KMS.DisabledException", e.to_string())
        }
        ObjectError::KmsKeyUnusable(_) => return custom_400("KMS.KMSInvalidStateException", e.to_string()),
        ObjectError::KeyAccessDenied(_) => (S3ErrorCode::AccessDenied, e.to_string()),
        ObjectError::CustomerKeyRequired(_) | ObjectError::CustomerKeyNotApplicable(_) => {
            (S3ErrorCode::InvalidRequest, e.to_string())
        }
        ObjectError::CustomerKeyMismatch(_) => (S3ErrorCode::AccessDenied, e.to_string()),
        _ if backend_unreachable(&e) => {
            tracing::warn!(error = %e, "object backend unreachable");
            (
                S3ErrorCode::ServiceUnavailable,
                "the object backend cannot be reached; retry later".to_owned(),
            )
        }
        _ => {
            tracing::error!(error = %e, "object operation failed");
            (
                S3ErrorCode::InternalError,
                "internal error; see the server log".to_owned(),
            )
        }
    };
    S3Error::with_message(code, xml_safe(&message))
}

/// Whether `e` failed because the object backend could not be reached (connection refused,
/// reset or timed out, after the backend client's own retries): a 503 like an unreachable
/// metadata store, not an internal error.
fn backend_unreachable(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(http) = err.downcast_ref::<reqwest::Error>() {
            if http.is_connect() || http.is_timeout() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
                    | ErrorKind::TimedOut
            ) {
                return true;
            }
        }
        cause = err.source();
    }
    false
}

/// A message that XML 1.0 can carry: control characters (which keys may hold) written as
/// `\u{…}` escapes.
pub(super) fn xml_safe(message: &str) -> String {
    if !message.chars().any(char::is_control) {
        return message.to_owned();
    }
    message
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_below_5_mib_is_entity_too_small_with_the_same_message() {
        let e = s3_err(ObjectError::EntityTooSmall {
            part: 2,
            minimum: super::super::multipart::MIN_PART_SIZE,
        });
        assert_eq!(*e.code(), S3ErrorCode::EntityTooSmall);
        assert_eq!(
            e.message(),
            Some("part 2 is smaller than the 5 MiB minimum for all parts but the last")
        );
    }
}
