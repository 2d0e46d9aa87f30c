//! A data directory written in layout 1 (before docs/FORMATS.md's "Object layout" version
//! 2), opened by the current object service: built here as the old code wrote it — objects
//! at `<bucket>/<object_store path of the key>` sealed under that path, index entries
//! without a layout, an upload in progress — then read, rewritten, deleted and collected.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{Duration, Utc};
use kms_core::KeyProvider;
use md5::{Digest, Md5};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;
use sealstore::internals::collect_garbage;
use sealstore::internals::index::{ContentHeaders, Encryption, Layout, ObjectEntry, ObjectIndex, UploadRecord};
use sealstore::internals::{ObjectError, ObjectService, PutParams};
use sealstore::object::backend::open_backend;
use sealstore::object::EncryptedStore;

fn files_under(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

async fn read(service: &ObjectService, key: &str) -> Result<Vec<u8>, ObjectError> {
    let (_, got) = service.get("old", key, None, None).await?;
    Ok(got.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn layout_1_data_is_read_in_place_then_moved_by_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (kms, key_id) = common::kms_with_key(&data);
    let keys: Arc<dyn KeyProvider> = kms.clone();
    let objects_dir = data.join("objects");

    // What the old code left: objects sealed under their object_store path.
    let index = Arc::new(ObjectIndex::open(&data).unwrap());
    index.create_bucket("old").unwrap();
    let backend = open_backend(objects_dir.to_str().unwrap(), &[]).unwrap();
    let legacy = EncryptedStore::new(
        PrefixStore::new(backend.clone(), "old"),
        keys.clone(),
        key_id.clone(),
        "old",
    );
    let t0 = Utc::now() - Duration::hours(2);
    let write = |key: &'static str, stored_as: &'static str, body: &'static [u8], age: i64| {
        let legacy = &legacy;
        let index = index.clone();
        async move {
            let (_, wrapped_by) = legacy
                .put_reporting(
                    &Path::from(stored_as),
                    Bytes::from_static(body).into(),
                    Default::default(),
                )
                .await
                .unwrap();
            let entry = ObjectEntry {
                size: body.len() as u64,
                etag: data_encoding::HEXLOWER.encode(&Md5::digest(body)),
                content_type: None,
                user_metadata: Default::default(),
                encryption: Encryption::recorded(wrapped_by, false),
                last_modified: t0 + Duration::minutes(age),
                headers: ContentHeaders::default(),
                parts: Vec::new(),
                layout: Layout::Legacy,
            };
            // Entries of the old code had no layout field at all.
            let mut json = serde_json::to_value(&entry).unwrap();
            json.as_object_mut().unwrap().remove("layout");
            let entry: ObjectEntry = serde_json::from_value(json).unwrap();
            assert_eq!(entry.layout, Layout::Legacy);
            index.put("old", key, &entry).unwrap();
        }
    };
    write("a/b", "a/b", b"plain old object", 0).await;
    // The old mapping: `x//y` and `x/y` were one file; `x/y` was written last.
    write("x//y", "x/y", b"first writer", 1).await;
    write("x/y", "x/y", b"second writer", 2).await;
    // A key object_store escapes (`~` is stored as %7E): sealed under the escaped path.
    write("odd~key", "odd~key", b"escaped", 3).await;
    // An upload in progress with a part in the old uploads folder.
    index
        .put_upload(
            "00112233445566778899aabbccddeeff",
            &UploadRecord {
                bucket: "old".into(),
                key: "big".into(),
                content_type: None,
                user_metadata: Default::default(),
                headers: ContentHeaders::default(),
                initiated: t0,
                encryption: None,
            },
        )
        .unwrap();
    backend
        .put(
            &Path::from("old/.sealstore-uploads/00112233445566778899aabbccddeeff/00001"),
            Bytes::from_static(b"old part").into(),
        )
        .await
        .unwrap();
    assert_eq!(index.layout_version().unwrap(), None);

    // Opening brings the index up to layout 2.
    let service = ObjectService::open(&data, None, keys.clone(), key_id.clone(), index.clone()).unwrap();
    assert_eq!(index.layout_version().unwrap(), Some(2));
    assert_eq!(read(&service, "a/b").await.unwrap(), b"plain old object");
    assert_eq!(read(&service, "x/y").await.unwrap(), b"second writer");
    assert_eq!(read(&service, "odd~key").await.unwrap(), b"escaped");
    assert!(
        matches!(read(&service, "x//y").await, Err(ObjectError::NoSuchKey { .. })),
        "the key whose bytes were overwritten is gone, not served the other's bytes"
    );
    assert!(
        service.list_uploads("old").unwrap().is_empty(),
        "uploads in progress were aborted"
    );

    // Writing a key moves it to layout 2 and deletes its layout-1 file.
    let body = futures::stream::iter([Ok::<_, ObjectError>(Bytes::from_static(b"rewritten"))]);
    let entry = service.put("old", "a/b", body, PutParams::default()).await.unwrap();
    assert_eq!(entry.layout, Layout::Current);
    assert_eq!(read(&service, "a/b").await.unwrap(), b"rewritten");
    // `x//y` is a key of its own now.
    let body = futures::stream::iter([Ok::<_, ObjectError>(Bytes::from_static(b"double slash"))]);
    service.put("old", "x//y", body, PutParams::default()).await.unwrap();
    assert_eq!(read(&service, "x//y").await.unwrap(), b"double slash");
    assert_eq!(read(&service, "x/y").await.unwrap(), b"second writer");

    // Garbage collection removes the aborted upload's part and keeps what entries use.
    let report = collect_garbage(&service, Utc::now() + Duration::seconds(5))
        .await
        .unwrap();
    assert_eq!(report.files, 1, "{report:?}");
    assert_eq!(
        files_under(&objects_dir),
        [
            "_buckets/old/objects/06/x!2F!2Fy!",
            "_buckets/old/objects/c1/a!2Fb!",
            "old/odd%7Ekey",
            "old/x/y",
        ]
    );

    // Deleting a layout-1 object deletes its file; the rest follows.
    for key in ["odd~key", "x/y", "a/b", "x//y"] {
        service.delete("old", key).await.unwrap();
    }
    assert!(files_under(&objects_dir).is_empty(), "{:?}", files_under(&objects_dir));

    // A rebuild that finds a key in both layouts (the layout-1 file's deletion was
    // interrupted) keeps the layout-2 object, which was written later.
    let body = futures::stream::iter([Ok::<_, ObjectError>(Bytes::from_static(b"layout 2"))]);
    service.put("old", "both", body, PutParams::default()).await.unwrap();
    legacy
        .put(&Path::from("both"), Bytes::from_static(b"layout 1").into())
        .await
        .unwrap();
    assert_eq!(service.rebuild_index("old", |_, _| {}).await.unwrap(), 1);
    assert_eq!(index.get("old", "both").unwrap().unwrap().layout, Layout::Current);
    assert_eq!(read(&service, "both").await.unwrap(), b"layout 2");
    service.delete("old", "both").await.unwrap();
    service.delete_bucket("old").await.unwrap();

    // A second open changes nothing.
    drop(service);
    ObjectService::open(&data, None, keys, key_id, index.clone()).unwrap();
    assert_eq!(index.layout_version().unwrap(), Some(2));
}
