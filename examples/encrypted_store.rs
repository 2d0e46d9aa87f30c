//! `EncryptedStore`: any `object_store::ObjectStore` with every object sealed under its own
//! data key (segmented AES-256-GCM), the data keys wrapped by an embedded kms-core. Puts an
//! object, reads a range of it, lists, shows that what is at rest is ciphertext, and that a
//! flipped byte at rest is refused rather than returned.
//!
//! ```sh
//! cargo run --example encrypted_store
//! ```
//!
//! It runs over local files (`LocalFileSystem`) and, when `AWS_ENDPOINT` is set, once more
//! over that S3 store (`AmazonS3Builder::from_env`: `AWS_BUCKET`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP=true` for an `http://` endpoint, or
//! `AWS_SKIP_SIGNATURE=true` for a server that takes unsigned requests), under a fresh
//! prefix of the bucket that it deletes afterwards. Without `AWS_ENDPOINT` the S3 part is
//! skipped, and it says so.

use std::sync::Arc;

use futures::TryStreamExt;
use kms_core::{CreateKey, CreateVault, Kms, KmsConfig, Principal};
use kms_core::{KeyProvider, Ocid};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, PutPayload};
use sealstore::object::EncryptedStore;

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let kms = Arc::new(Kms::open(KmsConfig::new(dir.path().join("kms")))?);
    let me = Principal::local_admin();
    let vault = kms.create_vault(
        &me,
        CreateVault {
            display_name: "objects".into(),
            ..Default::default()
        },
    )?;
    let key = kms.create_key(&me, CreateKey::new(vault.id, "objects"))?;

    let root = dir.path().join("objects");
    std::fs::create_dir_all(&root)?;
    println!("== over local files ({})", root.display());
    demo(Arc::new(LocalFileSystem::new_with_prefix(&root)?), kms.clone(), &key.id).await?;

    if std::env::var_os("AWS_ENDPOINT").is_none() {
        println!("== over S3: skipped (set AWS_ENDPOINT, AWS_BUCKET and credentials to run it)");
        return Ok(());
    }
    let s3: Arc<dyn ObjectStore> = Arc::new(AmazonS3Builder::from_env().build()?);
    // A prefix of its own in the bucket, removed afterwards.
    let prefix = format!("sealstore-example-{}", std::process::id());
    println!("== over S3 ({s3}, prefix {prefix})");
    let plain: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(s3, prefix.as_str()));
    let shown = demo(plain.clone(), kms, &key.id).await;
    let objects: Vec<_> = plain.list(None).map_ok(|meta| meta.location).try_collect().await?;
    for location in objects {
        plain.delete(&location).await?;
    }
    shown
}

/// Everything the example shows, over the plain store `plain`.
async fn demo(plain: Arc<dyn ObjectStore>, kms: Arc<dyn KeyProvider>, key_id: &Ocid) -> Result<(), Error> {
    // The encrypting store over the plain one. The bucket name is bound into every object,
    // so an object copied into another bucket does not open there.
    let store = EncryptedStore::new(plain.clone(), kms, key_id.clone(), "photos");

    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let location = Path::from("2026/12/harbour.raw");
    store.put(&location, PutPayload::from(body.clone())).await?;

    let range = store.get_range(&location, 150_000..150_100).await?;
    assert_eq!(&range[..], &body[150_000..150_100]);
    println!("ranged GET 150000..150100: {} bytes, as written", range.len());

    let listed: Vec<_> = store.list(None).try_collect().await?;
    for meta in &listed {
        println!("listed {} ({} bytes of plaintext)", meta.location, meta.size);
    }
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, body.len() as u64);

    // At rest: ciphertext, a little longer than the plaintext (a header, a tag per segment).
    let at_rest = plain.get(&location).await?.bytes().await?;
    assert!(!at_rest.windows(64).any(|w| w == &body[..64]), "no plaintext at rest");
    println!(
        "at rest: {} bytes of ciphertext for {} of plaintext",
        at_rest.len(),
        body.len()
    );

    // Flip one byte at rest: reading it back fails; no altered bytes come out.
    let mut damaged = at_rest.to_vec();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    plain.put(&location, PutPayload::from(damaged)).await?;
    let read = match store.get(&location).await {
        Ok(got) => got.bytes().await.map(|b| b.len()),
        Err(e) => Err(e),
    };
    match read {
        Ok(len) => return Err(format!("a damaged object was read back ({len} bytes)").into()),
        Err(e) => println!("after flipping byte {middle} at rest: refused ({e})"),
    }
    Ok(())
}
