//! Differences between two benchmark [`Report`]s: the lines of both matched by kind, group and
//! name, and a table of them for the terminal (`sealstore bench compare`).

use std::fmt::Write as _;

use super::{format_latency, format_rate, Measured, Report, Unit};

/// One line present in either report.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// The benchmark ("crypto", "object", "s3", "volume", "kms").
    pub kind: String,
    /// What is measured.
    pub group: String,
    /// Which implementation or peer.
    pub name: String,
    /// What `before` and `after` count.
    pub unit: Unit,
    /// The value in the first report, if the line is there.
    pub before: Option<f64>,
    /// The value in the second report, if the line is there.
    pub after: Option<f64>,
    /// `after / before - 1`, when both are there and `before` is positive.
    pub change: Option<f64>,
    /// The 99th-percentile latency in the first report, microseconds.
    pub p99_before_us: Option<f64>,
    /// The 99th-percentile latency in the second report, microseconds.
    pub p99_after_us: Option<f64>,
}

impl Difference {
    fn new(line: &Measured) -> Self {
        Difference {
            kind: line.kind.clone(),
            group: line.group.clone(),
            name: line.name.clone(),
            unit: line.unit,
            before: None,
            after: None,
            change: None,
            p99_before_us: None,
            p99_after_us: None,
        }
    }
}

fn same_line(a: &Measured, b: &Measured) -> bool {
    a.kind == b.kind && a.group == b.group && a.name == b.name && a.unit == b.unit
}

/// Lines matched by (kind, group, name), in `before`'s order then lines only in `after`.
///
/// A line whose unit differs between the reports is not matched: it appears twice, once only in
/// `before` and once only in `after`. Each line of `after` is matched at most once.
pub fn differences(before: &Report, after: &Report) -> Vec<Difference> {
    let mut used = vec![false; after.results.len()];
    let mut out = Vec::with_capacity(before.results.len().max(after.results.len()));
    for old in &before.results {
        let mut diff = Difference::new(old);
        diff.before = Some(old.value);
        diff.p99_before_us = old.latency.as_ref().map(|l| l.p99_us);
        let found = after
            .results
            .iter()
            .enumerate()
            .find(|(i, new)| !used[*i] && same_line(old, new));
        if let Some((i, new)) = found {
            used[i] = true;
            diff.after = Some(new.value);
            diff.p99_after_us = new.latency.as_ref().map(|l| l.p99_us);
            diff.change = (old.value > 0.0 && old.value.is_finite() && new.value.is_finite())
                .then(|| new.value / old.value - 1.0);
        }
        out.push(diff);
    }
    for (new, _) in after.results.iter().zip(&used).filter(|(_, used)| !**used) {
        let mut diff = Difference::new(new);
        diff.after = Some(new.value);
        diff.p99_after_us = new.latency.as_ref().map(|l| l.p99_us);
        out.push(diff);
    }
    out
}

/// "+12.3%", "-4.0%", "0.0%".
fn format_change(change: f64) -> String {
    let percent = change * 100.0;
    if (percent * 10.0).round() == 0.0 {
        "0.0%".into()
    } else {
        format!("{percent:+.1}%")
    }
}

/// One report in the header: "sealstore bench all 0.4.0, 2025-01-01T00:00:00Z, AMD EPYC (4 threads)".
fn describe(report: &Report) -> String {
    let machine = &report.machine;
    format!(
        "{} {}, {}, {} ({} threads, {} {})",
        report.tool,
        report.version,
        report.date,
        machine.cpu.as_deref().unwrap_or("unknown CPU"),
        machine.threads,
        machine.os,
        machine.arch
    )
}

/// Longest group or name shown, in characters.
const MAX_CELL: usize = 48;

