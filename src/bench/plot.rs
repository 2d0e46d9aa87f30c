//! SVG charts of a benchmark [`Report`]: per kind, the throughput of every line as horizontal
//! bars (one panel per group, on a logarithmic axis when the bars differ by orders of
//! magnitude), and, where operations were timed, their latency distributions (one CDF panel
//! per group, on a logarithmic latency axis, the legend below the plot).
//!
//! Colours follow each line's [`Role`]: sealstore blue, baselines grey, peers orange. Every
//! axis has one unit, chosen from its largest value; numbers have thousands separators.
//!
//! Text is emitted as SVG `<text>` (plotters escapes it); layout uses plotters' naive font
//! metrics, so the charts need no font files.

use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{format_latency, format_number, format_rate, Measured, Report, Role, Unit};

/// Why charts could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlotError {
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
/// Height of one latency panel's plot (caption and axes included), pixels.
const LATENCY_PANEL: u32 = 440;
/// Height of one legend entry below a latency plot, pixels.
const LEGEND_ROW: u32 = 22;
/// Longest name drawn, in characters.
const MAX_NAME: usize = 60;
/// Longest caption drawn, in characters.
const MAX_CAPTION: usize = 90;
/// The smallest latency drawn on the logarithmic axis, microseconds.
const MIN_LATENCY_US: f64 = 0.1;
/// A group's bars go on a logarithmic axis when its longest bar is more than this many times
/// its shortest (on a linear axis the shortest would be a hairline or nothing).
const LOG_RATIO: f64 = 20.0;

/// Colours by [`Role`], each a family of shades (several lines of one role in a latency
/// panel take its shades in turn; bars take the first): sealstore blue, baselines grey,
/// peers orange (Okabe–Ito hues, distinguishable with colour-vision deficiencies).
const SEALSTORE: [RGBColor; 3] = [RGBColor(0, 114, 178), RGBColor(86, 180, 233), RGBColor(0, 60, 110)];
const BASELINE: [RGBColor; 3] = [RGBColor(150, 150, 150), RGBColor(90, 90, 90), RGBColor(195, 195, 195)];
const PEER: [RGBColor; 3] = [RGBColor(230, 159, 0), RGBColor(213, 94, 0), RGBColor(240, 200, 80)];
/// The frame of a latency panel's legend.
const LEGEND_FRAME: RGBColor = RGBColor(120, 120, 120);

const FONT: &str = "sans-serif";

/// The shades a role is drawn in.
fn shades(role: Role) -> &'static [RGBColor; 3] {
    match role {
        Role::Sealstore => &SEALSTORE,
        Role::Baseline => &BASELINE,
        Role::Peer => &PEER,
    }
}

