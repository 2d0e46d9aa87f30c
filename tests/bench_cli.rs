//! `sealstore bench crypto --quick --out DIR` (the CI smoke run of the benchmark tool): every
//! measurement ran, produced a throughput, and was set against its raw baseline. No timings
//! are asserted.

use std::process::Command;

#[test]
fn quick_crypto_bench_measures_every_line_and_writes_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sealstore"))
        .args(["bench", "crypto", "--quick", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("AES-NI") || stdout.contains("AES "), "{stdout}");

    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(doc["tool"], "sealstore bench crypto");
    assert!(doc["machine"]["threads"].as_u64().unwrap() >= 1);
    let results = doc["results"].as_array().unwrap();
    let groups: std::collections::BTreeSet<&str> = results.iter().map(|r| r["group"].as_str().unwrap()).collect();
    assert_eq!(groups.len(), 4, "{groups:?}");
    for r in results {
        let rate = r["bytesPerSec"].as_f64().unwrap();
        assert!(rate > 1e6, "{r}");
        let ratio = r["ratio"].as_f64().unwrap_or_else(|| panic!("no ratio: {r}"));
        assert!(ratio > 0.0 && ratio.is_finite(), "{r}");
    }
    // Each group has its raw baseline at exactly 1 and a sealstore line.
    for g in &groups {
        let in_group: Vec<_> = results.iter().filter(|r| r["group"] == *g).collect();
        assert!(in_group.iter().any(|r| r["ratio"] == 1.0), "{g}");
        assert!(
            in_group
                .iter()
                .any(|r| r["name"].as_str().unwrap().starts_with("sealstore")),
            "{g}"
        );
    }
}