/// A table for the terminal: a header naming both reports (tool, version, date, machine CPU and
/// threads of each), then per kind a section with columns MEASURED (group), IMPLEMENTATION
/// (name), BEFORE, AFTER, CHANGE ("+12.3%", "-4.0%", "only in before", "only in after") and,
/// when some line of the kind has latencies in both reports, P99 BEFORE → AFTER; and a last line
/// counting the lines faster or slower by more than `noise` (0.05 = 5%) and those within it.
pub fn render(before: &Report, after: &Report, before_label: &str, after_label: &str, noise: f64) -> String {
    let noise = if noise.is_finite() { noise.abs() } else { 0.0 };
    let diffs = differences(before, after);
    let mut out = String::new();
    let width = before_label.chars().count().max(after_label.chars().count());
    let _ = writeln!(out, "before  {before_label:<width$}  {}", describe(before));
    let _ = writeln!(out, "after   {after_label:<width$}  {}", describe(after));

    if diffs.is_empty() {
        out.push_str("\nno results in either report\n");
        return out;
    }

    let mut kinds: Vec<&str> = Vec::new();
    for d in &diffs {
        if !kinds.contains(&d.kind.as_str()) {
            kinds.push(&d.kind);
        }
    }
    for kind in kinds {
        let rows: Vec<&Difference> = diffs.iter().filter(|d| d.kind == kind).collect();
        let with_p99 = rows
            .iter()
            .any(|d| d.p99_before_us.is_some() && d.p99_after_us.is_some());
        let mut table: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
        let mut header: Vec<String> = ["MEASURED", "IMPLEMENTATION", "BEFORE", "AFTER", "CHANGE"]
            .iter()
            .map(|h| h.to_string())
            .collect();
        if with_p99 {
            header.push("P99 BEFORE → AFTER".into());
        }
        table.push(header);
        let mut previous_group: Option<&str> = None;
        for d in &rows {
            let group = if previous_group == Some(d.group.as_str()) {
                String::new()
            } else {
                super::truncate(&d.group, MAX_CELL)
            };
            previous_group = Some(&d.group);
            let rate = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format_rate(d.unit, v));
            let change = match (d.before, d.after, d.change) {
                (_, _, Some(change)) => format_change(change),
                (Some(_), None, _) => "only in before".into(),
                (None, Some(_), _) => "only in after".into(),
                _ => "-".into(),
            };
            let mut row = vec![
                group,
                super::truncate(&d.name, MAX_CELL),
                rate(d.before),
                rate(d.after),
                change,
            ];
            if with_p99 {
                row.push(match (d.p99_before_us, d.p99_after_us) {
                    (Some(b), Some(a)) => format!("{} → {}", format_latency(b), format_latency(a)),
                    _ => String::new(),
                });
            }
            table.push(row);
        }
        let _ = writeln!(out, "\n{kind}");
        write_table(&mut out, &table);
    }

    let (mut faster, mut slower, mut within, mut unmatched) = (0, 0, 0, 0);
    for d in &diffs {
        match d.change {
            Some(c) if c > noise => faster += 1,
            Some(c) if c < -noise => slower += 1,
            Some(_) => within += 1,
            None if d.before.is_some() && d.after.is_some() => within += 1,
            None => unmatched += 1,
        }
    }
    let _ = writeln!(
        out,
        "\n{faster} faster and {slower} slower by more than {:.1}%, {within} within noise, \
         {unmatched} in one report only",
        noise * 100.0
    );
    out
}

