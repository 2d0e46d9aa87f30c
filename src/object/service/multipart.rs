//! Multipart uploads: create, upload parts, complete, abort, list parts and uploads.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use object_store::path::Path;
use object_store::{Attributes, ObjectStore};

use super::{
    check_key, delete_prefix, delete_quietly, BucketStore, ObjectService, PutParams, Resolved, Result, WriteCondition,
};
use crate::object::customer_key::CustomerKey;
use crate::object::encryption::{EncryptionRequest, UploadEncryption};
use crate::object::error::ObjectError;
use crate::object::format::ObjectIdentity;
use crate::object::index::{ObjectEntry, PartRecord, UploadRecord};
use crate::object::layout;
use crate::object::store::Sealing;

impl ObjectService {
    // ----- multipart uploads -----

    fn upload_for(&self, upload_id: &str, bucket: &str, key: &str) -> Result<UploadRecord> {
        match self.index.upload(upload_id)? {
            Some(u) if u.bucket == bucket && u.key == key => Ok(u),
            _ => Err(ObjectError::NoSuchUpload(upload_id.to_owned())),
        }
    }

    /// The store an upload's parts and object are written (and its parts read) through;
    /// `customer_key` must be the upload's key when it has one, and absent otherwise.
    async fn upload_store(
        &self,
        upload: &UploadRecord,
        customer_key: Option<&Arc<CustomerKey>>,
    ) -> Result<(BucketStore, Resolved)> {
        let store = self.bucket(&upload.bucket)?;
        let resolved = match (&upload.encryption, customer_key) {
            (Some(UploadEncryption::Customer { customer_key_check }), Some(ck)) => {
                let stored = data_encoding::HEXLOWER
                    .decode(customer_key_check.as_bytes())
                    .unwrap_or_default();
                if !ck.matches(&stored, &ObjectIdentity::unversioned(&upload.bucket, &upload.key)) {
                    return Err(ObjectError::CustomerKeyMismatch(upload.key.clone()));
                }
                Resolved {
                    sealing: Sealing::Customer(ck.clone()),
                    sse_kms: false,
                }
            }
            (Some(UploadEncryption::Customer { .. }), None) => {
                return Err(ObjectError::CustomerKeyRequired(upload.key.clone()))
            }
            (_, Some(_)) => return Err(ObjectError::CustomerKeyNotApplicable(upload.key.clone())),
            (Some(UploadEncryption::Kms { key_id, sse_kms }), None) => {
                self.check_kms_key(key_id).await?;
                Resolved {
                    sealing: Sealing::Kms(key_id.clone()),
                    sse_kms: *sse_kms,
                }
            }
            (None, None) => Resolved {
                sealing: Sealing::Kms(self.key_id.clone()),
                sse_kms: false,
            },
        };
        Ok((store.sealed_with(resolved.sealing.clone()), resolved))
    }

