//! The server's buckets as a place for KMS backups (`BUCKET` backup locations,
//! [`crate::kms_api::backup`]): objects are written and read in-process, encrypted like any
//! other object. Called from blocking threads (the KMS API's, the admin socket's); the work
//! runs on the server's runtime.

use std::sync::Arc;

use super::service::{ObjectService, PutParams};
use crate::kms_api::backup::BackupBuckets;

/// [`ObjectService`] buckets for backups.
#[derive(Debug)]
pub(crate) struct ObjectBuckets {
    objects: Arc<ObjectService>,
    runtime: tokio::runtime::Handle,
}

impl ObjectBuckets {
    /// Backups in `objects`, whose async work runs on `runtime`.
    pub(crate) fn new(objects: Arc<ObjectService>, runtime: tokio::runtime::Handle) -> Self {
        ObjectBuckets { objects, runtime }
    }

    fn run<T: Send + 'static>(&self, work: impl std::future::Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().expect("the server's runtime runs its tasks")
    }
}

impl BackupBuckets for ObjectBuckets {
    fn put(&self, bucket: &str, object: &str, bytes: Vec<u8>) -> Result<(), String> {
        let (objects, bucket, object) = (self.objects.clone(), bucket.to_owned(), object.to_owned());
        self.run(async move {
            let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(bytes))]);
            let params = PutParams {
                content_type: Some("text/plain; charset=utf-8".into()),
                ..Default::default()
            };
            objects.put(&bucket, &object, body, params).await.map(drop)
        })
        .map_err(|e| e.to_string())
    }

    fn get(&self, bucket: &str, object: &str) -> Result<Vec<u8>, String> {
        let (objects, bucket, object) = (self.objects.clone(), bucket.to_owned(), object.to_owned());
        self.run(async move {
            let (_, got) = objects
                .get(&bucket, &object, None, None)
                .await
                .map_err(|e| e.to_string())?;
            got.bytes().await.map(|b| b.to_vec()).map_err(|e| e.to_string())
        })
    }
}
