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

    // Durations are plain seconds, never serde's {"secs", "nanos"}.
    let text = std::fs::read_to_string(out.join("results.json")).unwrap();
    assert!(!text.contains("\"secs\"") && !text.contains("\"nanos\""), "{text}");
    for kind in ["object", "s3"] {
        let seconds = doc["parameters"][kind]["load"]["secondsPerLine"].as_f64();
        assert_eq!(seconds, Some(0.3), "{kind}: {}", doc["parameters"][kind]);
    }
    // Every line has a role; the peers are not drawn as sealstore.
    for r in results {
        let name = r["name"].as_str().unwrap();
        let role = r["role"].as_str().unwrap();
        let expected = if name.starts_with("openssl") || name.contains("LUKS") {
            "peer"
        } else if name.starts_with("sealstore") {
            "sealstore"
        } else if r["baseline"] == true {
            "baseline"
        } else {
            role
        };
        assert_eq!(role, expected, "{r}");
    }
    assert_fits_80_columns(&stdout);

    // Compared with itself: every line is there on both sides, unchanged, and (a --quick run)
    // too short to tell anything.
    let report = out.join("results.json");
    let report = report.to_str().unwrap();
    let compared = sealstore(&["bench", "compare", report, report], dir.path());
    assert!(compared.contains("0.0%"), "{compared}");
    assert!(!compared.contains("only "), "{compared}");
    assert!(compared.contains("significant: 0 faster, 0 slower"), "{compared}");
    assert_fits_80_columns(&compared);
}

/// Every line of `text` but the "wrote PATH" ones is at most 80 characters.
fn assert_fits_80_columns(text: &str) {
    for line in text.lines().filter(|l| !l.starts_with("wrote ")) {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line:?}\n{text}",
            line.chars().count()
        );
    }
}

/// `sealstore bench compare` on two files; its exit status, stdout and stderr.
fn compare(
    dir: &Path,
    before: &serde_json::Value,
    after: &serde_json::Value,
    extra: &[&str],
) -> (bool, String, String) {
    let (a, b) = (dir.join("before.json"), dir.join("after.json"));
    std::fs::write(&a, serde_json::to_vec(before).unwrap()).unwrap();
    std::fs::write(&b, serde_json::to_vec(after).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sealstore"))
        .args(["bench", "compare"])
        .arg(&a)
        .arg(&b)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn quick_crypto_fits_80_columns_and_compare_judges_noise_and_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let stdout = sealstore(
        &["bench", "crypto", "--quick", "--out", out.to_str().unwrap()],
        dir.path(),
    );
    assert!(stdout.contains("CRYPTO\n"), "{stdout}");
    assert_fits_80_columns(&stdout);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    for r in report["results"].as_array().unwrap() {
        let name = r["name"].as_str().unwrap();
        let role = if name.starts_with("sealstore") {
            "sealstore"
        } else if name.starts_with("openssl") || name == "raw aws-lc, one 1 MiB unit" {
            "peer"
        } else {
            "baseline"
        };
        assert_eq!(r["role"], role, "{r}");
    }
    let svg = std::fs::read_to_string(out.join("crypto-throughput.svg")).unwrap();
    assert!(
        svg.contains("#0072B2") && svg.contains("#969696"),
        "sealstore blue, baselines grey"
    );

    // Two identical --quick runs: every change is "too short" to tell, none significant.
    let (ok, text, stderr) = compare(dir.path(), &report, &report, &[]);
    assert!(ok, "{stderr}");
    assert!(text.contains("significant: 0 faster, 0 slower"), "{text}");
    assert!(text.contains("too short"), "{text}");
    assert!(text.contains("--quick is a smoke run"), "{text}");
    assert_fits_80_columns(&text);

    // Longer runs: a line whose rounds spread over ±20% moved 15% (noise), one measured once
    // moved 50% (beyond the 5% threshold: significant).
    let mut before = report.clone();
    before["parameters"]["crypto"]["secondsPerLine"] = 3.0.into();
    before["parameters"]["crypto"]["quick"] = false.into();
    let lines = before["results"].as_array_mut().unwrap();
    lines.truncate(2);
    for line in lines.iter_mut() {
        line["value"] = 1000.0.into();
        line["seconds"] = 3.0.into();
    }
    lines[0]["rounds"] = serde_json::json!([800.0, 1000.0, 1200.0]);
    let mut after = before.clone();
    after["results"][0]["value"] = 1150.0.into();
    after["results"][0]["rounds"] = serde_json::json!([1100.0, 1150.0, 1200.0]);
    after["results"][1]["value"] = 1500.0.into();
    let (ok, text, stderr) = compare(dir.path(), &before, &after, &[]);
    assert!(ok, "{stderr}");
    assert!(text.contains("+15.0%") && text.contains("noise ±40%"), "{text}");
    assert!(text.contains("+50.0%") && text.contains("FASTER"), "{text}");
    assert!(text.contains("significant: 1 faster, 0 slower"), "{text}");
    assert!(text.contains("1 within the noise"), "{text}");

    // Different parameters: refused, the fields listed; compared with a warning when allowed.
    after["parameters"]["crypto"]["objectSize"] = 67108864.into();
    after["parameters"]["crypto"]["secondsPerLine"] = 10.0.into();
    let (ok, text, stderr) = compare(dir.path(), &before, &after, &[]);
    assert!(!ok, "{text}");
    assert!(stderr.contains("parameters differ"), "{stderr}");
    assert!(stderr.contains("crypto.objectSize: 8388608 → 67108864"), "{stderr}");
    assert!(stderr.contains("crypto.secondsPerLine: 3.0 → 10.0"), "{stderr}");
    let (ok, text, stderr) = compare(dir.path(), &before, &after, &["--allow-different-parameters"]);
    assert!(ok, "{stderr}");
    assert!(text.contains("WARNING: the runs' parameters differ"), "{text}");
    assert!(text.contains("crypto.objectSize: 8388608 → 67108864"), "{text}");
    // Another machine: compared, with a warning.
    let mut elsewhere = before.clone();
    elsewhere["machine"]["threads"] = 64.into();
    let (ok, text, stderr) = compare(dir.path(), &before, &elsewhere, &[]);
    assert!(ok, "{stderr}");
    assert!(text.contains("WARNING: different machines"), "{text}");
    assert!(text.contains("machine.threads: "), "{text}");
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
