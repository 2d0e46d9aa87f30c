//! EncryptedStore with the real embedded KMS as key provider, over two real backends: a
//! LocalFileSystem, and a SeaweedFS S3 server (the distributed store sealstore puts
//! ciphertext on when one machine is not enough) started by the test. Every scenario runs
//! against both; tampering goes through the backend itself, as an attacker with access to
//! the storage would.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use kms_core::{Kms, Principal};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, WriteMultipart,
};
use sealstore::crypto::segment::SegmentSize;
use sealstore::object::backend::open_backend;
use sealstore::object::{EncryptedStore, EncryptedStoreError};

struct Fixture {
    _dir: tempfile::TempDir,
    kms: Arc<Kms>,
    key: kms_core::Ocid,
    /// Where the ciphertext lives (shared by every "bucket" of the fixture).
    backend: Arc<dyn ObjectStore>,
}

impl Fixture {
    fn new(backend: impl FnOnce(&std::path::Path) -> Arc<dyn ObjectStore>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (kms, key) = common::kms_with_key(dir.path());
        let backend = backend(dir.path());
        Fixture {
            _dir: dir,
            kms,
            key,
            backend,
        }
    }

    fn local() -> Fixture {
        Fixture::new(|dir| open_backend(dir.join("objects").to_str().unwrap(), &[]).unwrap())
    }

    /// `bucket` is the name bound into each object's identity.
    fn store(&self, bucket: &str) -> EncryptedStore<Arc<dyn ObjectStore>> {
        EncryptedStore::with_segment_size(
            self.backend.clone(),
            self.kms.clone(),
            self.key.clone(),
            bucket,
            SegmentSize::new(4096).unwrap(),
        )
    }

