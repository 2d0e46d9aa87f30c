//! The object index with 100 000 objects: first page of a listing (with and without a
//! delimiter), a page deep inside the bucket, and the key-version inventory scan.
//!
//! `cargo bench --bench index`

use std::collections::BTreeMap;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use kms_core::{Ocid, ResourceType};
use sealstore::internals::index::{ContentHeaders, Encryption, Layout, ObjectEntry, ObjectIndex};

const OBJECTS: usize = 100_000;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let index = ObjectIndex::open(dir.path()).unwrap();
    let entry = ObjectEntry {
        size: 12_345,
        etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
        content_type: Some("image/jpeg".into()),
        user_metadata: BTreeMap::new(),
        encryption: Encryption::Kms {
            key_id: Ocid::parse(ResourceType::Key, "ocid1.key.oc1.local-1.aaaa").unwrap(),
            key_version_id: Ocid::parse(ResourceType::KeyVersion, "ocid1.keyversion.oc1.local-1.bbbb").unwrap(),
            sse_kms: false,
        },
        last_modified: Utc::now(),
        headers: ContentHeaders::default(),
        parts: Vec::new(),
        layout: Layout::Current,
    };
    let keys: Vec<String> = (0..OBJECTS)
        .map(|i| format!("year-{}/day-{:03}/photo-{i:06}.jpg", 2000 + i % 20, i % 365))
        .collect();
    for chunk in keys.chunks(10_000) {
        index
            .put_many("photos", chunk.iter().map(|k| (k.as_str(), &entry)))
            .unwrap();
    }

    let mut group = c.benchmark_group("index 100k objects");
    group.bench_function("list first 1000", |b| {
        b.iter(|| index.list("photos", "", None, None, 1000).unwrap())
    });
    group.bench_function("list prefix year-2010/ first 1000", |b| {
        b.iter(|| index.list("photos", "year-2010/", None, None, 1000).unwrap())
    });
    group.bench_function("list delimiter / (20 prefixes)", |b| {
        b.iter(|| index.list("photos", "", Some("/"), None, 1000).unwrap())
    });
    group.bench_function("list 1000 after the middle key", |b| {
        let middle = keys[OBJECTS / 2].clone();
        b.iter(|| index.list("photos", "", None, Some(&middle), 1000).unwrap())
    });
    group.sample_size(10);
    group.bench_function("inventory scan", |b| b.iter(|| index.inventory().unwrap()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
