//! The volume sector path (`Xts::encrypt_sectors`/`decrypt_sectors`: one aws-lc call per
//! 4 KiB sector, tweak set per sector) against the raw aws-lc XTS primitive (the bare EVP
//! set-tweak-and-update calls of `Xts::encrypt_unit`), both on the same 1 MiB:
//!
//! - as 256 data units of 4 KiB, the unit size the volume format needs (and dm-crypt/LUKS2
//!   use): what sealstore's own code adds on top of aws-lc. Goal: ≥ 90%.
//! - as one 1 MiB data unit: the ceiling, without aws-lc's per-call tweak setup, which no
//!   sector-addressed format avoids.
//!
//! The workloads are `sealstore::internals::bench_crypto::xts`, the same `sealstore bench crypto` runs.
//!
//! `cargo bench --bench xts`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let mut workloads = sealstore::internals::bench_crypto::xts();
    let mut groups: Vec<String> = workloads.iter().map(|w| w.group.clone()).collect();
    groups.dedup();
    for group in groups {
        let mut g = c.benchmark_group(&group);
        for w in workloads.iter_mut().filter(|w| w.group == group) {
            g.throughput(Throughput::Bytes(w.per_call));
            g.bench_function(&w.name, |b| b.iter(|| (w.run)()));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
