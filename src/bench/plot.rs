//! SVG charts of a benchmark [`Report`]: per kind, the throughput of every line as horizontal
//! bars (one panel per group), and, where operations were timed, their latency distributions
//! (one CDF panel per group, on a logarithmic latency axis).
//!
//! Text is emitted as SVG `<text>` (plotters escapes it); layout uses plotters' naive font
//! metrics, so the charts need no font files.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{format_latency, format_rate, Measured, Report, Unit};

/// Why charts could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Creating the directory or writing a file failed.
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// plotters could not draw a chart.
    #[error("drawing a chart: {0}")]
    Draw(String),
}

/// Width of every chart, pixels.
const WIDTH: u32 = 1000;
/// Height of one bar's slot in a throughput panel, pixels.
const BAR_SLOT: u32 = 60;
/// Height of a throughput panel without its bars (caption, x axis, margins), pixels.
const BAR_PANEL_EXTRA: u32 = 120;
/// Height of one latency panel, pixels.
const LATENCY_PANEL: u32 = 440;
/// Longest name drawn, in characters.
const MAX_NAME: usize = 60;
/// Longest caption drawn, in characters.
const MAX_CAPTION: usize = 90;
/// The smallest latency drawn on the logarithmic axis, microseconds.
const MIN_LATENCY_US: f64 = 0.1;

/// The baseline's bar.
const GREY: RGBColor = RGBColor(150, 150, 150);
/// Every other bar.
const BLUE: RGBColor = RGBColor(0, 114, 178);
/// Latency series, Okabe–Ito colours (distinguishable with colour-vision deficiencies).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(213, 94, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

const FONT: &str = "sans-serif";

/// Writes the SVG charts of `report` into `dir`; returns the files written.
///
/// For each kind present: `KIND-throughput.svg`, and `KIND-latency.svg` when some line of that
/// kind has a latency. An empty report writes nothing (and does not create `dir`).
pub fn write_svgs(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let mut written = Vec::new();
    if report.results.is_empty() {
        return Ok(written);
    }
    std::fs::create_dir_all(dir).map_err(|source| PlotError::Io {
        path: dir.to_owned(),
        source,
    })?;
    for (kind, lines) in ordered_groups(report.results.iter(), |m| m.kind.as_str()) {
        let groups = ordered_groups(lines.iter().copied(), |m| m.group.as_str());
        let stem = file_stem(kind);

        let svg = throughput_svg(&groups)?;
        written.push(write_file(dir, &format!("{stem}-throughput.svg"), &svg)?);

        let timed: Vec<(&str, Vec<&Measured>)> = groups
            .iter()
            .filter(|(_, lines)| lines.iter().any(|m| m.latency.is_some()))
            .map(|(group, lines)| (*group, lines.iter().copied().filter(|m| m.latency.is_some()).collect()))
            .collect();
        if !timed.is_empty() {
            let svg = latency_svg(&timed)?;
            written.push(write_file(dir, &format!("{stem}-latency.svg"), &svg)?);
        }
    }
    Ok(written)
}

/// The items grouped by `key`, groups and items in order of first appearance.
fn ordered_groups<'a, I, F>(items: I, key: F) -> Vec<(&'a str, Vec<&'a Measured>)>
where
    I: Iterator<Item = &'a Measured>,
    F: Fn(&'a Measured) -> &'a str,
{
    let mut groups: Vec<(&str, Vec<&Measured>)> = Vec::new();
    for item in items {
        let k = key(item);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(item),
            None => groups.push((k, vec![item])),
        }
    }
    groups
}

