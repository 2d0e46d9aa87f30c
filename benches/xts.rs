//! The volume sector path (`Xts::encrypt_sectors`/`decrypt_sectors`: one aws-lc call per
//! 4 KiB sector, tweak set per sector) against the raw aws-lc XTS primitive (the bare EVP
//! set-tweak-and-update calls of `Xts::encrypt_unit`), both on the same 1 MiB:
//!
//! - as 256 data units of 4 KiB, the unit size the volume format needs (and dm-crypt/LUKS2
//!   use): what sealstore's own code adds on top of aws-lc. Goal: ≥ 90%.
//! - as one 1 MiB data unit: the ceiling, without aws-lc's per-call tweak setup, which no
//!   sector-addressed format avoids.
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
        group.bench_with_input(
            BenchmarkId::new("raw aws-lc, 256 units of 4 KiB", size),
            &size,
            |b, _| {
                b.iter(|| {
                    for (i, unit) in buf.chunks_exact_mut(4096).enumerate() {
                        let tweak = 7 + i as u128;
                        if encrypt {
                            xts.encrypt_unit(tweak, unit).unwrap()
                        } else {
                            xts.decrypt_unit(tweak, unit).unwrap()
                        }
                    }
                })
            },
        );
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
