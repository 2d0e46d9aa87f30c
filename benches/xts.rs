//! The volume sector path (`Xts::encrypt_sectors`/`decrypt_sectors`: one aws-lc call per
//! 4 KiB sector, tweak set per sector) against the raw aws-lc XTS primitive processing the
//! same 1 MiB as one data unit (one call, no per-sector work). Goal: ≥ 90% of raw.
//!
//! `cargo bench --bench xts`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sealstore::crypto::xts::{Xts, XtsKey};

fn bench(c: &mut Criterion) {
    let key = XtsKey::generate().unwrap();
    let mut xts = Xts::new(&key).unwrap();
    let size = 1 << 20;
    let mut buf = vec![0x5au8; size];
    for (name, encrypt) in [("aes-256-xts encrypt", true), ("aes-256-xts decrypt", false)] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("raw aws-lc, one 1 MiB unit", size), &size, |b, _| {
            b.iter(|| {
                if encrypt {
                    xts.encrypt_unit(7, &mut buf)
                } else {
                    xts.decrypt_unit(7, &mut buf)
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("sealstore 4 KiB sectors", size), &size, |b, _| {
            b.iter(|| {
                if encrypt {
                    xts.encrypt_sectors(7, &mut buf)
                } else {
                    xts.decrypt_sectors(7, &mut buf)
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