fn write_file(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, PlotError> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(|source| PlotError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// A kind as a file name part: anything but letters, digits, `-` and `_` becomes `_`.
fn file_stem(kind: &str) -> String {
    let stem: String = kind
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() {
        "results".into()
    } else {
        stem
    }
}

/// A value that can be drawn: finite and not negative.
fn drawable(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

/// How a group's values are drawn on the x axis: divided by `divisor`, described as `label`.
fn axis_scale(unit: Unit, max: f64) -> (f64, &'static str) {
    match unit {
        Unit::BytesPerSec if max >= 1e9 => (1e9, "GB/s"),
        Unit::BytesPerSec => (1e6, "MB/s"),
        Unit::OpsPerSec => (1.0, "ops/s"),
    }
}

/// An x-axis tick of a throughput panel whose axis ends at `x_max`: "2.5", "400", "12000".
fn tick_label(v: f64, x_max: f64) -> String {
    if x_max >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The label at the end of a bar: "2.97 GB/s", "2.73 GB/s, 92% of baseline".
fn bar_label(line: &Measured, group_has_baseline: bool) -> String {
    let rate = format_rate(line.unit, line.value);
    match line.ratio {
        Some(_) if line.baseline => format!("{rate} (baseline)"),
        Some(ratio) if group_has_baseline && ratio.is_finite() => {
            format!("{rate}, {:.0}% of baseline", ratio * 100.0)
        }
        _ => rate,
    }
}

/// The SVG of one kind's throughput panels.
fn throughput_svg(groups: &[(&str, Vec<&Measured>)]) -> Result<String, PlotError> {
    let heights: Vec<u32> = groups
        .iter()
        .map(|(_, lines)| BAR_PANEL_EXTRA + BAR_SLOT * lines.len() as u32)
        .collect();
    let total: u32 = heights.iter().sum();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, total)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut rest = root.clone();
        for ((group, lines), height) in groups.iter().zip(&heights) {
            let (panel, below) = rest.split_vertically(*height);
            bar_panel(&panel, group, lines)?;
            rest = below;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// One group's horizontal bars, first line at the top.
fn bar_panel(area: &DrawingArea<SVGBackend, Shift>, group: &str, lines: &[&Measured]) -> Result<(), PlotError> {
    // Lines of a group share a unit; should they not, the first one's is used for the axis.
    let unit = lines.first().map_or(Unit::OpsPerSec, |m| m.unit);
    let max = lines.iter().map(|m| drawable(m.value)).fold(0.0, f64::max);
    let (divisor, unit_label) = axis_scale(unit, max);
    let scaled_max = max / divisor;
    // Room right of the longest bar for its label.
    let x_max = if scaled_max > 0.0 { scaled_max * 1.4 } else { 1.0 };
    let n = lines.len().max(1) as f64;
    let has_baseline = lines.iter().any(|m| m.baseline);

    let mut chart = ChartBuilder::on(area)
        .caption(super::truncate(group, MAX_CAPTION), (FONT, 20))
        .margin(10)
        .margin_left(20)
        .margin_right(20)
        .x_label_area_size(45)
        .build_cartesian_2d(0f64..x_max, 0f64..n)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(unit_label)
        .x_labels(8)
        .x_label_formatter(&|v| tick_label(*v, x_max))
        .draw()
        .map_err(draw_err)?;

    let name_style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Bottom));
    let value_style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, line) in lines.iter().enumerate() {
        let top = n - i as f64;
        let length = drawable(line.value) / divisor;
        let colour = if line.baseline { GREY } else { BLUE };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, top - 0.4), (length, top - 0.88)],
                colour.filled(),
            )))
            .map_err(draw_err)?;
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((0.0, top - 0.36))
                    + Text::new(super::truncate(&line.name, MAX_NAME), (2, 0), name_style.clone()),
            ))
            .map_err(draw_err)?;
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((length, top - 0.64))
                    + Text::new(bar_label(line, has_baseline), (6, 0), value_style.clone()),
            ))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// The CDF points of a line, latencies clamped for the logarithmic axis; from the percentiles
