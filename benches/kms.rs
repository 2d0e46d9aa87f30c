//! Key-management operations per second: generate a wrapped DEK, unwrap it, and the raw
//! AES-256-GCM wrap of 32 bytes for comparison (what the operation costs beyond the cipher:
//! store read, header, audit record).
//!
//! `cargo bench --bench kms`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kms_core::{CreateKey, CreateVault, KeyProvider, Kms, KmsConfig, Principal};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let kms = Kms::open(KmsConfig::new(dir.path())).unwrap();
    let me = Principal::local_admin();
    let vault = kms
        .create_vault(
            &me,
            CreateVault {
                display_name: "bench".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let key = kms.create_key(&me, CreateKey::new(vault.id, "bench")).unwrap();
    let aad = b"bucket/object/version";
    let wrapped = KeyProvider::generate_data_key(&kms, &key.id, aad).unwrap().wrapped;

    let mut group = c.benchmark_group("kms");
    group.throughput(Throughput::Elements(1));
    group.bench_function("generate-dek", |b| {
        b.iter(|| KeyProvider::generate_data_key(&kms, &key.id, aad).unwrap())
    });
    group.bench_function("unwrap-dek", |b| b.iter(|| kms.unwrap_data_key(&wrapped, aad).unwrap()));

    let raw = sealstore::crypto::gcm::GcmKey::new(&[7; 32]);
    group.bench_function("raw gcm seal 32B", |b| {
        b.iter(|| {
            let mut dek = [0u8; 32];
            raw.seal_in_place([1; 12], aad, &mut dek).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