    async fn raw(&self, key: &str) -> Vec<u8> {
        self.backend
            .get(&Path::from(key))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    async fn put_raw(&self, key: &str, bytes: &[u8]) {
        self.backend
            .put(&Path::from(key), Bytes::copy_from_slice(bytes).into())
            .await
            .unwrap();
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

async fn round_trips_sizes_and_reports_plaintext_sizes(f: &Fixture) {
    let store = f.store("photos");
    for len in [0usize, 1, 4095, 4096, 4097, 3 * 4096, 1 << 20, (5 << 20) + 3] {
        let path = Path::from(format!("obj-{len}"));
        let plain = data(len);
        store.put(&path, plain.clone().into()).await.unwrap();
        assert_eq!(store.head(&path).await.unwrap().size, len as u64);
        let got = store.get(&path).await.unwrap();
        assert_eq!(got.meta.size, len as u64);
        assert_eq!(got.bytes().await.unwrap(), plain, "len {len}");
        // What lands in the backend is ciphertext.
        let stored = f.raw(&format!("obj-{len}")).await;
        assert_eq!(&stored[..4], b"SSOB");
        if len >= 64 {
            assert!(
                !stored.windows(64).any(|w| w == &plain[..64]),
                "plaintext visible in the backend"
            );
        }
    }
    let listed: Vec<(String, u64)> = store
        .list(None)
        .map_ok(|m| (m.location.to_string(), m.size))
        .try_collect()
        .await
        .unwrap();
    assert!(listed.contains(&("obj-4097".to_string(), 4097)), "{listed:?}");
    assert!(listed.contains(&("obj-0".to_string(), 0)));
}

async fn ranged_reads_return_exact_slices(f: &Fixture) {
    let store = f.store("b");
    let plain = data(50_000);
    let path = Path::from("r");
    store.put(&path, plain.clone().into()).await.unwrap();
    for (start, end) in [
        (0u64, 1u64),
        (0, 50_000),
        (4095, 4097),
        (5000, 20_001),
        (49_999, 50_000),
        (12_288, 16_384),
    ] {
        let got = store.get_range(&path, start..end).await.unwrap();
        assert_eq!(&got[..], &plain[start as usize..end as usize], "{start}..{end}");
    }
    let suffix = store
        .get_opts(
            &path,
            GetOptions {
                range: Some(GetRange::Suffix(100)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(suffix.range, 49_900..50_000);
    assert_eq!(suffix.bytes().await.unwrap(), &plain[49_900..]);
    let offset = store
        .get_opts(
            &path,
            GetOptions {
                range: Some(GetRange::Offset(45_000)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(offset.bytes().await.unwrap(), &plain[45_000..]);
    assert!(
        store.get_range(&path, 60_000..60_010).await.is_err(),
        "a range past the end is an error"
    );
}

/// The backend with a count of the reads it is asked for.
#[derive(Debug)]
struct CountingReads {
    inner: Arc<dyn ObjectStore>,
    gets: AtomicUsize,
}

impl std::fmt::Display for CountingReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CountingReads({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for CountingReads {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_opts(location, options).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

/// A whole object is read in one request to the backend (its header and body from the same
/// answer), a range in at most two; both still catch damage anywhere in what they read.
async fn large_objects_read_in_few_requests_and_still_checked(f: &Fixture) {
    let counting = Arc::new(CountingReads {
        inner: f.backend.clone(),
        gets: AtomicUsize::new(0),
    });
    let store = EncryptedStore::with_segment_size(
        counting.clone() as Arc<dyn ObjectStore>,
        f.kms.clone(),
        f.key.clone(),
        "b",
        SegmentSize::new(4096).unwrap(),
    );
    let reads = |counting: &CountingReads| counting.gets.swap(0, Ordering::SeqCst);
    let plain = data((6 << 20) + 5);
    let path = Path::from("large");
    store.put(&path, plain.clone().into()).await.unwrap();
    reads(&counting);

    assert_eq!(store.get(&path).await.unwrap().bytes().await.unwrap(), plain);
    assert_eq!(reads(&counting), 1, "a whole GET is one request");
    for (start, end) in [
        (0u64, 10u64),
        (100, 3 << 20),
        (5 << 20, (5 << 20) + 100),
        ((6 << 20) - 7, (6 << 20) + 5),
    ] {
        let got = store.get_range(&path, start..end).await.unwrap();
        assert_eq!(&got[..], &plain[start as usize..end as usize], "{start}..{end}");
        assert!(reads(&counting) <= 2, "a range takes at most two requests");
    }

    // Damage far past the first batch and the header probe is caught by a whole read and by
    // the range that covers it, and the range that does not cover it still reads.
    let original = f.raw("large").await;
    let mut bad = original.clone();
    // 100 bytes into the fourth segment from the end (the last one holds 5 bytes + a tag).
    let at = original.len() - 21 - 3 * 4112 + 100;
    bad[at] ^= 0x80;
    f.put_raw("large", &bad).await;
    let e = store.get(&path).await.unwrap().bytes().await.expect_err("damage read");
    let e = EncryptedStoreError::from_object_store(&e).expect("typed");
    let bad_segment = plain.len() as u64 / 4096 - 3;
    assert_eq!(e.segment(), Some(bad_segment), "{e}");
    let covering = store.get_range(&path, (6 << 20) - 20_000..(6 << 20)).await;
    assert!(covering.is_err(), "the range over the damage was read");
    let clean = store.get_range(&path, 0..(1 << 20)).await.unwrap();
    assert_eq!(&clean[..], &plain[..1 << 20]);
}

async fn attributes_are_sealed_and_returned(f: &Fixture) {
    let store = f.store("b");
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, "text/x-secret-type".into());
    attributes.insert(Attribute::Metadata("owner".into()), "alice".into());
    let path = Path::from("with-attrs");
    store
        .put_opts(
            &path,
            Bytes::from_static(b"hi").into(),
            PutOptions {
                attributes,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = store.get(&path).await.unwrap();
    assert_eq!(
        got.attributes.get(&Attribute::ContentType).map(|v| v.as_ref()),
        Some("text/x-secret-type")
    );
    assert_eq!(
        got.attributes
            .get(&Attribute::Metadata("owner".into()))
            .map(|v| v.as_ref()),
        Some("alice")
    );
    let stored = f.raw("with-attrs").await;
    assert!(
        !stored.windows(6).any(|w| w == b"secret"),
        "metadata is encrypted at rest"
    );
}

/// Reads `key`, which must fail as damage (at the get, or while its body streams, through
/// the `ObjectStore` trait); returns the first bad segment, when a segment failed.
async fn damaged_segment(store: &EncryptedStore<Arc<dyn ObjectStore>>, key: &str) -> Option<u64> {
    let e = match store.get(&Path::from(key)).await {
        Err(e) => e,
        Ok(got) => got.bytes().await.expect_err("a damaged object was read"),
    };
    match EncryptedStoreError::from_object_store(&e) {
        Some(damage @ EncryptedStoreError::Integrity { key: k, .. }) if k == key => damage.segment(),
        _ => panic!("{key}: not reported as damage: {e}"),
    }
}

async fn tampering_and_moving_are_detected(f: &Fixture) {
    let store = f.store("b");
    let plain = data(3 * 4096 + 10);
    store.put(&Path::from("a"), plain.clone().into()).await.unwrap();
    let original = f.raw("a").await;

    let mut bad = original.clone();
    let at = original.len() - 5000;
    bad[at] ^= 1;
    f.put_raw("a", &bad).await;
    assert_eq!(damaged_segment(&store, "a").await, Some(1), "flipped byte");

    f.put_raw("a", &original[..original.len() - (10 + 16)]).await;
    damaged_segment(&store, "a").await; // last segment dropped

    let mut reordered = original.clone();
    let body = original.len() - (3 * 4112 + 26);
    reordered[body..body + 4112].copy_from_slice(&original[body + 4112..body + 2 * 4112]);
    reordered[body + 4112..body + 2 * 4112].copy_from_slice(&original[body..body + 4112]);
    f.put_raw("a", &reordered).await;
    assert_eq!(damaged_segment(&store, "a").await, Some(0), "segments swapped");

    f.put_raw("moved", &original).await;
    assert_eq!(damaged_segment(&store, "moved").await, None, "moved to another name");

    f.put_raw("a", &original).await;
    assert_eq!(store.get(&Path::from("a")).await.unwrap().bytes().await.unwrap(), plain);
    assert_eq!(
        damaged_segment(&f.store("not-b"), "a").await,
        None,
        "read as another bucket"
    );
}

async fn refused_keys_and_missing_objects_are_typed(f: &Fixture) {
    let store = f.store("b");
    store.put(&Path::from("k"), data(10).into()).await.unwrap();
    // The store's own methods fail with the typed error; the backend's stays recognisable.
    assert!(matches!(
        store.read(&Path::from("nope"), GetOptions::default()).await,
        Err(EncryptedStoreError::Backend(object_store::Error::NotFound { .. }))
    ));
    f.kms.disable_key(&Principal::local_admin(), &f.key).unwrap();
    let refused = store.read(&Path::from("k"), GetOptions::default()).await.unwrap_err();
    assert!(refused.kms().is_some(), "{refused:?}");
    // Through the ObjectStore trait, the same error, recovered.
    let e = store.get(&Path::from("k")).await.unwrap_err();
    assert!(
        matches!(
            e,
            object_store::Error::Generic {
                store: "EncryptedStore",
                ..
            }
        ),
        "{e}"
    );
    assert!(EncryptedStoreError::from_object_store(&e)
        .and_then(EncryptedStoreError::kms)
        .is_some());
    let e = store.put(&Path::from("k2"), data(10).into()).await.unwrap_err();
    assert!(matches!(EncryptedStoreError::from(e), EncryptedStoreError::Key { .. }));
    f.kms.enable_key(&Principal::local_admin(), &f.key).unwrap();
    assert_eq!(
        store.get(&Path::from("k")).await.unwrap().bytes().await.unwrap(),
        data(10)
    );
}

async fn key_version_of(f: &Fixture, key: &str) -> kms_core::Ocid {
    let raw = f.raw(key).await;
    let (header, _) = sealstore_format::object::ObjectHeader::parse(&raw).unwrap();
    kms_core::ciphertext::parse(&header.wrapped_dek).unwrap().key_version_id
}

async fn rotation_is_lazy_reads_old_writes_new_and_copy_reencrypts(f: &Fixture) {
    let store = f.store("b");
    let old = data(10_000);
    store.put(&Path::from("old"), old.clone().into()).await.unwrap();
    let v1 = key_version_of(f, "old").await;
    let v2 = f.kms.create_key_version(&Principal::local_admin(), &f.key).unwrap().id;
    assert_ne!(v1, v2);
    assert_eq!(store.get(&Path::from("old")).await.unwrap().bytes().await.unwrap(), old);
    store.put(&Path::from("new"), data(10).into()).await.unwrap();
    assert_eq!(key_version_of(f, "new").await, v2);
    store.copy(&Path::from("old"), &Path::from("copied")).await.unwrap();
    assert_eq!(key_version_of(f, "copied").await, v2);
    assert_eq!(
        store.get(&Path::from("copied")).await.unwrap().bytes().await.unwrap(),
        old
    );
    // Copying an object onto itself moves it to the new version (S3's way to re-encrypt).
    store.copy(&Path::from("old"), &Path::from("old")).await.unwrap();
    assert_eq!(key_version_of(f, "old").await, v2);
    assert_eq!(store.get(&Path::from("old")).await.unwrap().bytes().await.unwrap(), old);
    // Rewrap: after another rotation, only the header changes.
    let v3 = f.kms.create_key_version(&Principal::local_admin(), &f.key).unwrap().id;
    let before = f.raw("old").await;
    assert_eq!(store.rewrap(&Path::from("old")).await.unwrap(), Some(v3.clone()));
    let after = f.raw("old").await;
    assert_eq!(key_version_of(f, "old").await, v3);
    assert_eq!(
        before[before.len() - 10_000..],
        after[after.len() - 10_000..],
        "body untouched"
    );
    assert_eq!(store.rewrap(&Path::from("old")).await.unwrap(), None, "already current");
    assert_eq!(store.get(&Path::from("old")).await.unwrap().bytes().await.unwrap(), old);
    // A body of several batches (64 segments each) is copied as it is.
    let big = data(600_000);
    store.put(&Path::from("big"), big.clone().into()).await.unwrap();
    let v4 = f.kms.create_key_version(&Principal::local_admin(), &f.key).unwrap().id;
    let before = f.raw("big").await;
    assert_eq!(store.rewrap(&Path::from("big")).await.unwrap(), Some(v4));
    let after = f.raw("big").await;
    assert_eq!(before.len(), after.len());
    assert_eq!(
        before[before.len() - 600_000..],
        after[after.len() - 600_000..],
        "body untouched"
    );
    assert_eq!(store.get(&Path::from("big")).await.unwrap().bytes().await.unwrap(), big);
}

async fn multipart_upload_with_odd_part_sizes(f: &Fixture) {
    let store = f.store("b");
    // Several 8 MiB inner parts and a short last one.
    let plain = data(2 * (8 << 20) + 12_345);
    let upload = store.put_multipart(&Path::from("mp")).await.unwrap();
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 333_333);
    for chunk in plain.chunks(100_000) {
        writer.write(chunk);
    }
    writer.finish().await.unwrap();
    assert_eq!(store.head(&Path::from("mp")).await.unwrap().size, plain.len() as u64);
    assert_eq!(
        store.get(&Path::from("mp")).await.unwrap().bytes().await.unwrap(),
        plain
    );
    let part = store.get_range(&Path::from("mp"), 500_000..600_000).await.unwrap();
    assert_eq!(&part[..], &plain[500_000..600_000]);

    // Parts of exactly one inner batch, of several, and a whole number of batches in all (the
    // last batch is held back to end the object): each is sealed from the part itself.
    for (name, shape) in [
        ("whole-parts", vec![8 << 20, 8 << 20]),
        ("big-part", vec![20 << 20, 8 << 20, 1]),
        ("tiny-then-whole", vec![1, 8 << 20, (8 << 20) - 1]),
    ] {
        let plain = data(shape.iter().sum());
        let mut upload = store.put_multipart(&Path::from(name)).await.unwrap();
        let mut at = 0;
        for len in shape {
            upload
                .put_part(PutPayload::from(plain[at..at + len].to_vec()))
                .await
                .unwrap();
            at += len;
        }
        upload.complete().await.unwrap();
        let got = store.get(&Path::from(name)).await.unwrap().bytes().await.unwrap();
        assert!(got == plain, "{name}: the object reads back as written");
        let tail = store
            .get_range(&Path::from(name), (16 << 20) - 10..(16 << 20) + 10)
            .await;
        if plain.len() >= (16 << 20) + 10 {
            assert_eq!(&tail.unwrap()[..], &plain[(16 << 20) - 10..(16 << 20) + 10], "{name}");
        }
    }
}

async fn delete_and_missing_objects(f: &Fixture) {
    let store = f.store("b");
    store
        .put(&Path::from("x"), PutPayload::from_static(b"x"))
        .await
        .unwrap();
    store.delete(&Path::from("x")).await.unwrap();
    assert!(matches!(
        store.head(&Path::from("x")).await,
        Err(object_store::Error::NotFound { .. })
    ));
    assert!(matches!(
        store.get(&Path::from("nope")).await,
        Err(object_store::Error::NotFound { .. })
    ));
}

macro_rules! local_tests {
    ($($name:ident),*) => {$(
        #[tokio::test]
        async fn $name() {
            super::$name(&Fixture::local()).await
        }
    )*};
}

mod local {
    use super::Fixture;
    local_tests!(
        round_trips_sizes_and_reports_plaintext_sizes,
        ranged_reads_return_exact_slices,
        large_objects_read_in_few_requests_and_still_checked,
        attributes_are_sealed_and_returned,
        tampering_and_moving_are_detected,
        rotation_is_lazy_reads_old_writes_new_and_copy_reencrypts,
        multipart_upload_with_odd_part_sizes,
        delete_and_missing_objects,
        refused_keys_and_missing_objects_are_typed
    );
}

/// The same scenarios with the ciphertext in SeaweedFS, through object_store's AmazonS3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_passes_the_same_scenarios() {
    let weed = tokio::task::spawn_blocking(common::SeaweedFs::start).await.unwrap();
    let mut n = 0;
    let mut fixture = || {
        n += 1;
        let bucket = format!("scenario-{n}");
        weed.create_bucket(&bucket);
        // Every other scenario keeps its ciphertext under a prefix (s3://bucket/prefix).
        let url_path = if n % 2 == 1 {
            format!("{bucket}/tenant-a/objects")
        } else {
            bucket
        };
        Fixture::new(|_| weed.backend(&url_path))
    };
    round_trips_sizes_and_reports_plaintext_sizes(&fixture()).await;
    ranged_reads_return_exact_slices(&fixture()).await;
    large_objects_read_in_few_requests_and_still_checked(&fixture()).await;
    attributes_are_sealed_and_returned(&fixture()).await;
    tampering_and_moving_are_detected(&fixture()).await;
    rotation_is_lazy_reads_old_writes_new_and_copy_reencrypts(&fixture()).await;
    multipart_upload_with_odd_part_sizes(&fixture()).await;
    delete_and_missing_objects(&fixture()).await;
    refused_keys_and_missing_objects_are_typed(&fixture()).await;
}