    /// Starts a multipart upload; returns its id and how it will be encrypted (fixed now, as
    /// `params.encryption` and the bucket's default say).
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        params: PutParams,
    ) -> Result<(String, UploadEncryption)> {
        check_key(key)?;
        self.require_bucket(bucket)?;
        let encryption = match self.resolve(bucket, &params.encryption).await? {
            Resolved {
                sealing: Sealing::Kms(key_id),
                sse_kms,
            } => UploadEncryption::Kms { key_id, sse_kms },
            Resolved {
                sealing: Sealing::Customer(ck),
                ..
            } => UploadEncryption::Customer {
                customer_key_check: data_encoding::HEXLOWER
                    .encode(&ck.key_check(&ObjectIdentity::unversioned(bucket, key))),
            },
        };
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| ObjectError::Body("random source failed".into()))?;
        let upload_id = data_encoding::HEXLOWER.encode(&id);
        let record = UploadRecord {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            content_type: params.content_type,
            user_metadata: params.user_metadata,
            headers: params.headers,
            initiated: Utc::now(),
            encryption: Some(encryption.clone()),
        };
        self.index.put_upload(&upload_id, &record)?;
        Ok((upload_id, encryption))
    }

    /// An upload in progress, as created.
    pub fn upload(&self, (bucket, key, upload_id): (&str, &str, &str)) -> Result<UploadRecord> {
        self.upload_for(upload_id, bucket, key)
    }

    /// Stores one part (encrypted, as an object of its own until completion, with the
    /// upload's key: `customer_key` for SSE-C uploads); returns its hex MD5.
    pub async fn put_part<S, E>(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        part_number: u32,
        body: S,
        expected_md5: Option<&[u8]>,
        customer_key: Option<&Arc<CustomerKey>>,
    ) -> Result<String>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        ObjectError: From<E>,
    {
        if !(1..=10_000).contains(&part_number) {
            return Err(ObjectError::InvalidPart(format!(
                "part number {part_number} is outside 1..=10000"
            )));
        }
        let upload = self.upload_for(upload_id, bucket, key)?;
        let (store, _) = self.upload_store(&upload, customer_key).await?;
        let location = layout::part_location(upload_id, part_number);
        let (size, digest, _) = Self::write_stream(&store, &location, body, Attributes::new(), expected_md5).await?;
        let etag = data_encoding::HEXLOWER.encode(&digest);
        let record = PartRecord {
            size,
            etag: etag.clone(),
            last_modified: Utc::now(),
        };
        let stored = {
            let upload_id = upload_id.to_owned();
            self.on_index(move |index| index.put_part(&upload_id, part_number, &record))
                .await?
        };
        if !stored {
            // Completed, aborted or deleted with its bucket while this part was written.
            delete_quietly(&store, &location).await;
            return Err(ObjectError::NoSuchUpload(upload_id.to_owned()));
        }
        Ok(etag)
    }

    /// Completes an upload from the listed parts (ascending numbers, matching ETags): their
    /// plaintext is streamed, in order, into the object, which is encrypted as one. The
    /// ETag is S3's: MD5 of the parts' MD5s, a dash and the part count. SSE-C uploads need
    /// their key here too, since the parts are decrypted to be joined. Every part but the
    /// last must be at least `min_part_size` bytes (the protocol's rule: S3's is 5 MiB).
    pub async fn complete_upload(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        parts: &[(u32, String)],
        customer_key: Option<&Arc<CustomerKey>>,
        condition: Option<WriteCondition>,
        min_part_size: u64,
    ) -> Result<ObjectEntry> {
        let upload = self.upload_for(upload_id, bucket, key)?;
        let (store, resolved) = self.upload_store(&upload, customer_key).await?;
        let stored: BTreeMap<u32, PartRecord> = self.index.parts(upload_id)?.into_iter().collect();
        if parts.is_empty() {
            return Err(ObjectError::InvalidPart(
                "a multipart upload needs at least one part".into(),
            ));
        }
        let mut combined = Md5::new();
        let mut sizes = Vec::with_capacity(parts.len());
        for (i, (number, etag)) in parts.iter().enumerate() {
            if i > 0 && *number <= parts[i - 1].0 {
                return Err(ObjectError::InvalidPart(
                    "parts must be listed in ascending order".into(),
                ));
            }
            let record = stored
                .get(number)
                .filter(|r| r.etag == etag.trim_matches('"'))
                .ok_or_else(|| ObjectError::InvalidPart(format!("part {number} was not uploaded with that ETag")))?;
            if i + 1 < parts.len() && record.size < min_part_size {
                return Err(ObjectError::EntityTooSmall {
                    part: *number,
                    minimum: min_part_size,
                });
            }
            sizes.push(record.size);
            combined.update(
                data_encoding::HEXLOWER
                    .decode(record.etag.as_bytes())
                    .unwrap_or_default(),
            );
        }
        let etag = format!(
            "{}-{}",
            data_encoding::HEXLOWER.encode(&combined.finalize()),
            parts.len()
        );
        let store = Arc::new(store);
        let locations: Vec<Path> = parts
            .iter()
            .map(|(n, _)| layout::part_location(upload_id, *n))
            .collect();
        let parts_store = store.clone();
        // Boxed: a concrete, 'static stream type keeps the async-trait callers' futures Send.
        let body: futures::stream::BoxStream<'static, object_store::Result<Bytes>> = futures::stream::iter(locations)
            .then(move |location| {
                let store = parts_store.clone();
                async move { store.get(&location).await.map(|r| r.into_stream()) }
            })
            .try_flatten()
            .boxed();
        let params = PutParams {
            content_type: upload.content_type,
            user_metadata: upload.user_metadata,
            headers: upload.headers,
            condition,
            expected_md5: None,
            encryption: match resolved.sealing {
                Sealing::Customer(ck) => EncryptionRequest::Customer(ck),
                // The key chosen at creation, even if the bucket's default changed since.
                Sealing::Kms(key_id) if resolved.sse_kms => EncryptionRequest::Kms(Some(key_id)),
                Sealing::Kms(_) => EncryptionRequest::ServiceKey,
            },
        };
        let entry = self
            .put_with_etag(bucket, key, body, params, Some((etag, sizes)))
            .await?;
        self.discard_upload(bucket, upload_id).await?;
        Ok(entry)
    }

    /// Aborts an upload and deletes its parts.
    pub async fn abort_upload(&self, (bucket, key, upload_id): (&str, &str, &str)) -> Result<()> {
        self.upload_for(upload_id, bucket, key)?;
        self.require_bucket(bucket)?;
        self.discard_upload(bucket, upload_id).await
    }

    /// Forgets an upload, then deletes its folder: every part file, recorded or not (a part
    /// written while the upload ended is deleted by its writer, or by garbage collection).
    async fn discard_upload(&self, bucket: &str, upload_id: &str) -> Result<()> {
        self.index.remove_upload(upload_id)?;
        let (root, folder) = (layout::bucket_root(bucket), layout::upload_folder(upload_id));
        delete_prefix(&self.backend, &root.parts().chain(folder.parts()).collect()).await
    }

    /// The parts uploaded so far.
    pub fn list_parts(&self, (bucket, key, upload_id): (&str, &str, &str)) -> Result<Vec<(u32, PartRecord)>> {
        self.upload_for(upload_id, bucket, key)?;
        Ok(self.index.parts(upload_id)?)
    }

    /// Uploads in progress in a bucket.
    pub fn list_uploads(&self, bucket: &str) -> Result<Vec<(String, UploadRecord)>> {
        self.require_bucket(bucket)?;
        Ok(self.index.uploads(bucket)?)
    }
}
