//! Throughput measurements for `sealstore bench`, each workload defined once and shared with
//! the criterion benches in `benches/` (which run the same closures under criterion).
//!
//! - [`crypto`]: segmented AES-256-GCM and the AES-256-XTS sector path, beside the raw
//!   aws-lc primitive, on 1 thread and all threads.
//! - [`load`]: concurrent clients timing every operation (throughput and latency), the
//!   engine of the object, S3 and volume benchmarks.
//! - [`plot`]: SVG charts of a [`Report`]; [`compare`]: the differences between two;
//!   [`table`]: the terminal tables of both, 80 columns wide.

pub(crate) mod compare;
pub mod crypto;
pub mod kms;
pub(crate) mod load;
pub(crate) mod objects;
pub(crate) mod plot;
pub(crate) mod table;
pub(crate) mod volume;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a measurement counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    /// Bytes per second (shown as MB/s or GB/s).
    #[serde(rename = "B/s")]
    BytesPerSec,
    /// Operations per second.
    #[serde(rename = "ops/s")]
    OpsPerSec,
}

/// What a result line is, which decides how charts draw it: sealstore's lines in one colour,
/// baselines grey, peers in a third colour.
///
/// Independent of [`Measured::baseline`] (the line the others' ratios are over): the KMS
/// lines compare HSM and EXTERNAL keys with sealstore's own SOFTWARE key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// sealstore's own code path (the default, for reports written before roles existed).
    #[default]
    Sealstore,
    /// The unencrypted reference: plain files, the raw primitive a ratio is over, a plain S3
    /// store, an NBD server without encryption.
    Baseline,
    /// Another implementation of the same job: qemu-nbd's LUKS, `openssl speed`, raw
    /// aws-lc beside the KMS.
    Peer,
}

/// One measured operation, processing `per_call` units (bytes or operations) per call.
pub struct Workload {
    /// What is measured ("AES-256-GCM seal, 64 MiB object").
    pub group: String,
    /// Which implementation ("sealstore, 2 threads", "raw aws-lc-rs").
    pub name: String,
    /// What `per_call` counts.
    pub unit: Unit,
    /// Bytes or operations per call.
    pub per_call: u64,
    /// Whether the other lines of the group are compared to this one.
    pub baseline: bool,
    /// What the line is.
    pub role: Role,
    /// One call.
    pub run: Box<dyn FnMut()>,
}

/// Latency percentiles of one operation, and its distribution for plotting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// Median, microseconds.
    pub p50_us: f64,
    /// 90th percentile, microseconds.
    pub p90_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Slowest, microseconds.
    pub max_us: f64,
    /// The cumulative distribution: `(microseconds, fraction of operations at most that slow)`,
    /// at most a few hundred points, fractions rising to 1.
    pub cdf: Vec<(f64, f64)>,
}

/// One line of a benchmark's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measured {
    /// The benchmark ("crypto", "object", "s3", "volume", "kms").
    pub kind: String,
    /// What is measured; lines of one group are compared with each other.
    pub group: String,
    /// Which implementation or peer.
    pub name: String,
    /// What `value` counts.
    pub unit: Unit,
    /// Throughput in `unit`.
    pub value: f64,
    /// Operations (calls, requests, I/Os) made; 0 when a peer tool reported only a rate.
    pub ops: u64,
    /// Seconds measured (0 when a peer tool reported only a rate).
    pub seconds: f64,
    /// `value` over the group's baseline (1.0 for the baseline itself); `None` in a group
    /// without a baseline.
    pub ratio: Option<f64>,
    /// Whether the other lines of the group are compared to this one.
    #[serde(default)]
    pub baseline: bool,
    /// What the line is: sealstore, a baseline or a peer.
    #[serde(default)]
    pub role: Role,
    /// Per-operation latency, where each operation was timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// The line (`name`, same group) this one is compared with, when the group has several
    /// baselines (a peer for each sealstore setup); `None`: the group's first baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versus: Option<String>,
    /// The rate of each round, in the order measured, when the line ran in several rounds
    /// alternating with the other lines of its group (`value` is over all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<f64>,
}

