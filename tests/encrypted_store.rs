//! EncryptedStore over a real LocalFileSystem with the real embedded KMS as key provider.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use kms_core::{CreateKey, CreateVault, Kms, KmsConfig, Principal};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{Attribute, Attributes, GetOptions, GetRange, ObjectStore, PutOptions, PutPayload, WriteMultipart};
use sealstore::crypto::segment::SegmentSize;
use sealstore::object::EncryptedStore;

struct Fixture {
    _dir: tempfile::TempDir,
    kms: Arc<Kms>,
    key: kms_core::Ocid,
    root: std::path::PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let kms = Arc::new(Kms::open(KmsConfig::new(dir.path().join("kms"))).unwrap());
        let me = Principal::local_admin();
        let vault = kms
            .create_vault(
                &me,
                CreateVault {
                    display_name: "v".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let key = kms.create_key(&me, CreateKey::new(vault.id, "objects")).unwrap().id;
        let root = dir.path().join("objects");
        std::fs::create_dir_all(&root).unwrap();
        Fixture {
            _dir: dir,
            kms,
            key,
            root,
        }
    }

    fn store(&self, bucket: &str) -> EncryptedStore<LocalFileSystem> {
        let inner = LocalFileSystem::new_with_prefix(&self.root).unwrap();
        EncryptedStore::with_segment_size(
            inner,
            self.kms.clone(),
            self.key.clone(),
            bucket,
            SegmentSize::new(4096).unwrap(),
        )
    }

    fn file(&self, key: &str) -> std::path::PathBuf {
        self.root.join(key)
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

#[tokio::test]
async fn round_trips_sizes_and_reports_plaintext_sizes() {
    let f = Fixture::new();
    let store = f.store("photos");
    for len in [0usize, 1, 4095, 4096, 4097, 3 * 4096, 1 << 20, (5 << 20) + 3] {
        let path = Path::from(format!("obj-{len}"));
        let plain = data(len);
        store.put(&path, plain.clone().into()).await.unwrap();
        assert_eq!(store.head(&path).await.unwrap().size, len as u64);
        let got = store.get(&path).await.unwrap();
        assert_eq!(got.meta.size, len as u64);
        assert_eq!(got.bytes().await.unwrap(), plain, "len {len}");
        // What lands on disk is ciphertext.
        let on_disk = std::fs::read(f.file(&format!("obj-{len}"))).unwrap();
        assert_eq!(&on_disk[..4], b"SSOB");
        if len >= 64 {
            assert!(
                !on_disk.windows(64).any(|w| w == &plain[..64]),
                "plaintext visible on disk"
            );
        }
    }
    let mut listed: Vec<(String, u64)> = store
        .list(None)
        .map_ok(|m| (m.location.to_string(), m.size))
        .try_collect()
        .await
        .unwrap();
    listed.sort();
    assert!(listed.contains(&("obj-4097".to_string(), 4097)));
    assert!(listed.contains(&("obj-0".to_string(), 0)));
}

#[tokio::test]
async fn ranged_reads_return_exact_slices() {
    let f = Fixture::new();
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

#[tokio::test]
async fn attributes_are_sealed_and_returned() {
    let f = Fixture::new();
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
    let on_disk = std::fs::read(f.file("with-attrs")).unwrap();
    assert!(
        !on_disk.windows(6).any(|w| w == b"secret"),
        "metadata is encrypted at rest"
    );
}

#[tokio::test]
async fn tampering_and_moving_are_detected() {
    let f = Fixture::new();
    let store = f.store("b");
    let plain = data(3 * 4096 + 10);
    store.put(&Path::from("a"), plain.clone().into()).await.unwrap();
    store.put(&Path::from("other"), data(100).into()).await.unwrap();
    let original = std::fs::read(f.file("a")).unwrap();

    // A flipped byte in the body.
    let mut bad = original.clone();
    let at = original.len() - 5000;
    bad[at] ^= 1;
    std::fs::write(f.file("a"), &bad).unwrap();
    assert!(store.get(&Path::from("a")).await.unwrap().bytes().await.is_err());

    // Truncated at a segment boundary (drop the last segment).
    std::fs::write(f.file("a"), &original[..original.len() - (10 + 16)]).unwrap();
    let r = store.get(&Path::from("a")).await;
    assert!(r.is_err() || r.unwrap().bytes().await.is_err());

    // Moved to another name: the identity no longer matches.
    std::fs::write(f.file("b-moved"), &original).unwrap();
    let r = store.get(&Path::from("b-moved")).await;
    assert!(r.is_err() || r.unwrap().bytes().await.is_err());

    // The same object in another bucket (another store name over the same files).
    std::fs::write(f.file("a"), &original).unwrap();
    assert_eq!(store.get(&Path::from("a")).await.unwrap().bytes().await.unwrap(), plain);
    let elsewhere = f.store("not-b");
    let r = elsewhere.get(&Path::from("a")).await;
    assert!(r.is_err() || r.unwrap().bytes().await.is_err());
}

fn key_version_of(file: &std::path::Path) -> kms_core::Ocid {
    let bytes = std::fs::read(file).unwrap();
    let (header, _) = sealstore::object::format::ObjectHeader::parse(&bytes).unwrap();
    kms_core::ciphertext::parse(&header.wrapped_dek).unwrap().key_version_id
}

#[tokio::test]
async fn rotation_is_lazy_reads_old_writes_new_and_copy_reencrypts() {
    let f = Fixture::new();
    let store = f.store("b");
    let old = data(10_000);
    store.put(&Path::from("old"), old.clone().into()).await.unwrap();
    let v1 = key_version_of(&f.file("old"));
    let v2 = f.kms.create_key_version(&Principal::local_admin(), &f.key).unwrap().id;
    assert_ne!(v1, v2);
    // Old object still reads; a new write uses the new version.
    assert_eq!(store.get(&Path::from("old")).await.unwrap().bytes().await.unwrap(), old);
    store.put(&Path::from("new"), data(10).into()).await.unwrap();
    assert_eq!(key_version_of(&f.file("new")), v2);
    // Copy decrypts and re-encrypts: new name, new version, same bytes.
    store.copy(&Path::from("old"), &Path::from("copied")).await.unwrap();
    assert_eq!(key_version_of(&f.file("copied")), v2);
    assert_eq!(
        store.get(&Path::from("copied")).await.unwrap().bytes().await.unwrap(),
        old
    );
    // Copying an object onto itself moves it to the new version (S3's way to re-encrypt).
    store.copy(&Path::from("old"), &Path::from("old")).await.unwrap();
    assert_eq!(key_version_of(&f.file("old")), v2);
    assert_eq!(store.get(&Path::from("old")).await.unwrap().bytes().await.unwrap(), old);
}

#[tokio::test]
async fn multipart_upload_with_odd_part_sizes() {
    let f = Fixture::new();
    let store = f.store("b");
    let plain = data(3 * 128 * 4096 + 12_345);
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
}

#[tokio::test]
async fn delete_and_missing_objects() {
    let f = Fixture::new();
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