/// Writes the SVG charts of `report` into `dir`; returns the files written.
///
/// For each kind present: `KIND-throughput.svg`, and `KIND-latency.svg` when some line of that
/// kind has a latency. An empty report writes nothing (and does not create `dir`).
pub(crate) fn write_svgs(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
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

/// How a group's values are drawn on the x axis: divided by `divisor`, described as `label`
/// (one unit for the whole axis, chosen from its largest value).
fn axis_scale(unit: Unit, max: f64) -> (f64, &'static str) {
    match unit {
        Unit::BytesPerSec if max >= 1e9 => (1e9, "GB/s"),
        Unit::BytesPerSec => (1e6, "MB/s"),
        Unit::OpsPerSec => (1.0, "ops/s"),
    }
}

/// An x-axis tick of a linear throughput axis ending at `x_max`: "2.5", "400", "12,000".
fn tick_label(v: f64, x_max: f64) -> String {
    format_number(v, if x_max >= 10.0 { 0 } else { 1 })
}

/// A tick of a logarithmic axis (powers of ten and the steps between): "0.01", "0.5", "20",
/// "1,000,000".
fn log_tick_label(v: f64) -> String {
    if v >= 10.0 {
        return format_number(v, 0);
    }
    let decimals = if v > 0.0 {
        (-v.log10()).ceil().max(0.0) as usize + 1
    } else {
        1
    };
    let text = format_number(v, decimals.min(9));
    let text = text.trim_end_matches('0');
    text.trim_end_matches('.').to_owned()
}

/// The unit of a latency axis ending at `max_us` microseconds: its divisor and name.
fn latency_unit(max_us: f64) -> (f64, &'static str) {
    if max_us > 1e7 {
        (1e6, "s")
    } else if max_us > 1e4 {
        (1e3, "ms")
    } else {
        (1.0, "µs")
    }
}

/// The label at the end of a bar: "2.97 GB/s", "2.73 GB/s, 92% of baseline".
fn bar_label(line: &Measured, group_has_baseline: bool) -> String {
    let rate = format_rate(line.unit, line.value);
    match line.ratio {
        Some(_) if line.baseline => format!("{rate} (baseline)"),
        Some(ratio) if group_has_baseline && ratio.is_finite() => {
            format!("{rate}, {}% of baseline", format_number(ratio * 100.0, 0))
        }
        _ => rate,
    }
}

/// A group's caption, saying so when nothing in the group is a baseline or a peer.
fn caption(group: &str, lines: &[&Measured]) -> String {
    let compared = lines.iter().any(|m| m.baseline || m.role != Role::Sealstore);
    let group = super::truncate(group, MAX_CAPTION);
    if compared {
        group
    } else {
        format!("{group} — no baseline measured in this run")
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

/// The x axis of a group's bars: linear from 0, or logarithmic when the bars differ by more
/// than [`LOG_RATIO`] times (values already divided by the axis unit).
#[derive(Debug, Clone, Copy, PartialEq)]
enum BarAxis {
    /// From 0 to the end.
    Linear(f64),
    /// From the first to the second, both positive.
    Log(f64, f64),
}

impl BarAxis {
    fn of(values: &[f64]) -> Self {
        let max = values.iter().copied().fold(0.0, f64::max);
        let min = values
            .iter()
            .copied()
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        if max > 0.0 && max / min > LOG_RATIO {
            // Whole decades from below the shortest bar; room right of the longest for its
            // label (it ends at 70% of the width).
            let mut lo = 10f64.powf(min.log10().floor());
            if min / lo < 2.0 {
                lo /= 10.0;
            }
            let hi = 10f64.powf(lo.log10() + (max.log10() - lo.log10()) / 0.7);
            BarAxis::Log(lo, hi)
        } else {
            // Room right of the longest bar for its label.
            BarAxis::Linear(if max > 0.0 { max * 1.4 } else { 1.0 })
        }
    }
}

/// One group's horizontal bars, first line at the top, each in its role's colour.
fn bar_panel(area: &DrawingArea<SVGBackend, Shift>, group: &str, lines: &[&Measured]) -> Result<(), PlotError> {
    // Lines of a group share a unit; should they not, the first one's is used for the axis.
    let unit = lines.first().map_or(Unit::OpsPerSec, |m| m.unit);
    let max = lines.iter().map(|m| drawable(m.value)).fold(0.0, f64::max);
    let (divisor, unit_label) = axis_scale(unit, max);
    let values: Vec<f64> = lines.iter().map(|m| drawable(m.value) / divisor).collect();
    let n = lines.len().max(1) as f64;

    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption(group, lines), (FONT, 20))
        .margin(10)
        .margin_left(20)
        .margin_right(20)
        .x_label_area_size(45);
    match BarAxis::of(&values) {
        BarAxis::Linear(x_max) => {
            let mut chart = builder.build_cartesian_2d(0f64..x_max, 0f64..n).map_err(draw_err)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_desc(unit_label)
                .x_labels(8)
                .x_label_formatter(&|v| tick_label(*v, x_max))
                .draw()
                .map_err(draw_err)?;
            draw_bars(&mut chart, 0.0, lines, &values)
        }
        BarAxis::Log(lo, hi) => {
            let mut chart = builder
                .build_cartesian_2d((lo..hi).log_scale(), 0f64..n)
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_desc(format!("{unit_label} (log scale)"))
                .x_labels(8)
                .x_label_formatter(&|v| log_tick_label(*v))
                .draw()
                .map_err(draw_err)?;
            draw_bars(&mut chart, lo, lines, &values)
        }
    }
}

/// The bars (from `start`, the axis' left end), names and value labels of a group.
fn draw_bars<X>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, RangedCoordf64>>,
    start: f64,
    lines: &[&Measured],
    values: &[f64],
) -> Result<(), PlotError>
where
    X: Ranged<ValueType = f64>,
{
    let n = lines.len().max(1) as f64;
    let has_baseline = lines.iter().any(|m| m.baseline);
    let name_style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Bottom));
    let value_style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (line, value)) in lines.iter().zip(values).enumerate() {
        let top = n - i as f64;
        let end = value.max(start);
        let colour = shades(line.role)[0];
        if end > start {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(start, top - 0.4), (end, top - 0.88)],
                    colour.filled(),
                )))
                .map_err(draw_err)?;
        }
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((start, top - 0.36))
                    + Text::new(super::truncate(&line.name, MAX_NAME), (2, 0), name_style.clone()),
            ))
            .map_err(draw_err)?;
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((end, top - 0.64))
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

