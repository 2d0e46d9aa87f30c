//! `sealstore bench`: what encryption costs on this machine (see `sealstore::bench`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use sealstore::bench::{self, Measured, Workload};
use serde_json::json;

use super::GlobalOpts;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchKind,
}

#[derive(Debug, Subcommand)]
enum BenchKind {
    /// AES-256-GCM as objects use it (segmented, 1 thread and all threads) and AES-256-XTS as
    /// volumes use it (4 KiB sectors), each beside the raw aws-lc primitive over the same bytes
    /// and `openssl speed` when installed; with the CPU's AES features.
    Crypto(CryptoArgs),
}

#[derive(Debug, Args)]
struct CryptoArgs {
    /// Object size for the GCM lines (K, M, G suffixes).
    #[arg(long, default_value = "64M", value_parser = super::volume::parse_size)]
    size: u64,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// A smoke run (8 MiB objects, 0.3 s per measurement): checks that everything runs.
    #[arg(long)]
    quick: bool,
    /// Also write `results.json` (machine, version, parameters, results) to this directory.
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
}

pub fn run(_global: &GlobalOpts, args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.what {
        BenchKind::Crypto(a) => crypto(a),
    }
}

fn crypto(args: CryptoArgs) -> anyhow::Result<ExitCode> {
    let (size, duration) = if args.quick {
        (8 << 20, Duration::from_millis(300))
    } else {
        (
            usize::try_from(args.size).context("--size is too large")?,
            Duration::from_secs_f64(args.duration.max(0.1)),
        )
    };
    let features = bench::cpu_features();
    println!(
        "CPU: {} thread(s); {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        features
            .iter()
            .map(|(name, present)| format!("{name} {}", if *present { "yes" } else { "no" }))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !bench::hardware_aes() {
        eprintln!("warning: this CPU has no AES instructions: AES runs in software, many times slower");
    }
    let mut workloads: Vec<Workload> = bench::crypto::gcm(size);
    workloads.extend(bench::crypto::xts());
    let bar = indicatif::ProgressBar::new(workloads.len() as u64)
        .with_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("a valid template"));
    let mut results: Vec<Measured> = Vec::new();
    for w in workloads.iter_mut() {
        bar.set_message(format!("{}: {}", w.group, w.name));
        results.push(bench::measure(w, duration));
        bar.inc(1);
    }
    bar.finish_and_clear();
    bench::add_ratios(&workloads, &mut results);

    // openssl's own figure for the same primitive, when it is installed, beside the raw line.
    let mut peers = Vec::new();
    for (cipher, measured) in [("aes-256-gcm", "GCM seal"), ("aes-256-xts", "XTS encrypt")] {
        let Some(bytes_per_sec) = openssl_speed(cipher, duration) else {
            continue;
        };
        let Some((base, _)) = results
            .iter()
            .zip(&workloads)
            .find(|(r, w)| w.baseline && r.group.contains(measured))
        else {
            continue;
        };
        peers.push(Measured {
            group: base.group.clone(),
            name: format!("openssl speed -evp {cipher}, 16 KiB"),
            bytes_per_sec,
            calls: 0,
            ratio: Some(bytes_per_sec / base.bytes_per_sec),
        });
    }

    println!(
        "{:<40} {:<40} {:>9} {:>8}",
        "MEASURED", "IMPLEMENTATION", "GB/s", "VS RAW"
    );
    let mut all: Vec<&Measured> = results.iter().collect();
    for p in &peers {
        let at = all
            .iter()
            .rposition(|r| r.group == p.group)
            .map_or(all.len(), |i| i + 1);
        all.insert(at, p);
    }
    for r in &all {
        println!(
            "{:<40} {:<40} {:>9.2} {:>8}",
            r.group,
            r.name,
            r.bytes_per_sec / 1e9,
            r.ratio.map_or("-".into(), |x| format!("{:.0}%", x * 100.0))
        );
    }
    if let Some(dir) = args.out {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let doc = json!({
            "tool": "sealstore bench crypto",
            "version": env!("CARGO_PKG_VERSION"),
            "machine": {
                "os": std::env::consts::OS,
                "arch": std::env::consts::ARCH,
                "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
                "cpuFeatures": features.iter().map(|(n, p)| json!({"name": n, "present": p})).collect::<Vec<_>>(),
            },
            "parameters": {"objectSize": size, "secondsPerMeasurement": duration.as_secs_f64(), "quick": args.quick},
            "results": all,
        });
        let path = dir.join("results.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `openssl speed -evp CIPHER` on 16 KiB blocks, in bytes per second; `None` without openssl.
fn openssl_speed(cipher: &str, duration: Duration) -> Option<f64> {
    let seconds = duration.as_secs().max(1).to_string();
    let out = std::process::Command::new("openssl")
        .args(["speed", "-evp", cipher, "-seconds", &seconds, "-bytes", "16384"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().starts_with(cipher))?;
    let thousands: f64 = line.split_whitespace().last()?.trim_end_matches('k').parse().ok()?;
    Some(thousands * 1000.0)
}
