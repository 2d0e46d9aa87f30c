//! Differences between two benchmark [`Report`]s: the lines of both matched by kind, group and
//! name, each change judged against the run-to-run noise, the parameters of both runs
//! checked, and a table of them for the terminal (`sealstore bench compare`).
//!
//! The noise of a line is the spread of its rounds ((max − min) / median, the larger of the
//! two reports') where it ran several rounds, never less than the stated threshold
//! (`--noise`); a line measured for under [`MIN_SECONDS`] in one round (a `--quick` smoke run)
//! is too short to tell anything.

use std::fmt::Write as _;

use serde_json::Value;

use super::table::{Row, Table, WIDTH};
use super::{format_latency, format_rate, truncate, Measured, Report, Unit};

/// Shortest measurement, seconds per line, whose change means something without rounds.
pub(crate) const MIN_SECONDS: f64 = 1.0;

/// Parameters that differ between runs without changing what is measured: working
/// directories and the endpoints' addresses (sealstore's own server listens on a fresh port).
const IGNORED_PARAMETERS: [&str; 2] = ["dir", "endpoints"];

/// What a change amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Faster by more than the noise.
    Faster,
    /// Slower by more than the noise.
    Slower,
    /// Within the noise.
    Noise,
    /// Measured too briefly (under [`MIN_SECONDS`] per line, one round) to tell.
    TooShort,
    /// In one report only, or not comparable (a rate of 0 before).
    Unmatched,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Faster => "FASTER",
            Verdict::Slower => "SLOWER",
            Verdict::Noise => "noise",
            Verdict::TooShort => "too short",
            Verdict::Unmatched => "",
        }
    }
}

/// One field that differs between the two runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldDifference {
    /// "crypto.objectSize", "machine.cpu".
    pub field: String,
    /// Its value in the first report (`-`: absent).
    pub before: String,
    /// Its value in the second report.
    pub after: String,
}

impl std::fmt::Display for FieldDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} → {}", self.field, self.before, self.after)
    }
}

/// Why two reports were not compared.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CompareError {
    /// The runs measured with different parameters (sizes, durations, clients...).
    #[error(
        "the two runs' parameters differ, so their rates are not comparable:\n{}\n\
         (--allow-different-parameters compares them anyway)",
        list(.0)
    )]
    ParametersDiffer(Vec<FieldDifference>),
}

fn list(fields: &[FieldDifference]) -> String {
    fields.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n")
}

/// One line present in either report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Difference {
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
    /// The change below which it is noise (0.05 = 5%), when both reports have the line.
    pub noise: Option<f64>,
    /// What the change amounts to.
    pub verdict: Verdict,
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
            noise: None,
            verdict: Verdict::Unmatched,
        }
    }
}

