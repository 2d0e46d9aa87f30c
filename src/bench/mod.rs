//! Throughput measurements for `sealstore bench`, each workload defined once and shared with
//! the criterion benches in `benches/` (which run the same closures under criterion).
//!
//! - [`crypto`]: segmented AES-256-GCM and the AES-256-XTS sector path, beside the raw
//!   aws-lc primitive, on 1 thread and all threads.

pub mod crypto;

use std::time::{Duration, Instant};

use serde::Serialize;

/// One measured operation, processing `bytes` per call.
pub struct Workload {
    /// What is measured ("AES-256-GCM seal, 64 MiB object").
    pub group: String,
    /// Which implementation ("sealstore, 2 threads", "raw aws-lc-rs").
    pub name: String,
    /// Bytes per call.
    pub bytes: u64,
    /// Whether the other lines of the group are compared to this one.
    pub baseline: bool,
    /// One call.
    pub run: Box<dyn FnMut()>,
}

/// A workload's result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Measured {
    /// [`Workload::group`].
    pub group: String,
    /// [`Workload::name`].
    pub name: String,
    /// Throughput.
    pub bytes_per_sec: f64,
    /// Calls made.
    pub calls: u64,
    /// Throughput over the group's baseline (1.0 for the baseline itself).
    pub ratio: Option<f64>,
}

/// Runs `workload` once to warm up, then repeatedly for at least `duration` (and 3 calls).
pub fn measure(workload: &mut Workload, duration: Duration) -> Measured {
    (workload.run)();
    let start = Instant::now();
    let mut calls = 0u64;
    while calls < 3 || start.elapsed() < duration {
        (workload.run)();
        calls += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    Measured {
        group: workload.group.clone(),
        name: workload.name.clone(),
        bytes_per_sec: (calls * workload.bytes) as f64 / secs,
        calls,
        ratio: None,
    }
}

/// Fills in each result's ratio to its group's baseline.
pub fn add_ratios(workloads: &[Workload], results: &mut [Measured]) {
    for i in 0..results.len() {
        let base = workloads
            .iter()
            .zip(results.iter())
            .find(|(w, r)| w.baseline && r.group == results[i].group)
            .map(|(_, r)| r.bytes_per_sec);
        results[i].ratio = base.filter(|b| *b > 0.0).map(|b| results[i].bytes_per_sec / b);
    }
}

/// "64 MiB", "4 KiB", "512 B".
pub fn size_label(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// CPU features that matter for AES throughput, as `(name, present)`.
pub fn cpu_features() -> Vec<(&'static str, bool)> {
    #[cfg(target_arch = "x86_64")]
    {
        vec![
            ("AES-NI", std::arch::is_x86_feature_detected!("aes")),
            ("PCLMULQDQ", std::arch::is_x86_feature_detected!("pclmulqdq")),
            ("AVX2", std::arch::is_x86_feature_detected!("avx2")),
            ("VAES", std::arch::is_x86_feature_detected!("vaes")),
            ("VPCLMULQDQ", std::arch::is_x86_feature_detected!("vpclmulqdq")),
            ("AVX-512F", std::arch::is_x86_feature_detected!("avx512f")),
        ]
    }
    #[cfg(target_arch = "aarch64")]
    {
        vec![
            ("AES", std::arch::is_aarch64_feature_detected!("aes")),
            ("PMULL", std::arch::is_aarch64_feature_detected!("pmull")),
        ]
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Vec::new()
    }
}

/// Whether the CPU has AES instructions (without them, AES runs in software, many times slower).
pub fn hardware_aes() -> bool {
    cpu_features()
        .iter()
        .any(|(name, present)| *present && (*name == "AES-NI" || *name == "AES"))
}