impl Measured {
    /// Operations per second, when operations were counted.
    pub fn ops_per_sec(&self) -> Option<f64> {
        (self.ops > 0 && self.seconds > 0.0).then(|| self.ops as f64 / self.seconds)
    }
}

/// The machine a report was made on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Machine {
    /// `linux`, ...
    pub os: String,
    /// `x86_64`, ...
    pub arch: String,
    /// Hardware threads available to the process.
    pub threads: usize,
    /// The CPU model, when known.
    #[serde(default)]
    pub cpu: Option<String>,
    /// AES-related CPU features found.
    pub cpu_features: Vec<CpuFeature>,
}

/// One CPU feature and whether the CPU has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CpuFeature {
    /// "AES-NI", "VAES", ...
    pub name: String,
    /// Whether it is there.
    pub present: bool,
}

impl Machine {
    /// This machine.
    pub(crate) fn this() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        });
        Machine {
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            cpu_features: cpu_features()
                .into_iter()
                .map(|(name, present)| CpuFeature {
                    name: name.into(),
                    present,
                })
                .collect(),
        }
    }
}

/// What `sealstore bench --out DIR` writes to `DIR/results.json`, and what
/// `sealstore bench compare` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    /// The command that made it ("sealstore bench all").
    pub tool: String,
    /// sealstore's version.
    pub version: String,
    /// When it was made (RFC 3339).
    pub date: String,
    /// Where it was made.
    pub machine: Machine,
    /// The parameters of each benchmark that ran, by kind.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// Every line, in the order measured.
    pub results: Vec<Measured>,
}

/// A result line for tests: 100 operations in one second, no ratio, no latency; a baseline
/// has the role [`Role::Baseline`], any other line [`Role::Sealstore`].
#[cfg(test)]
pub(crate) fn test_line(kind: &str, group: &str, name: &str, unit: Unit, value: f64, baseline: bool) -> Measured {
    Measured {
        kind: kind.into(),
        group: group.into(),
        name: name.into(),
        unit,
        value,
        ops: 100,
        seconds: 1.0,
        ratio: None,
        baseline,
        role: if baseline { Role::Baseline } else { Role::Sealstore },
        latency: None,
        versus: None,
        rounds: Vec::new(),
    }
}

/// Runs `workload` once to warm up, then repeatedly for at least `duration` (and 3 calls).
pub(crate) fn measure(kind: &str, workload: &mut Workload, duration: Duration) -> Measured {
    (workload.run)();
    let start = Instant::now();
    let mut calls = 0u64;
    while calls < 3 || start.elapsed() < duration {
        (workload.run)();
        calls += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    Measured {
        kind: kind.into(),
        group: workload.group.clone(),
        name: workload.name.clone(),
        unit: workload.unit,
        value: (calls * workload.per_call) as f64 / secs,
        ops: calls,
        seconds: secs,
        ratio: None,
        baseline: workload.baseline,
        role: workload.role,
        latency: None,
        versus: None,
        rounds: Vec::new(),
    }
}

/// Fills in each result's ratio to its group's baseline (results of one kind): the line it
/// names as `versus`, else the group's first baseline (a baseline: itself).
pub(crate) fn add_ratios(results: &mut [Measured]) {
    for i in 0..results.len() {
        let r = &results[i];
        let base = results
            .iter()
            .find(|b| {
                b.kind == r.kind
                    && b.group == r.group
                    && match &r.versus {
                        Some(name) => b.name == *name,
                        // A baseline is its own.
                        None if r.baseline => b.name == r.name,
                        None => b.baseline,
                    }
            })
            .map(|b| b.value);
        results[i].ratio = base.filter(|b| *b > 0.0).map(|b| results[i].value / b);
    }
}

/// A rate for people: "2.97 GB/s", "812 MB/s", "10,534 ops/s".
pub(crate) fn format_rate(unit: Unit, value: f64) -> String {
    match unit {
        Unit::BytesPerSec if value >= 1e9 => format!("{:.2} GB/s", value / 1e9),
        Unit::BytesPerSec => format!("{:.0} MB/s", value / 1e6),
        Unit::OpsPerSec => format!("{} ops/s", format_number(value, 0)),
    }
}

/// A latency for people: "85 µs", "1.24 ms", "2.1 s".
pub(crate) fn format_latency(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.1} s", us / 1e6)
    }
}

