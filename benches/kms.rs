//! Key-management operations per second: wrap a new data key, unwrap one, and the raw
//! AES-256-GCM seal of 32 bytes for comparison (what the operation costs beyond the cipher:
//! key lookup, header, audit record). SOFTWARE keys only (HSM lines: `sealstore bench kms`).
//!
//! The workloads are `sealstore::internals::bench_kms::workloads`, the same `sealstore bench kms` runs.
//!
//! `cargo bench --bench kms`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kms_core::{Kms, KmsConfig, ProtectionMode};
use sealstore::internals::bench_kms::{bench_key, workloads};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let kms = Arc::new(Kms::open(KmsConfig::new(dir.path())).unwrap());
    let key = bench_key(&kms, ProtectionMode::Software).unwrap();
    let mut workloads = workloads(&kms, &[(ProtectionMode::Software, key)]).unwrap();
    let mut groups: Vec<String> = workloads.iter().map(|w| w.group.clone()).collect();
    groups.dedup();
    for group in groups {
        let mut g = c.benchmark_group(&group);
        g.throughput(Throughput::Elements(1));
        for w in workloads.iter_mut().filter(|w| w.group == group) {
            g.bench_function(&w.name, |b| b.iter(|| (w.run)()));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
