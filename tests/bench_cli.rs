//! `sealstore bench all --quick --out DIR` (the CI smoke run of the benchmark tool): every
//! kind ran and every line has a rate, lines of groups with a baseline were set against it,
//! the charts are SVG that renders (converted to PNG by rsvg-convert, which ./scripts/test
//! installs), and `bench compare` reads the results back. No timings are asserted.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn sealstore(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sealstore"))
        .args(args)
        .env("SEALSTORE_DATA_DIR", dir.join("unused-data-dir"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sealstore {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn quick_bench_all_measures_every_kind_plots_and_compares() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let stdout = sealstore(
        &[
            "bench",
            "all",
            "--quick",
            "--out",
            out.to_str().unwrap(),
            "--dir",
            work.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(stdout.contains("AES-NI") || stdout.contains("AES "), "{stdout}");
    // The working directories are removed afterwards.
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0);

    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(doc["tool"], "sealstore bench all");
    assert!(doc["machine"]["threads"].as_u64().unwrap() >= 1);
    let results = doc["results"].as_array().unwrap();
    let kinds: BTreeSet<&str> = results.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["crypto", "kms", "object", "s3", "volume"].into_iter().collect(),
        "{kinds:?}"
    );
    for r in results {
        let value = r["value"].as_f64().unwrap();
        assert!(value > 0.0 && value.is_finite(), "{r}");
        assert!(["B/s", "ops/s"].contains(&r["unit"].as_str().unwrap()), "{r}");
    }
    // In a group with a baseline, the baseline is at exactly 1 and every line has a ratio.
    let groups: BTreeSet<(&str, &str)> = results
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["group"].as_str().unwrap()))
        .collect();
    for (kind, group) in &groups {
        let lines: Vec<_> = results
            .iter()
            .filter(|r| r["kind"] == *kind && r["group"] == *group)
            .collect();
        if lines.iter().any(|r| r["baseline"] == true) {
            for r in &lines {
                let ratio = r["ratio"].as_f64().unwrap_or_else(|| panic!("no ratio: {r}"));
                assert!(ratio > 0.0 && ratio.is_finite(), "{r}");
                if r["baseline"] == true {
                    assert_eq!(ratio, 1.0, "{r}");
                }
            }
        } else {
            // Only S3 without --baseline-endpoint has no baseline.
            assert_eq!(*kind, "s3", "{group} has no baseline");
        }
        assert!(
            lines
                .iter()
                .any(|r| r["name"].as_str().unwrap().starts_with("sealstore")),
            "{kind} {group}: no sealstore line"
        );
    }
    // Each kind that times operations has latency percentiles in order.
    for kind in ["object", "s3", "volume"] {
        let timed: Vec<_> = results
            .iter()
            .filter(|r| r["kind"] == kind && r["latency"].is_object())
            .collect();
        assert!(!timed.is_empty(), "{kind}: no latencies");
        for r in timed {
            let l = &r["latency"];
            let (p50, p99) = (l["p50Us"].as_f64().unwrap(), l["p99Us"].as_f64().unwrap());
            assert!(p50 > 0.0 && p50 <= p99 && p99 <= l["maxUs"].as_f64().unwrap(), "{r}");
        }
    }
    // KMS: wrap and unwrap for SOFTWARE, EXTERNAL (the reference key manager) and, with
    // SoftHSM2 installed (./scripts/test installs it), HSM.
    let mut modes = vec!["SOFTWARE", "EXTERNAL"];
    if Path::new("/usr/lib/softhsm/libsofthsm2.so").exists() {
        modes.push("HSM");
    }
    let kms_lines = |mode: &str, group_starts: &[&str]| {
        results
            .iter()
            .filter(|r| {
                r["kind"] == "kms"
                    && r["name"].as_str().unwrap().contains(&format!("{mode} key"))
                    && group_starts.iter().any(|g| r["group"].as_str().unwrap().starts_with(g))
            })
            .count()
    };
    for mode in &modes {
        assert_eq!(kms_lines(mode, &["wrap", "unwrap"]), 2, "{mode}: wrap and unwrap");
    }
    // Sign and verify per RSA and ECDSA shape (6 each) for the modes that sign, and openssl's
    // RSA-2048 and P-256 figures beside them.
    for mode in modes.iter().filter(|m| **m != "EXTERNAL") {
        assert_eq!(kms_lines(mode, &["sign, "]), 6, "{mode}: sign");
        assert_eq!(kms_lines(mode, &["verify, "]), 6, "{mode}: verify");
    }
    let openssl_lines = results
        .iter()
        .filter(|r| r["kind"] == "kms" && r["name"].as_str().unwrap().starts_with("openssl speed"))
        .count();
    assert_eq!(
        openssl_lines, 4,
        "openssl speed rsa2048 ecdsap256: sign and verify each"
    );

    // The charts: one throughput chart per kind, latency charts where latencies were taken.
    for kind in ["crypto", "object", "s3", "volume", "kms"] {
        let svg = std::fs::read_to_string(out.join(format!("{kind}-throughput.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{kind}");
    }
    let latency = out.join("object-latency.svg");
    assert!(latency.exists());
    let png = dir.path().join("object-latency.png");
    let converted = Command::new("rsvg-convert")
        .arg(&latency)
        .arg("-o")
        .arg(&png)
        .output()
        .expect("rsvg-convert runs (./scripts/test installs librsvg2-bin)");
    assert!(
        converted.status.success(),
        "{}",
        String::from_utf8_lossy(&converted.stderr)
    );
    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height, big-endian, after the signature and chunk header.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(width >= 800 && height >= 400, "{width}x{height}");

    // Compared with itself: every line is there on both sides, unchanged.
    let report = out.join("results.json");
    let report = report.to_str().unwrap();
    let compared = sealstore(&["bench", "compare", report, report], dir.path());
    assert!(compared.contains("0.0%"), "{compared}");
    assert!(!compared.contains("only in"), "{compared}");
    assert!(compared.contains("0 faster and 0 slower"), "{compared}");
}

#[test]
fn bench_compare_explains_a_file_that_is_not_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, b"{\"hello\": 1}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sealstore"))
        .args(["bench", "compare"])
        .arg(&bogus)
        .arg(&bogus)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a results.json of sealstore bench"), "{stderr}");
}