/// `value` with `decimals` decimals and commas between thousands: "2,000,000", "1,234.5",
/// "-12,000", "0.05".
pub(crate) fn format_number(value: f64, decimals: usize) -> String {
    let text = format!("{:.decimals$}", value.abs());
    let (whole, fraction) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(w, f)| (w, Some(f)));
    let mut out = String::new();
    if value.is_sign_negative() && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.push('-');
    }
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(fraction) = fraction {
        out.push('.');
        out.push_str(fraction);
    }
    out
}

/// Serializes a [`Duration`] as plain seconds (`0.3`), as results.json writes every duration.
pub(crate) fn serialize_seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// `text` cut to `max` characters, the last one an ellipsis when something was cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Writes back every dirty page of the machine (`sync`) before a line is measured, so that
/// no line pays for the writeback of the one before it (they share one page cache and disk).
pub(crate) fn settle() {
    let _ = std::process::Command::new("sync").status();
}

/// "64 MiB", "4 KiB", "512 B".
pub(crate) fn size_label(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// CPU features that matter for AES throughput, as `(name, present)`.
pub(crate) fn cpu_features() -> Vec<(&'static str, bool)> {
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
pub(crate) fn hardware_aes() -> bool {
    cpu_features()
        .iter()
        .any(|(name, present)| *present && (*name == "AES-NI" || *name == "AES"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_follow_versus_and_baselines_are_their_own() {
        let g = "PUT 4 KiB objects, 32 clients";
        let mut lines = vec![
            test_line("s3", g, "s3s-fs", Unit::OpsPerSec, 100.0, true),
            test_line("s3", g, "sealstore local", Unit::OpsPerSec, 150.0, false),
            test_line("s3", g, "SeaweedFS", Unit::OpsPerSec, 50.0, true),
            test_line("s3", g, "sealstore gateway", Unit::OpsPerSec, 45.0, false),
        ];
        lines[1].versus = Some("s3s-fs".into());
        lines[3].versus = Some("SeaweedFS".into());
        add_ratios(&mut lines);
        let ratios: Vec<f64> = lines.iter().map(|l| l.ratio.unwrap()).collect();
        assert_eq!(ratios, vec![1.0, 1.5, 1.0, 0.9]);
    }

    #[test]
    fn numbers_have_thousands_separators() {
        assert_eq!(format_number(2_000_000.0, 0), "2,000,000");
        assert_eq!(format_number(1234.5, 1), "1,234.5");
        assert_eq!(format_number(999.0, 0), "999");
        assert_eq!(format_number(-12_000.0, 0), "-12,000");
        assert_eq!(format_number(-0.0001, 1), "0.0");
        assert_eq!(format_number(0.05, 2), "0.05");
        assert_eq!(format_rate(Unit::OpsPerSec, 6_800_000.4), "6,800,000 ops/s");
    }

    #[test]
    fn roles_serialize_as_words_and_default_to_sealstore() {
        let mut line = test_line("crypto", "g", "openssl", Unit::BytesPerSec, 1.0, false);
        line.role = Role::Peer;
        let json = serde_json::to_value(&line).unwrap();
        assert_eq!(json["role"], "peer");
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("role");
        let read: Measured = serde_json::from_value(old).unwrap();
        assert_eq!(read.role, Role::Sealstore);
    }
}