/// Columns separated by two spaces: text columns (the first two) left-aligned, the others
/// right-aligned; the last column is not padded.
fn write_table(out: &mut String, table: &[Vec<String>]) {
    let columns = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            table
                .iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let width = widths[c];
            if c < 2 {
                let _ = write!(line, "{cell:<width$}");
            } else {
                let _ = write!(line, "{cell:>width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Latency, Machine};

    fn line(kind: &str, group: &str, name: &str, unit: Unit, value: f64) -> Measured {
        crate::bench::test_line(kind, group, name, unit, value, false)
    }

    fn with_p99(mut m: Measured, p99: f64) -> Measured {
        m.latency = Some(Latency {
            p50_us: p99 / 10.0,
            p90_us: p99 / 2.0,
            p99_us: p99,
            max_us: p99 * 2.0,
            cdf: Vec::new(),
        });
        m
    }

    fn report(version: &str, cpu: &str, results: Vec<Measured>) -> Report {
        Report {
            tool: "sealstore bench all".into(),
            version: version.into(),
            date: "2025-01-01T00:00:00Z".into(),
            machine: Machine {
                os: "linux".into(),
                arch: "x86_64".into(),
                threads: 8,
                cpu: Some(cpu.into()),
                cpu_features: Vec::new(),
            },
            parameters: serde_json::Map::new(),
            results,
        }
    }

    fn pair() -> (Report, Report) {
        let before = report(
            "0.1.0",
            "Old CPU",
            vec![
                line("crypto", "GCM seal", "sealstore", Unit::BytesPerSec, 2e9),
                line("crypto", "GCM seal", "aws-lc", Unit::BytesPerSec, 3e9),
                line("crypto", "XTS", "sealstore", Unit::BytesPerSec, 1e9),
                with_p99(line("object", "PUT", "sealstore", Unit::OpsPerSec, 1000.0), 1240.0),
                line("object", "GET", "sealstore", Unit::OpsPerSec, 500.0),
                line("kms", "encrypt", "kms-core", Unit::OpsPerSec, 100.0),
            ],
        );
        let after = report(
            "0.2.0",
            "New CPU",
            vec![
                line("object", "GET", "sealstore", Unit::BytesPerSec, 5e8),
                with_p99(line("object", "PUT", "sealstore", Unit::OpsPerSec, 1100.0), 85.0),
                line("crypto", "GCM seal", "aws-lc", Unit::BytesPerSec, 3.03e9),
                line("crypto", "GCM seal", "sealstore", Unit::BytesPerSec, 1.8e9),
                line("crypto", "XTS", "sealstore", Unit::BytesPerSec, 1.04e9),
                line("s3", "PUT", "sealstore", Unit::OpsPerSec, 50.0),
            ],
        );
        (before, after)
    }

    #[test]
    fn matches_lines_by_kind_group_name_and_unit() {
        let (before, after) = pair();
        let diffs = differences(&before, &after);
        let keys: Vec<_> = diffs
            .iter()
            .map(|d| (d.kind.as_str(), d.group.as_str(), d.name.as_str(), d.before, d.after))
            .collect();
        assert_eq!(
            keys,
            [
                ("crypto", "GCM seal", "sealstore", Some(2e9), Some(1.8e9)),
                ("crypto", "GCM seal", "aws-lc", Some(3e9), Some(3.03e9)),
                ("crypto", "XTS", "sealstore", Some(1e9), Some(1.04e9)),
                ("object", "PUT", "sealstore", Some(1000.0), Some(1100.0)),
                // The unit changed: not matched.
                ("object", "GET", "sealstore", Some(500.0), None),
                ("kms", "encrypt", "kms-core", Some(100.0), None),
                ("object", "GET", "sealstore", None, Some(5e8)),
                ("s3", "PUT", "sealstore", None, Some(50.0)),
            ]
        );
        assert_eq!(diffs[4].unit, Unit::OpsPerSec);
        assert_eq!(diffs[6].unit, Unit::BytesPerSec);

        let change = |i: usize| diffs[i].change.unwrap();
        assert!((change(0) + 0.10).abs() < 1e-9);
        assert!((change(1) - 0.01).abs() < 1e-9);
        assert!((change(2) - 0.04).abs() < 1e-9);
        assert!((change(3) - 0.10).abs() < 1e-9);
        assert!(diffs[4..].iter().all(|d| d.change.is_none()));

        assert_eq!(diffs[3].p99_before_us, Some(1240.0));
        assert_eq!(diffs[3].p99_after_us, Some(85.0));
        assert_eq!(diffs[0].p99_before_us, None);
    }

    #[test]
    fn zero_before_has_no_change() {
        let before = report("a", "c", vec![line("kms", "g", "n", Unit::OpsPerSec, 0.0)]);
        let after = report("b", "c", vec![line("kms", "g", "n", Unit::OpsPerSec, 5.0)]);
        let diffs = differences(&before, &after);
        assert_eq!(diffs.len(), 1);
        assert_eq!(
            (diffs[0].before, diffs[0].after, diffs[0].change),
            (Some(0.0), Some(5.0), None)
        );
    }

    #[test]
    fn renders_a_table() {
        let (before, after) = pair();
        let text = render(&before, &after, "main.json", "branch.json", 0.05);
        for expected in [
            "main.json",
            "branch.json",
            "sealstore bench all 0.1.0",
            "sealstore bench all 0.2.0",
            "2025-01-01T00:00:00Z",
            "Old CPU (8 threads",
            "New CPU (8 threads",
            "MEASURED",
            "IMPLEMENTATION",
            "BEFORE",
            "AFTER",
            "CHANGE",
            "P99 BEFORE → AFTER",
            "1.24 ms → 85 µs",
            "+10.0%",
            "-10.0%",
            "+1.0%",
            "+4.0%",
            "only in before",
            "only in after",
            &format_rate(Unit::BytesPerSec, 2e9),
            &format_rate(Unit::OpsPerSec, 1100.0),
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        // Sections in order of first appearance, P99 only where both reports timed the line.
        let crypto = text.find("\ncrypto\n").unwrap();
        let object = text.find("\nobject\n").unwrap();
        let kms = text.find("\nkms\n").unwrap();
        let s3 = text.find("\ns3\n").unwrap();
        assert!(crypto < object && object < kms && kms < s3);
        assert_eq!(text.matches("P99 BEFORE").count(), 1);
        // Faster: PUT +10%; slower: GCM sealstore -10%; within 5%: aws-lc +1%, XTS +4%.
        let last = text.lines().last().unwrap();
        assert_eq!(
            last,
            "1 faster and 1 slower by more than 5.0%, 2 within noise, 4 in one report only"
        );
    }

    #[test]
    fn noise_threshold_moves_lines() {
        let (before, after) = pair();
        let text = render(&before, &after, "a", "b", 0.02);
        assert!(text.ends_with("2 faster and 1 slower by more than 2.0%, 1 within noise, 4 in one report only\n"));
        let text = render(&before, &after, "a", "b", 0.2);
        assert!(text.ends_with("0 faster and 0 slower by more than 20.0%, 4 within noise, 4 in one report only\n"));
    }

    #[test]
    fn empty_reports() {
        let empty = report("1", "c", Vec::new());
        assert!(differences(&empty, &empty).is_empty());
        let text = render(&empty, &empty, "x", "y", 0.05);
        assert!(text.contains("no results in either report"));
    }

    #[test]
    fn change_format() {
        assert_eq!(format_change(0.123), "+12.3%");
        assert_eq!(format_change(-0.04), "-4.0%");
        assert_eq!(format_change(-0.0001), "0.0%");
    }
}
