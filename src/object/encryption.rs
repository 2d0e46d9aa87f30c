//! Which key protects an object, in S3's terms: SSE-S3 (the service's default master key),
//! SSE-KMS (a master key the client or the bucket names) or SSE-C (a key the client sends
//! with every request).
//!
//! [`EncryptionRequest`] is what a writer asks for, `BucketEncryption` what a bucket asks
//! for when the writer says nothing, and [`Encryption`] what the index records per object.

use std::sync::Arc;

use kms_core::Ocid;
use serde::{Deserialize, Serialize};

use super::customer_key::CustomerKey;
use super::store::WrappedBy;

/// How a writer wants a new object encrypted.
#[derive(Debug, Clone, Default)]
pub enum EncryptionRequest {
    /// Whatever the bucket's default encryption says.
    #[default]
    BucketDefault,
    /// SSE-S3: the service's default master key.
    ServiceKey,
    /// SSE-KMS: this master key, or, when `None`, the bucket's SSE-KMS key if it has one and
    /// the service's default key otherwise.
    Kms(Option<Ocid>),
    /// SSE-C: a customer-provided key.
    Customer(Arc<CustomerKey>),
}

/// A bucket's default encryption: the key of a write that names none. The S3 face maps it
/// to and from S3's bucket encryption configuration; the index stores it in a form of its own
/// (see [`super::index`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum BucketEncryption {
    /// The service's default master key (SSE-S3). Every bucket starts so.
    #[default]
    ServiceKey,
    /// A master key, or the service's default key when `None` (SSE-KMS).
    Kms {
        /// Master key for new objects.
        key_id: Option<Ocid>,
    },
}

/// What protects a stored object, as the index records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Encryption {
    /// The data key is wrapped by a KMS master key.
    #[serde(rename_all = "camelCase")]
    Kms {
        /// Master key.
        key_id: Ocid,
        /// Master key version.
        key_version_id: Ocid,
        /// The writer asked for SSE-KMS, rather than SSE-S3 (the S3 face reports which).
        #[serde(default)]
        sse_kms: bool,
    },
    /// The data key is wrapped by a customer-provided key (SSE-C).
    #[serde(rename_all = "camelCase")]
    Customer {
        /// Hex of the key check (see [`super::customer_key`]); compared with the key a request
        /// supplies before anything is read.
        customer_key_check: String,
    },
}

impl Encryption {
    /// What the index records for an object whose header says `wrapped_by`.
    pub fn recorded(wrapped_by: WrappedBy, sse_kms: bool) -> Self {
        match wrapped_by {
            WrappedBy::Kms { key_id, key_version_id } => Encryption::Kms {
                key_id,
                key_version_id,
                sse_kms,
            },
            WrappedBy::Customer { key_check } => Encryption::Customer {
                customer_key_check: data_encoding::HEXLOWER.encode(&key_check),
            },
        }
    }

    /// The master key version, for KMS-protected objects.
    pub fn key_version_id(&self) -> Option<&Ocid> {
        match self {
            Encryption::Kms { key_version_id, .. } => Some(key_version_id),
            Encryption::Customer { .. } => None,
        }
    }

    /// The master key, for KMS-protected objects.
    pub fn key_id(&self) -> Option<&Ocid> {
        match self {
            Encryption::Kms { key_id, .. } => Some(key_id),
            Encryption::Customer { .. } => None,
        }
    }
}

/// How a multipart upload's parts and object are encrypted, fixed when the upload starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UploadEncryption {
    /// Under the current version of a KMS master key.
    #[serde(rename_all = "camelCase")]
    Kms {
        /// Master key.
        key_id: Ocid,
        /// Reported as SSE-KMS rather than SSE-S3.
        #[serde(default)]
        sse_kms: bool,
    },
    /// Under a customer-provided key: every part request, and the completion, must supply
    /// the key whose check (over the object's identity) this is.
    #[serde(rename_all = "camelCase")]
    Customer {
        /// Hex of the key check.
        customer_key_check: String,
    },
}