/// (max − min) / median of a line's rounds, when it ran at least two.
pub(crate) fn spread(rounds: &[f64]) -> Option<f64> {
    let mut values: Vec<f64> = rounds.iter().copied().filter(|v| v.is_finite()).collect();
    if values.len() < 2 {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    (median > 0.0).then(|| (values[values.len() - 1] - values[0]) / median)
}

/// Seconds each line of `kind` ran in `report`: its parameters' `secondsPerLine` (at the top
/// or in `load`), else the line's own measured seconds (0 for a rate a peer tool reported).
fn seconds_per_line(report: &Report, line: &Measured) -> f64 {
    let parameters = report.parameters.get(&line.kind);
    let stated = parameters
        .and_then(|p| {
            p.get("secondsPerLine")
                .or_else(|| p.get("load").and_then(|l| l.get("secondsPerLine")))
        })
        .and_then(Value::as_f64);
    stated.unwrap_or(line.seconds)
}

/// The noise band of a matched line and what its change amounts to, with `threshold` the
/// least change that counts.
fn judge(before: (&Report, &Measured), after: (&Report, &Measured), change: f64, threshold: f64) -> (f64, Verdict) {
    let spreads = [spread(&before.1.rounds), spread(&after.1.rounds)];
    let band = spreads.iter().flatten().fold(threshold, |a, b| a.max(*b));
    let measured_spread = spreads.iter().any(Option::is_some);
    let short = |(report, line): (&Report, &Measured)| {
        let seconds = seconds_per_line(report, line);
        seconds > 0.0 && seconds < MIN_SECONDS
    };
    let verdict = if !measured_spread && (short(before) || short(after)) {
        Verdict::TooShort
    } else if change.abs() <= band {
        Verdict::Noise
    } else if change > 0.0 {
        Verdict::Faster
    } else {
        Verdict::Slower
    };
    (band, verdict)
}

fn same_line(a: &Measured, b: &Measured) -> bool {
    a.kind == b.kind && a.group == b.group && a.name == b.name && a.unit == b.unit
}

/// Lines matched by (kind, group, name), in `before`'s order then lines only in `after`, each
/// change judged against its noise (at least `threshold`, 0.05 = 5%).
///
/// A line whose unit differs between the reports is not matched: it appears twice, once only in
/// `before` and once only in `after`. Each line of `after` is matched at most once.
pub(crate) fn differences(before: &Report, after: &Report, threshold: f64) -> Vec<Difference> {
    let threshold = if threshold.is_finite() { threshold.abs() } else { 0.0 };
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
            if let Some(change) = diff.change {
                let (band, verdict) = judge((before, old), (after, new), change, threshold);
                (diff.noise, diff.verdict) = (Some(band), verdict);
            }
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

/// One report in the header, on lines of at most [`WIDTH`] characters:
/// "before: main.json", "  sealstore bench all 0.4.0, 2025-01-01T00:00:00Z",
/// "  AMD EPYC (4 threads, linux x86_64)".
fn describe(out: &mut String, which: &str, label: &str, report: &Report) {
    let machine = &report.machine;
    for line in [
        format!("{which}: {label}"),
        format!("  {} {}, {}", report.tool, report.version, report.date),
        format!(
            "  {} ({} threads, {} {})",
            machine.cpu.as_deref().unwrap_or("unknown CPU"),
            machine.threads,
            machine.os,
            machine.arch
        ),
    ] {
        let _ = writeln!(out, "{}", truncate(&line, WIDTH));
    }
}

/// A JSON value for people: strings without quotes, absent as "-".
fn show(value: Option<&Value>) -> String {
    match value {
        None => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// The leaves of `value` by dotted path under `prefix` (objects only; arrays are leaves),
/// without the [`IGNORED_PARAMETERS`].
fn leaves<'a>(prefix: &str, value: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(fields) => {
            for (name, v) in fields {
                if !IGNORED_PARAMETERS.contains(&name.as_str()) {
                    leaves(&format!("{prefix}.{name}"), v, out);
                }
            }
        }
        v => out.push((prefix.to_owned(), v)),
    }
}

/// The parameters that differ between the runs, for each kind both ran ("crypto.objectSize",
/// "s3.load.smallClients"); working directories and endpoint addresses do not count.
pub(crate) fn parameter_differences(before: &Report, after: &Report) -> Vec<FieldDifference> {
    let mut out = Vec::new();
    for (kind, old) in &before.parameters {
        let Some(new) = after.parameters.get(kind) else {
            continue;
        };
        let (mut old_leaves, mut new_leaves) = (Vec::new(), Vec::new());
        leaves(kind, old, &mut old_leaves);
        leaves(kind, new, &mut new_leaves);
        for (field, value) in &old_leaves {
            let other = new_leaves.iter().find(|(f, _)| f == field).map(|(_, v)| *v);
            if other != Some(*value) {
                out.push(FieldDifference {
                    field: field.clone(),
                    before: show(Some(value)),
                    after: show(other),
                });
            }
        }
        for (field, value) in &new_leaves {
            if !old_leaves.iter().any(|(f, _)| f == field) {
                out.push(FieldDifference {
                    field: field.clone(),
                    before: "-".into(),
                    after: show(Some(value)),
                });
            }
        }
    }
    out
}

/// How the two machines differ: CPU model, threads, OS and architecture.
pub(crate) fn machine_differences(before: &Report, after: &Report) -> Vec<FieldDifference> {
    let (a, b) = (&before.machine, &after.machine);
    let unknown = || "unknown".to_owned();
    [
        (
            "machine.cpu",
            a.cpu.clone().unwrap_or_else(unknown),
            b.cpu.clone().unwrap_or_else(unknown),
        ),
        ("machine.threads", a.threads.to_string(), b.threads.to_string()),
        ("machine.os", a.os.clone(), b.os.clone()),
        ("machine.arch", a.arch.clone(), b.arch.clone()),
    ]
    .into_iter()
    .filter(|(_, x, y)| x != y)
    .map(|(field, before, after)| FieldDifference {
        field: field.into(),
        before,
        after,
    })
    .collect()
}

/// How [`render`] compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Options {
    /// The least change that counts (0.05 = 5%), whatever the rounds' spread.
    pub noise: f64,
    /// Compare runs whose parameters differ (with a warning) instead of refusing.
    pub allow_different_parameters: bool,
}