/// Height of a latency panel with `lines` series: the plot, then the legend below it.
fn latency_panel_height(lines: usize) -> u32 {
    LATENCY_PANEL + LEGEND_ROW * lines as u32 + 20
}

/// The SVG of one kind's latency panels.
fn latency_svg(groups: &[(&str, Vec<&Measured>)]) -> Result<String, PlotError> {
    let heights: Vec<u32> = groups
        .iter()
        .map(|(_, lines)| latency_panel_height(lines.len()))
        .collect();
    let total: u32 = heights.iter().sum();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, total)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut rest = root.clone();
        for ((group, lines), height) in groups.iter().zip(&heights) {
            let (panel, below) = rest.split_vertically(*height);
            cdf_panel(&panel, group, lines)?;
            rest = below;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// One group's latency distributions, each line in a shade of its role's colour, the legend
/// in a frame below the plot (never over the curves).
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
    let (divisor, unit) = latency_unit(hi);

    let (plot, legend) = area.split_vertically(LATENCY_PANEL);
    let mut chart = ChartBuilder::on(&plot)
        .caption(caption(group, lines), (FONT, 20))
        .margin(10)
        .margin_right(25)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(format!("latency, {unit} (log scale)"))
        .y_desc("fraction of operations")
        .x_label_formatter(&|us| log_tick_label(*us / divisor))
        .y_label_formatter(&|f| format!("{f:.1}"))
        .draw()
        .map_err(draw_err)?;

    // The legend's frame spans the plot's width, one row per line.
    let (left, right) = (80, WIDTH as i32 - 25);
    let bottom = (LEGEND_ROW * lines.len() as u32 + 10) as i32;
    legend
        .draw(&Rectangle::new(
            [(left, 4), (right, bottom)],
            LEGEND_FRAME.stroke_width(1),
        ))
        .map_err(draw_err)?;
    let label_style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut used = [0usize; 3];
    for (i, (line, points)) in series.into_iter().enumerate() {
        let role = line.role as usize;
        let colour = shades(line.role)[used[role] % 3];
        used[role] += 1;
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(draw_err)?;
        let label = match &line.latency {
            Some(l) => format!(
                "{} — p50 {}, p99 {}",
                super::truncate(&line.name, MAX_NAME),
                format_latency(l.p50_us),
                format_latency(l.p99_us)
            ),
            None => super::truncate(&line.name, MAX_NAME),
        };
        let y = 4 + LEGEND_ROW as i32 * i as i32 + LEGEND_ROW as i32 / 2 + 3;
        legend
            .draw(&PathElement::new(
                vec![(left + 10, y), (left + 40, y)],
                colour.stroke_width(3),
            ))
            .map_err(draw_err)?;
        legend
            .draw(&Text::new(label, (left + 50, y), label_style.clone()))
            .map_err(draw_err)?;
    }
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
        assert_eq!(tick_label(12000.0, 14000.0), "12,000");
        assert_eq!(log_tick_label(2_000_000.0), "2,000,000");
        assert_eq!(log_tick_label(0.01), "0.01");
        assert_eq!(log_tick_label(0.5), "0.5");
        assert_eq!(log_tick_label(1.0), "1");
        assert_eq!(latency_unit(1e4), (1.0, "µs"));
        assert_eq!(latency_unit(1e6), (1e3, "ms"));
        assert_eq!(latency_unit(1e8), (1e6, "s"));
    }

    /// The elements named `tag` of an SVG (as plotters writes them: one per line, attributes
    /// `name="value"`), each as its attributes and its text.
    fn elements(svg: &str, tag: &str) -> Vec<(std::collections::HashMap<String, String>, String)> {
        let open = format!("<{tag} ");
        let mut out = Vec::new();
        let mut rest = svg;
        while let Some(at) = rest.find(&open) {
            rest = &rest[at + open.len()..];
            let end = rest.find('>').unwrap();
            let mut attributes = std::collections::HashMap::new();
            let mut attrs = &rest[..end];
            while let Some(eq) = attrs.find("=\"") {
                let name = attrs[..eq].trim().to_owned();
                let value_end = attrs[eq + 2..].find('"').unwrap();
                attributes.insert(name, attrs[eq + 2..eq + 2 + value_end].to_owned());
                attrs = &attrs[eq + 2 + value_end + 1..];
            }
            let text = if rest[..end].ends_with('/') {
                String::new()
            } else {
                let close = rest.find(&format!("</{tag}>")).unwrap();
                rest[end + 1..close].trim().to_owned()
            };
            out.push((attributes, text));
        }
        out
    }

    fn hex(colour: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", colour.0, colour.1, colour.2)
    }

    /// The series of a latency chart: stroke colour and points, pixels.
    fn curves(svg: &str) -> Vec<(String, Vec<(f64, f64)>)> {
        elements(svg, "polyline")
            .into_iter()
            .filter(|(a, _)| a["stroke-width"] == "2")
            .map(|(a, _)| {
                let points = a["points"]
                    .split_whitespace()
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect();
                (a["stroke"].clone(), points)
            })
            .collect()
    }

    fn with_role(mut m: Measured, role: Role, p50: f64) -> Measured {
        m.role = role;
        m.latency = Some(latency(p50, p50 * 12_000.0));
        m
    }

    /// The lines of a bench volume run: sealstore, the plain baselines, qemu's LUKS (a peer).
    fn roles_report() -> Report {
        let g = "NBD random 4 KiB writes";
        report(vec![
            with_role(
                line("volume", g, "sealstore NBD", Unit::OpsPerSec, 20_000.0, false),
                Role::Sealstore,
                80.0,
            ),
            with_role(
                line("volume", g, "nbdkit file", Unit::OpsPerSec, 40_000.0, true),
                Role::Baseline,
                50.0,
            ),
            with_role(
                line("volume", g, "qemu-nbd LUKS", Unit::OpsPerSec, 15_000.0, false),
                Role::Peer,
                100.0,
            ),
            with_role(
                line("volume", g, "qemu-nbd raw", Unit::OpsPerSec, 39_000.0, false),
                Role::Baseline,
                55.0,
            ),
            with_role(
                line("volume", g, "sealstore, 2 threads", Unit::OpsPerSec, 2_000_000.0, false),
                Role::Sealstore,
                1.0,
            ),
        ])
    }

    #[test]
    fn colours_follow_roles_not_positions() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_svgs(&roles_report(), dir.path()).unwrap();
        let bars = read_svg(&written[0]);
        let fills: Vec<String> = elements(&bars, "rect")
            .into_iter()
            .map(|(a, _)| a["fill"].clone())
            .filter(|f| [&SEALSTORE[0], &BASELINE[0], &PEER[0]].iter().any(|c| hex(**c) == *f))
            .collect();
        let (blue, grey, orange) = (hex(SEALSTORE[0]), hex(BASELINE[0]), hex(PEER[0]));
        assert_eq!(
            fills,
            [&blue, &grey, &orange, &grey, &blue].map(String::clone),
            "{bars}"
        );

        let latency = read_svg(&written[1]);
        let strokes: Vec<String> = curves(&latency).into_iter().map(|(s, _)| s).collect();
        // A second line of a role takes the role's second shade.
        assert_eq!(
            strokes,
            [blue, grey, orange, hex(BASELINE[1]), hex(SEALSTORE[1])],
            "{latency}"
        );
    }

    #[test]
    fn legend_is_clear_of_the_curves() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_svgs(&roles_report(), dir.path()).unwrap();
        let svg = read_svg(&written[1]);
        let frames: Vec<_> = elements(&svg, "rect")
            .into_iter()
            .filter(|(a, _)| a["stroke"] == hex(LEGEND_FRAME) && a["fill"] == "none")
            .map(|(a, _)| {
                let n = |k: &str| a[k].parse::<f64>().unwrap();
                (n("x"), n("y"), n("x") + n("width"), n("y") + n("height"))
            })
            .collect();
        assert_eq!(frames.len(), 1, "{svg}");
        let (x0, y0, x1, y1) = frames[0];
        let curves = curves(&svg);
        assert_eq!(curves.len(), 5);
        for (colour, points) in curves {
            for (x, y) in points {
                assert!(
                    !(x0..=x1).contains(&x) || !(y0..=y1).contains(&y),
                    "{colour} point ({x}, {y}) is under the legend {:?}",
                    frames[0]
                );
            }
        }
        // Every label is in the frame.
        for (a, text) in elements(&svg, "text")
            .into_iter()
            .filter(|(_, t)| t.contains(" — p50 "))
        {
            let (x, y): (f64, f64) = (a["x"].parse().unwrap(), a["y"].parse().unwrap());
            assert!(
                (x0..=x1).contains(&x) && (y0..=y1).contains(&y),
                "{text} outside the legend"
            );
        }
    }

    #[test]
    fn ticks_have_separators_and_one_unit_per_axis() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_svgs(&roles_report(), dir.path()).unwrap();
        for path in &written {
            let svg = read_svg(path);
            let texts: Vec<String> = elements(&svg, "text").into_iter().map(|(_, t)| t).collect();
            for text in &texts {
                // No run of four digits or more without a separator ("2000000").
                let mut run = 0;
                for c in text.chars() {
                    run = if c.is_ascii_digit() { run + 1 } else { 0 };
                    assert!(run < 4, "{text:?} in {}", path.display());
                }
                // Ticks are plain numbers: the unit is the axis', once.
                let unit_tick = text.split_once(' ').is_some_and(|(n, u)| {
                    n.replace([',', '.'], "").parse::<u64>().is_ok() && ["µs", "ms", "s"].contains(&u)
                });
                assert!(!unit_tick, "tick with its own unit: {text:?}");
            }
            let ticks: Vec<&String> = texts
                .iter()
                .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '.'))
                .collect();
            assert!(ticks.len() >= 4, "{ticks:?}");
            if path.ends_with("volume-latency.svg") {
                // Up to 10 s: milliseconds, from the axis' end.
                assert_eq!(texts.iter().filter(|t| t.starts_with("latency, ")).count(), 1);
                assert!(texts.iter().any(|t| t == "latency, ms (log scale)"), "{texts:?}");
            }
        }
    }

    #[test]
    fn every_bar_is_visible_on_a_log_axis_and_a_lone_line_says_it_has_no_baseline() {
        let g = "wrap a data key";
        let mut results = vec![
            line("kms", g, "sealstore, SOFTWARE key", Unit::OpsPerSec, 50_000.0, true),
            line("kms", g, "sealstore, HSM key", Unit::OpsPerSec, 2_000.0, false),
            line("kms", g, "sealstore, EXTERNAL key", Unit::OpsPerSec, 300.0, false),
            line("kms", g, "raw AES-256-GCM", Unit::OpsPerSec, 6_800_000.0, false),
            line("s3", "PUT 4 KiB", "sealstore serve", Unit::OpsPerSec, 900.0, false),
        ];
        results[0].role = Role::Sealstore;
        results[3].role = Role::Peer;
        crate::bench::add_ratios(&mut results);
        let dir = tempfile::tempdir().unwrap();
        let written = write_svgs(&report(results), dir.path()).unwrap();
        let kms = read_svg(&written[0]);
        let widths: Vec<f64> = elements(&kms, "rect")
            .into_iter()
            .filter(|(a, _)| a["fill"] == hex(SEALSTORE[0]) || a["fill"] == hex(PEER[0]))
            .map(|(a, _)| a["width"].parse().unwrap())
            .collect();
        assert_eq!(widths.len(), 4, "{kms}");
        assert!(widths.iter().all(|w| *w >= 40.0), "bars {widths:?} px");
        assert!(kms.contains("ops/s (log scale)"));
        assert!(kms.contains("13,600% of baseline"), "{kms}");
        assert!(!kms.contains("no baseline"));
        let s3 = read_svg(&written[1]);
        assert!(s3.contains("PUT 4 KiB — no baseline measured in this run"), "{s3}");
    }
}
