//! Garbage collection on an S3-compatible backend (SeaweedFS): what nothing refers to goes,
//! once older than the threshold; what the index refers to stays (docs/FORMATS.md, "Object
//! layout", Garbage).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{Duration, Utc};
use futures::TryStreamExt;
use kms_core::KeyProvider;
use object_store::path::Path;
use object_store::ObjectStore;
use sealstore::internals::collect_garbage;
use sealstore::internals::index::ObjectIndex;
use sealstore::internals::layout;
use sealstore::internals::{ObjectError, ObjectService, PutParams};

fn body(bytes: &'static [u8]) -> impl futures::Stream<Item = Result<Bytes, ObjectError>> + Unpin {
    futures::stream::iter([Ok(Bytes::from_static(bytes))])
}

async fn stored(backend: &Arc<dyn ObjectStore>) -> Vec<String> {
    let mut names: Vec<String> = backend
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn unreferenced_files_on_an_s3_backend_are_collected_after_the_grace_period() {
    let weed = common::SeaweedFs::start();
    weed.create_bucket("gc-test");
    let backend = weed.backend("gc-test");
    let dir = tempfile::tempdir().unwrap();
    let (kms, key_id) = common::kms_with_key(dir.path());
    let keys: Arc<dyn KeyProvider> = kms;
    // The index where the tests run: redb files, or (scripts/with-postgres) a database.
    let location = sealstore_meta::testing::location(dir.path())
        .unwrap_or_else(|| sealstore_meta::Location::Dir(dir.path().to_owned()));
    let index = Arc::new(ObjectIndex::open_at(&location).unwrap());
    assert_eq!(
        dir.path().join("objects.redb").exists(),
        !location.is_shared(),
        "the index is where the run says"
    );
    let service = ObjectService::open(dir.path(), Some(backend.clone()), keys, key_id, index).unwrap();

    service.create_bucket("live").unwrap();
    let long_key = "k".repeat(700);
    service
        .put("live", "keep/me", body(b"kept"), PutParams::default())
        .await
        .unwrap();
    service
        .put("live", &long_key, body(b"long"), PutParams::default())
        .await
        .unwrap();
    let (upload_id, _) = service
        .create_upload("live", "big", PutParams::default())
        .await
        .unwrap();
    service
        .put_part(("live", "big", &upload_id), 1, body(b"part"), None, None)
        .await
        .unwrap();
    let live = stored(&backend).await;
    assert_eq!(live.len(), 3, "{live:?}");

    // What crashes leave: an object never indexed, a part of an upload that ended, the folder
    // of a deleted bucket, a long key's object never indexed.
    let root = |bucket: &str, within: &Path| format!("{}/{within}", layout::bucket_root(bucket));
    let orphans = [
        root("live", &layout::object_location("never/indexed")),
        root("live", &layout::part_location("00000000000000000000000000000000", 1)),
        root("gone", &layout::object_location("old")),
        root("live", &layout::object_location(&"z".repeat(700))),
    ];
    for orphan in &orphans {
        backend
            .put(&Path::parse(orphan).unwrap(), Bytes::from_static(b"junk").into())
            .await
            .unwrap();
    }

    // Nothing is older than the threshold yet: nothing goes.
    let report = collect_garbage(&service, Utc::now() - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(report.files, 0);
    assert_eq!(stored(&backend).await.len(), 3 + orphans.len());

    let report = collect_garbage(&service, Utc::now() + Duration::seconds(5))
        .await
        .unwrap();
    assert_eq!(report.files, orphans.len() as u64, "{report:?}");
    assert_eq!(stored(&backend).await, live);
    let (_, got) = service.get("live", &long_key, None, None).await.unwrap();
    assert_eq!(got.bytes().await.unwrap(), Bytes::from_static(b"long"));
    let (_, got) = service.get("live", "keep/me", None, None).await.unwrap();
    assert_eq!(got.bytes().await.unwrap(), Bytes::from_static(b"kept"));
    assert_eq!(service.list_parts(("live", "big", &upload_id)).unwrap().len(), 1);
}
