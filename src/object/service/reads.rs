//! Reads: an object opened for a request (customer key and master key checked), and GET.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResult};

use super::{BucketStore, ObjectService, Result};
use crate::object::customer_key::CustomerKey;
use crate::object::encryption::Encryption;
use crate::object::error::{EncryptedStoreError, ObjectError};
use crate::object::format::ObjectIdentity;
use crate::object::index::{Layout, ObjectEntry};
use crate::object::store::Sealing;

/// An object that a request may read (see `ObjectService::open_for_read`).
#[derive(Debug)]
pub struct OpenObject {
    bucket: String,
    key: String,
    /// What the index holds for it.
    pub entry: ObjectEntry,
    /// The store to read it through (with the customer key, for SSE-C objects).
    store: BucketStore,
    /// Where it is in that store.
    location: Path,
}

impl OpenObject {
    /// Reads the object (all of it, or `range` of its plaintext).
    pub async fn read(&self, range: Option<GetRange>) -> Result<GetResult> {
        self.store
            .read(
                &self.location,
                GetOptions {
                    range,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| match e {
                EncryptedStoreError::Backend(object_store::Error::NotFound { .. }) => ObjectError::NoSuchKey {
                    bucket: self.bucket.clone(),
                    key: self.key.clone(),
                },
                other => other.into(),
            })
    }
}

impl ObjectService {
    /// An object that `customer_key` may read: checks that a customer key is given exactly
    /// when the object needs one, that it is the right one, and that a master key protecting
    /// the object can be used. Callers check conditions on its entry, then read it once.
    pub(crate) async fn open_for_read(
        &self,
        bucket: &str,
        key: &str,
        customer_key: Option<&Arc<CustomerKey>>,
    ) -> Result<OpenObject> {
        self.require_bucket(bucket)?;
        let entry = self.index.get(bucket, key)?.ok_or_else(|| ObjectError::NoSuchKey {
            bucket: bucket.into(),
            key: key.into(),
        })?;
        let (store, location) = self.locate(bucket, key, &entry);
        let store = match (&entry.encryption, customer_key) {
            (Encryption::Customer { customer_key_check }, Some(ck)) => {
                let stored = data_encoding::HEXLOWER
                    .decode(customer_key_check.as_bytes())
                    .unwrap_or_default();
                let identity = match entry.layout {
                    Layout::Current => ObjectIdentity::unversioned(bucket, key),
                    Layout::Legacy => ObjectIdentity::unversioned(bucket, location.as_ref()),
                };
                if !ck.matches(&stored, &identity) {
                    return Err(ObjectError::CustomerKeyMismatch(key.to_owned()));
                }
                store.sealed_with(Sealing::Customer(ck.clone()))
            }
            (Encryption::Customer { .. }, None) => return Err(ObjectError::CustomerKeyRequired(key.to_owned())),
            (Encryption::Kms { .. }, Some(_)) => return Err(ObjectError::CustomerKeyNotApplicable(key.to_owned())),
            (
                Encryption::Kms {
                    key_id, key_version_id, ..
                },
                None,
            ) => {
                self.check_key_for_read(key_id, key_version_id).await?;
                store
            }
        };
        Ok(OpenObject {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            entry,
            store,
            location,
        })
    }

    /// Reads an object (all of it, or `range` of its plaintext); `customer_key` is needed
    /// exactly for objects encrypted with one (see `ObjectService::open_for_read`).
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<GetRange>,
        customer_key: Option<&Arc<CustomerKey>>,
    ) -> Result<(ObjectEntry, GetResult)> {
        let object = self.open_for_read(bucket, key, customer_key).await?;
        let got = object.read(range).await?;
        Ok((object.entry, got))
    }
}
