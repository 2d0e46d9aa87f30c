//! Our AES-256-GCM helper (`sealstore::crypto::gcm`) against raw aws-lc-rs, on 4 KiB and
//! 1 MiB buffers. The helper must stay within 10% of the raw primitive.
//!
//! `cargo bench --bench gcm`

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sealstore::crypto::gcm::GcmKey;

fn bench(c: &mut Criterion) {
    let key = [0x42u8; 32];
    let ours = GcmKey::new(&key);
    let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
    let mut group = c.benchmark_group("aes-256-gcm seal");
    for size in [4 << 10, 1 << 20] {
        let mut buf = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("raw aws-lc-rs", size), &size, |b, _| {
            b.iter(|| {
                raw.seal_in_place_separate_tag(Nonce::assume_unique_for_key([1; 12]), Aad::from(b"hdr"), &mut buf)
            })
        });
        group.bench_with_input(BenchmarkId::new("sealstore GcmKey", size), &size, |b, _| {
            b.iter(|| ours.seal_in_place([1; 12], b"hdr", &mut buf))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("aes-256-gcm open");
    for size in [4 << 10, 1 << 20] {
        let mut sealed = vec![0u8; size];
        let tag = ours.seal_in_place([1; 12], b"hdr", &mut sealed).unwrap();
        sealed.extend_from_slice(&tag);
        let mut buf = sealed.clone();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("raw aws-lc-rs", size), &size, |b, _| {
            b.iter(|| {
                buf.copy_from_slice(&sealed);
                raw.open_in_place(Nonce::assume_unique_for_key([1; 12]), Aad::from(b"hdr"), &mut buf)
                    .map(|p| p.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("sealstore GcmKey", size), &size, |b, _| {
            b.iter(|| {
                buf.copy_from_slice(&sealed);
                ours.open_in_place([1; 12], b"hdr", &mut buf)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
