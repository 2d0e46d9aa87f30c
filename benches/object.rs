//! Segmented object encryption (`sealstore::crypto::segment`) on 64 MiB: 1 thread and all
//! threads, with the default 64 KiB sealed segments (the workloads of
//! `sealstore::internals::bench_crypto::gcm`, which `sealstore bench crypto` runs too) and with 256 KiB
//! ones, against raw aws-lc-rs AES-256-GCM over the same bytes (one call) and RustCrypto
//! `aes-gcm`.
//! Targets: ≥ 90% of raw on 1 thread, ≥ 1.8× that on 2 threads.
//!
//! `cargo bench --bench object`

use aes_gcm::aead::AeadInPlace;
use aes_gcm::KeyInit;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sealstore::crypto::segment::{SegmentCipher, SegmentSize};

const SIZE: usize = 64 << 20;

fn pools() -> Vec<(String, rayon::ThreadPool)> {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = vec![1];
    if all > 1 {
        threads.push(all);
    }
    threads
        .into_iter()
        .map(|n| {
            (
                format!("sealstore {n} thread(s)"),
                rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap(),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    // The lines `sealstore bench crypto` measures (raw aws-lc in one call, sealstore on 1 and
    // all threads with 64 KiB segments), then comparisons only this bench makes.
    let mut workloads = sealstore::internals::bench_crypto::gcm(SIZE);
    let plain: Vec<u8> = (0..SIZE).map(|i| (i * 31) as u8).collect();
    let big = SegmentCipher::new(&[5; 32], [1; 7], [2; 32], SegmentSize::new(256 * 1024 - 16).unwrap());
    let mut big_sealed = big.seal(0, &plain, true).unwrap();
    let mut opened = vec![0u8; SIZE];
    let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[5; 32]).unwrap());
    let rustcrypto = aes_gcm::Aes256Gcm::new_from_slice(&[5; 32]).unwrap();
    let mut scratch = plain.clone();
    let (raw_ct, raw_tag) = {
        let mut ct = plain.clone();
        let tag = raw
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key([1; 12]), Aad::from([2u8; 32]), &mut ct)
            .unwrap();
        (ct, tag)
    };

    let mut groups: Vec<String> = workloads.iter().map(|w| w.group.clone()).collect();
    groups.dedup();
    for group in groups {
        let mut g = c.benchmark_group(&group);
        g.throughput(Throughput::Bytes(SIZE as u64));
        g.sample_size(10);
        for w in workloads.iter_mut().filter(|w| w.group == group) {
            g.bench_function(&w.name, |b| b.iter(|| (w.run)()));
        }
        let sealing = group.contains("seal");
        if sealing {
            g.bench_function(BenchmarkId::new("rustcrypto aes-gcm", "1 thread"), |b| {
                b.iter(|| rustcrypto.encrypt_in_place_detached(&[1u8; 12].into(), &[2u8; 32], &mut scratch))
            });
        } else {
            // The raw primitive called once per 64 KiB: the cost of one call per segment.
            g.bench_function(BenchmarkId::new("raw aws-lc-rs per 64KiB", "1 thread"), |b| {
                b.iter(|| {
                    for (ct, out) in raw_ct.chunks(65536).zip(opened.chunks_mut(65536)) {
                        let _ = raw.open_separate_gather(
                            Nonce::assume_unique_for_key([1; 12]),
                            Aad::from([2u8; 32]),
                            ct,
                            raw_tag.as_ref(),
                            out,
                        );
                    }
                })
            });
        }
        for (name, pool) in pools() {
            g.bench_function(BenchmarkId::new(&name, "256KiB segments"), |b| {
                b.iter(|| {
                    pool.install(|| {
                        if sealing {
                            big.seal_into(0, &plain, true, &mut big_sealed).unwrap()
                        } else {
                            big.open_into(0, &big_sealed, true, &mut opened).unwrap()
                        }
                    })
                })
            });
        }
        g.finish();
    }
    big.open_into(0, &big_sealed, true, &mut opened).unwrap();
    assert_eq!(opened, plain);
}

criterion_group!(benches, bench);
criterion_main!(benches);