/// A table for the terminal, every line at most [`WIDTH`] characters: a header naming both
/// reports (tool, version, date, machine), warnings where the machines differ (and, when
/// allowed, the parameters), then per kind a section with a title line per group (MEASURED)
/// and per line IMPLEMENTATION, BEFORE, AFTER, CHANGE and VERDICT ("FASTER" or "SLOWER"
/// beyond the noise, "noise ±N%", "too short", "only before", "only after"), with the p99
/// latencies below where both reports timed the line; last, the counts of each verdict.
///
/// Refuses ([`CompareError::ParametersDiffer`]) when the runs' parameters differ, unless
/// `options.allow_different_parameters`.
pub(crate) fn render(
    before: &Report,
    after: &Report,
    before_label: &str,
    after_label: &str,
    options: Options,
) -> Result<String, CompareError> {
    let parameters = parameter_differences(before, after);
    if !parameters.is_empty() && !options.allow_different_parameters {
        return Err(CompareError::ParametersDiffer(parameters));
    }
    let threshold = if options.noise.is_finite() {
        options.noise.abs()
    } else {
        0.0
    };
    let diffs = differences(before, after, threshold);
    let mut out = String::new();
    describe(&mut out, "before", before_label, before);
    describe(&mut out, "after", after_label, after);
    let machines = machine_differences(before, after);
    if !machines.is_empty() {
        let _ = writeln!(out, "\nWARNING: different machines; changes may be the machine's:");
        for f in &machines {
            let _ = writeln!(out, "{}", truncate(&format!("  {f}"), WIDTH));
        }
    }
    if !parameters.is_empty() {
        let _ = writeln!(out, "\nWARNING: the runs' parameters differ (compared anyway):");
        for f in &parameters {
            let _ = writeln!(out, "{}", truncate(&format!("  {f}"), WIDTH));
        }
    }

    if diffs.is_empty() {
        out.push_str("\nno results in either report\n");
        return Ok(out);
    }

    let mut kinds: Vec<&str> = Vec::new();
    for d in &diffs {
        if !kinds.contains(&d.kind.as_str()) {
            kinds.push(&d.kind);
        }
    }
    for kind in kinds {
        let mut table = Table {
            header: ["IMPLEMENTATION", "BEFORE", "AFTER", "CHANGE", "VERDICT"]
                .iter()
                .map(|h| h.to_string())
                .collect(),
            rows: Vec::new(),
            indent: 2,
        };
        let mut previous_group: Option<&str> = None;
        for d in diffs.iter().filter(|d| d.kind == kind) {
            if previous_group != Some(d.group.as_str()) {
                table.rows.push(Row::Text(d.group.clone()));
                previous_group = Some(&d.group);
            }
            let rate = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format_rate(d.unit, v));
            let verdict = match (d.before, d.after, d.verdict, d.noise) {
                (_, _, Verdict::Noise, Some(band)) => format!("noise ±{:.0}%", band * 100.0),
                (Some(_), None, _, _) => "only before".into(),
                (None, Some(_), _, _) => "only after".into(),
                (_, _, verdict, _) => verdict.word().into(),
            };
            table.rows.push(Row::Cells(vec![
                d.name.clone(),
                rate(d.before),
                rate(d.after),
                d.change.map_or_else(|| "-".into(), format_change),
                verdict,
            ]));
            if let (Some(b), Some(a)) = (d.p99_before_us, d.p99_after_us) {
                table.rows.push(Row::Text(format!(
                    "    p99 latency {} → {}",
                    format_latency(b),
                    format_latency(a)
                )));
            }
        }
        let _ = write!(out, "\n{}\n{}", kind.to_uppercase(), table.render());
    }

    let count = |v: Verdict| diffs.iter().filter(|d| d.verdict == v).count();
    let _ = writeln!(
        out,
        "\nsignificant: {} faster, {} slower (beyond the noise)\n\
         not significant: {} within the noise, {} too short to tell\n\
         {} in one report only",
        count(Verdict::Faster),
        count(Verdict::Slower),
        count(Verdict::Noise),
        count(Verdict::TooShort),
        count(Verdict::Unmatched),
    );
    let _ = writeln!(
        out,
        "noise: a line's spread over its rounds ((max - min) / median, either report),\n\
         at least {:.1}% (--noise) and exactly that for lines run in one round.",
        threshold * 100.0
    );
    if count(Verdict::TooShort) > 0 {
        let _ = writeln!(
            out,
            "too short: one round of under {MIN_SECONDS:.0} s per line (--quick is a smoke run);\n\
             rerun with --duration 3 or more, or --rounds 3, to compare."
        );
    }
    Ok(out)
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
        let diffs = differences(&before, &after, 0.05);
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
        let diffs = differences(&before, &after, 0.05);
        assert_eq!(diffs.len(), 1);
        assert_eq!(
            (diffs[0].before, diffs[0].after, diffs[0].change),
            (Some(0.0), Some(5.0), None)
        );
    }

    fn options(noise: f64) -> Options {
        Options {
            noise,
            allow_different_parameters: false,
        }
    }

    #[test]
    fn renders_a_table_in_80_columns() {
        let (before, after) = pair();
        let text = render(&before, &after, "main.json", "branch.json", options(0.05)).unwrap();
        for expected in [
            "before: main.json",
            "after: branch.json",
            "sealstore bench all 0.1.0",
            "sealstore bench all 0.2.0",
            "2025-01-01T00:00:00Z",
            "Old CPU (8 threads",
            "New CPU (8 threads",
            "WARNING: different machines",
            "machine.cpu: Old CPU → New CPU",
            "IMPLEMENTATION",
            "BEFORE",
            "AFTER",
            "CHANGE",
            "VERDICT",
            "p99 latency 1.24 ms → 85 µs",
            "+10.0%",
            "-10.0%",
            "+1.0%",
            "+4.0%",
            "only before",
            "only after",
            &format_rate(Unit::BytesPerSec, 2e9),
            &format_rate(Unit::OpsPerSec, 1100.0),
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "{line:?} is wider than {WIDTH}");
        }
        // Sections in order of first appearance, each group a line of its own.
        let crypto = text.find("\nCRYPTO\n").unwrap();
        let object = text.find("\nOBJECT\n").unwrap();
        let kms = text.find("\nKMS\n").unwrap();
        let s3 = text.find("\nS3\n").unwrap();
        assert!(crypto < object && object < kms && kms < s3);
        assert!(text.contains("\nGCM seal\n"), "{text}");
        assert_eq!(text.matches("p99 latency").count(), 1);
        // Faster: PUT +10%; slower: GCM sealstore -10%; within 5%: aws-lc +1%, XTS +4%.
        assert!(
            text.contains("significant: 1 faster, 1 slower (beyond the noise)\n"),
            "{text}"
        );
        assert!(text.contains("not significant: 2 within the noise, 0 too short to tell\n4 in one report only"));
        let verdict = |name: &str, group: &str| {
            let diffs = differences(&before, &after, 0.05);
            diffs
                .iter()
                .find(|d| d.name == name && d.group == group)
                .unwrap()
                .verdict
        };
        assert_eq!(verdict("sealstore", "GCM seal"), Verdict::Slower);
        assert_eq!(verdict("sealstore", "PUT"), Verdict::Faster);
        assert_eq!(verdict("aws-lc", "GCM seal"), Verdict::Noise);
    }

    #[test]
    fn noise_threshold_moves_lines() {
        let (before, after) = pair();
        let text = render(&before, &after, "a", "b", options(0.02)).unwrap();
        assert!(text.contains("significant: 2 faster, 1 slower"), "{text}");
        assert!(text.contains("1 within the noise"), "{text}");
        let text = render(&before, &after, "a", "b", options(0.2)).unwrap();
        assert!(text.contains("significant: 0 faster, 0 slower"), "{text}");
        assert!(text.contains("4 within the noise"), "{text}");
    }

    #[test]
    fn the_spread_of_rounds_is_noise() {
        let mut noisy = line("s3", "PUT", "sealstore", Unit::OpsPerSec, 100.0);
        noisy.rounds = vec![60.0, 100.0, 140.0];
        let mut steady = line("s3", "PUT", "s3s-fs", Unit::OpsPerSec, 100.0);
        steady.rounds = vec![99.0, 100.0, 101.0];
        let before = report("1", "c", vec![noisy.clone(), steady.clone()]);
        noisy.value = 160.0;
        steady.value = 130.0;
        let after = report("1", "c", vec![noisy, steady]);
        let diffs = differences(&before, &after, 0.05);
        // +60% against a spread of 80%: noise; +30% against 2%: faster.
        assert_eq!(diffs[0].verdict, Verdict::Noise);
        assert!((diffs[0].noise.unwrap() - 0.8).abs() < 1e-9);
        assert_eq!(diffs[1].verdict, Verdict::Faster);
        assert_eq!(diffs[1].noise, Some(0.05));
        assert_eq!(spread(&[5.0]), None);
    }

    #[test]
    fn quick_runs_are_too_short_to_tell() {
        let mut quick = line("crypto", "GCM", "sealstore", Unit::BytesPerSec, 1e9);
        quick.seconds = 0.3;
        let before = report("1", "c", vec![quick.clone()]);
        quick.value = 2.17e9;
        let after = report("1", "c", vec![quick]);
        let text = render(&before, &after, "a", "b", options(0.05)).unwrap();
        assert!(text.contains("+117.0%") && text.contains("too short"), "{text}");
        assert!(text.contains("significant: 0 faster, 0 slower"), "{text}");
        assert!(text.contains("1 too short to tell"), "{text}");
        assert!(text.contains("--quick is a smoke run"), "{text}");
    }

    #[test]
    fn different_parameters_are_refused_or_listed() {
        let (mut before, mut after) = pair();
        after.machine.cpu = before.machine.cpu.clone();
        before.parameters.insert(
            "crypto".into(),
            serde_json::json!({"objectSize": 8388608, "secondsPerLine": 3.0, "dir": "/tmp/a"}),
        );
        after.parameters.insert(
            "crypto".into(),
            serde_json::json!({"objectSize": 67108864, "secondsPerLine": 3.0, "dir": "/tmp/b"}),
        );
        before.parameters.insert(
            "s3".into(),
            serde_json::json!({"load": {"smallClients": 32}, "endpoints": ["x"]}),
        );
        after.parameters.insert(
            "s3".into(),
            serde_json::json!({"load": {"smallClients": 4}, "endpoints": ["y"]}),
        );
        let fields: Vec<String> = parameter_differences(&before, &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            fields,
            ["crypto.objectSize: 8388608 → 67108864", "s3.load.smallClients: 32 → 4"]
        );
        let err = render(&before, &after, "a", "b", options(0.05)).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("parameters differ"), "{message}");
        assert!(message.contains("crypto.objectSize: 8388608 → 67108864"), "{message}");
        assert!(message.contains("--allow-different-parameters"), "{message}");
        let allowed = Options {
            noise: 0.05,
            allow_different_parameters: true,
        };
        let text = render(&before, &after, "a", "b", allowed).unwrap();
        assert!(text.contains("WARNING: the runs' parameters differ"), "{text}");
        assert!(text.contains("s3.load.smallClients: 32 → 4"), "{text}");
        assert!(!text.contains("different machines"), "{text}");
    }

    #[test]
    fn empty_reports() {
        let empty = report("1", "c", Vec::new());
        assert!(differences(&empty, &empty, 0.05).is_empty());
        let text = render(&empty, &empty, "x", "y", options(0.05)).unwrap();
        assert!(text.contains("no results in either report"));
    }

    #[test]
    fn change_format() {
        assert_eq!(format_change(0.123), "+12.3%");
        assert_eq!(format_change(-0.04), "-4.0%");
        assert_eq!(format_change(-0.0001), "0.0%");
    }
}