/// when the report has no distribution.
fn cdf_points(line: &Measured) -> Vec<(f64, f64)> {
    let Some(latency) = &line.latency else {
        return Vec::new();
    };
    let mut points: Vec<(f64, f64)> = if latency.cdf.is_empty() {
        vec![
            (latency.p50_us, 0.5),
            (latency.p90_us, 0.9),
            (latency.p99_us, 0.99),
            (latency.max_us, 1.0),
        ]
    } else {
        latency.cdf.clone()
    };
    points.retain(|(us, fraction)| us.is_finite() && fraction.is_finite());
    for (us, fraction) in &mut points {
        *us = us.max(MIN_LATENCY_US);
        *fraction = fraction.clamp(0.0, 1.0);
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    points
}

/// The SVG of one kind's latency panels.
fn latency_svg(groups: &[(&str, Vec<&Measured>)]) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let total = LATENCY_PANEL * groups.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (WIDTH, total)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        for (panel, (group, lines)) in root.split_evenly((groups.len(), 1)).iter().zip(groups) {
            cdf_panel(panel, group, lines)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// One group's latency distributions.
fn cdf_panel(area: &DrawingArea<SVGBackend, Shift>, group: &str, lines: &[&Measured]) -> Result<(), PlotError> {
    let series: Vec<(&Measured, Vec<(f64, f64)>)> = lines.iter().map(|m| (*m, cdf_points(m))).collect();
    let all_us = series.iter().flat_map(|(_, points)| points.iter().map(|p| p.0));
    let (mut lo, mut hi) = all_us.fold((f64::INFINITY, 0.0f64), |(lo, hi), us| (lo.min(us), hi.max(us)));
    if !lo.is_finite() {
        (lo, hi) = (1.0, 1000.0);
    }
    // Widen to whole decades around the data, at least one decade wide.
    lo = 10f64.powf(lo.log10().floor()).max(MIN_LATENCY_US);
    hi = 10f64.powf(hi.log10().ceil());
    if hi <= lo {
        hi = lo * 10.0;
    }

    let mut chart = ChartBuilder::on(area)
        .caption(super::truncate(group, MAX_CAPTION), (FONT, 20))
        .margin(10)
        .margin_right(25)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("latency (log scale)")
        .y_desc("fraction of operations")
        .x_label_formatter(&|us| format_latency(*us))
        .y_label_formatter(&|f| format!("{f:.1}"))
        .draw()
        .map_err(draw_err)?;

    let mut others = PALETTE.iter().cycle();
    for (line, points) in series {
        let colour = if line.baseline {
            GREY
        } else {
            *others.next().unwrap_or(&BLUE)
        };
        let label = match &line.latency {
            Some(l) => format!(
                "{} — p50 {}, p99 {}",
                super::truncate(&line.name, MAX_NAME),
                format_latency(l.p50_us),
                format_latency(l.p99_us)
            ),
            None => super::truncate(&line.name, MAX_NAME),
        };
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(draw_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Latency, Machine};

    use crate::bench::test_line as line;

    fn latency(p50: f64, p99: f64) -> Latency {
        Latency {
            p50_us: p50,
            p90_us: (p50 + p99) / 2.0,
            p99_us: p99,
            max_us: p99 * 2.0,
            cdf: vec![
                (0.0, 0.0),
                (p50 / 2.0, 0.1),
                (p50, 0.5),
                ((p50 + p99) / 2.0, 0.9),
                (p99, 0.99),
                (p99 * 2.0, 1.0),
            ],
        }
    }

    fn report(results: Vec<Measured>) -> Report {
        Report {
            tool: "sealstore bench all".into(),
            version: "0.0.0-test".into(),
            date: "2025-01-01T00:00:00Z".into(),
            machine: Machine {
                os: "linux".into(),
                arch: "x86_64".into(),
                threads: 2,
                cpu: None,
                cpu_features: Vec::new(),
            },
            parameters: serde_json::Map::new(),
            results,
        }
    }

    /// Text as the SVG holds it.
    fn escaped(text: &str) -> String {
        text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
    }

    /// The file, checked to be an SVG document (and, with python3 at hand, well-formed XML).
    fn read_svg(path: &Path) -> String {
        let svg = std::fs::read_to_string(path).unwrap();
        let trimmed = svg.trim();
        assert!(
            trimmed.starts_with("<svg"),
            "{}: {}",
            path.display(),
            &trimmed[..trimmed.len().min(80)]
        );
        assert!(trimmed.ends_with("</svg>"), "{}", path.display());
        let python = std::process::Command::new("python3")
            .args(["-c", "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])"])
            .arg(path)
            .output();
        match python {
            Ok(out) => assert!(
                out.status.success(),
                "{} is not well-formed XML: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("python3 not run ({e}); skipping the XML parse of {}", path.display()),
        }
        svg
    }

    #[test]
    fn writes_throughput_and_latency_charts() {
        let long_name = "x".repeat(200);
        let mut results = vec![
            line(
                "crypto",
                "AES-256-GCM seal, 64 MiB",
                "raw aws-lc-rs",
                Unit::BytesPerSec,
                3.1e9,
                true,
            ),
            line(
                "crypto",
                "AES-256-GCM seal, 64 MiB",
                "sealstore, 2 threads",
                Unit::BytesPerSec,
                2.9e9,
                false,
            ),
            line(
                "crypto",
                "XTS sector, 4 KiB",
                "sealstore & <friends>",
                Unit::BytesPerSec,
                812e6,
                false,
            ),
            line("crypto", "XTS sector, 4 KiB", &long_name, Unit::BytesPerSec, 0.0, false),
            line("object", "PUT 1 MiB", "sealstore", Unit::OpsPerSec, 10_534.0, false),
            line("object", "PUT 1 MiB", "minio", Unit::OpsPerSec, 9_000.0, true),
            line("object", "GET 1 MiB", "sealstore", Unit::OpsPerSec, 20_000.0, false),
        ];
        results[4].latency = Some(latency(85.0, 1240.0));
        results[5].latency = Some(latency(120.0, 2000.0));
        // Percentiles only, no distribution.
        results[6].latency = Some(Latency {
            cdf: Vec::new(),
            ..latency(40.0, 400.0)
        });
        crate::bench::add_ratios(&mut results);
        let report = report(results);

        let dir = tempfile::tempdir().unwrap();
        let written = write_svgs(&report, dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["crypto-throughput.svg", "object-throughput.svg", "object-latency.svg"]
        );
        for path in &written {
            assert!(path.starts_with(dir.path()) && path.is_file());
        }

        let crypto = read_svg(&written[0]);
        for caption in ["AES-256-GCM seal, 64 MiB", "XTS sector, 4 KiB"] {
            assert!(crypto.contains(caption), "caption {caption}");
        }
        for name in [
            "raw aws-lc-rs",
            "sealstore, 2 threads",
            "sealstore &amp; &lt;friends&gt;",
        ] {
            assert!(crypto.contains(name), "name {name}");
        }
        assert!(!crypto.contains("sealstore & <friends>"));
        assert!(crypto.contains(&format!("{}…", "x".repeat(MAX_NAME - 1))));
        assert!(!crypto.contains(&"x".repeat(MAX_NAME)));
        assert!(crypto.contains("GB/s"));
        assert!(crypto.contains(&escaped(&format_rate(Unit::BytesPerSec, 2.9e9))));
        assert!(crypto.contains("94% of baseline"), "ratio label");
        assert!(crypto.contains("(baseline)"));

        let object = read_svg(&written[1]);
        for text in [
            "PUT 1 MiB",
            "GET 1 MiB",
            "sealstore",
            "minio",
            "ops/s",
            "117% of baseline",
        ] {
            assert!(object.contains(text), "{text}");
        }
        assert!(object.contains(&format_rate(Unit::OpsPerSec, 10_534.0)));

        let latency = read_svg(&written[2]);
        for text in [
            "PUT 1 MiB",
            "GET 1 MiB",
            "fraction of operations",
            "sealstore — p50 85 µs, p99 1.24 ms",
            "minio — p50 120 µs, p99 2.00 ms",
            "sealstore — p50 40 µs, p99 400 µs",
        ] {
            assert!(latency.contains(text), "{text}");
        }
    }

    #[test]
    fn empty_report_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("charts");
        assert!(write_svgs(&report(Vec::new()), &target).unwrap().is_empty());
        assert!(!target.exists());
    }

    #[test]
    fn all_zero_and_single_lines() {
        let mut zero = line(
            "volume",
            "random 4 KiB writes",
            "sealstore",
            Unit::OpsPerSec,
            0.0,
            false,
        );
        zero.latency = Some(Latency {
            p50_us: 0.0,
            p90_us: 0.0,
            p99_us: 0.0,
            max_us: 0.0,
            cdf: vec![(0.0, 0.0), (0.0, 1.0)],
        });
        let results = vec![
            zero,
            line("volume", "sequential reads", "sealstore", Unit::BytesPerSec, 0.0, true),
            line("kms", "encrypt", "kms-core", Unit::OpsPerSec, f64::NAN, false),
        ];
        let dir = tempfile::tempdir().unwrap();
        let written = write_svgs(&report(results), dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["volume-throughput.svg", "volume-latency.svg", "kms-throughput.svg"]
        );
        let volume = read_svg(&written[0]);
        assert!(volume.contains("random 4 KiB writes") && volume.contains("sequential reads"));
        assert!(volume.contains("MB/s"));
        let latency = read_svg(&written[1]);
        assert!(latency.contains("sealstore — p50 0 µs, p99 0 µs"));
        let kms = read_svg(&written[2]);
        assert!(kms.contains("kms-core") && kms.contains("encrypt"));
    }

    #[test]
    fn helpers() {
        assert_eq!(file_stem("s3"), "s3");
        assert_eq!(file_stem("../x y"), "___x_y");
        assert_eq!(file_stem(""), "results");
        assert_eq!(crate::bench::truncate("short", 60), "short");
        assert_eq!(crate::bench::truncate("abcdef", 4), "abc…");
        assert_eq!(axis_scale(Unit::BytesPerSec, 2e9), (1e9, "GB/s"));
        assert_eq!(axis_scale(Unit::BytesPerSec, 2e8), (1e6, "MB/s"));
        assert_eq!(axis_scale(Unit::OpsPerSec, 2e8), (1.0, "ops/s"));
        assert_eq!(tick_label(2.5, 4.2), "2.5");
        assert_eq!(tick_label(12000.0, 14000.0), "12000");
    }
}
