//! Tables for the terminal, at most [`WIDTH`] columns: the tables `sealstore bench` prints after
//! each kind and `sealstore bench compare` prints.
//!
//! Groups are lines of their own above their rows (not a column), and a name too long for its
//! column is wrapped by design: it gets a line of its own, its figures on the next line.

use std::fmt::Write as _;

use super::{format_latency, format_number, format_rate, truncate, Measured};

/// The widest line a table prints, in characters.
pub(crate) const WIDTH: usize = 80;

/// Narrowest the name column gets before names wrap onto lines of their own.
const MIN_NAME: usize = 14;

/// One line of a [`Table`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Row {
    /// Text across the table (a group's title, a note), cut to the table's width.
    Text(String),
    /// Cells: the first (a name) left-aligned, the others right-aligned.
    Cells(Vec<String>),
}

/// Rows under a header, rendered at most [`WIDTH`] characters wide.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Table {
    /// Column titles, aligned as the cells.
    pub header: Vec<String>,
    /// The rows, in order.
    pub rows: Vec<Row>,
    /// Spaces before every cell row (text rows are not indented).
    pub indent: usize,
}

impl Table {
    /// The table as text, each line ending in a newline and at most [`WIDTH`] characters.
    pub(crate) fn render(&self) -> String {
        let cells = std::iter::once(&self.header).chain(self.rows.iter().filter_map(|r| match r {
            Row::Cells(c) => Some(c),
            Row::Text(_) => None,
        }));
        let columns = self.header.len();
        let mut widths = vec![0usize; columns];
        for row in cells {
            for (c, cell) in row.iter().enumerate().take(columns) {
                widths[c] = widths[c].max(cell.chars().count());
            }
        }
        // The name column gets what the figures leave.
        let figures: usize = widths.iter().skip(1).map(|w| w + 2).sum();
        let room = WIDTH.saturating_sub(self.indent + figures).max(MIN_NAME);
        widths[0] = widths[0].min(room);

        let mut out = String::new();
        let indent = " ".repeat(self.indent);
        let line = |out: &mut String, cells: &[String]| {
            let mut text = indent.clone();
            for (c, cell) in cells.iter().enumerate().take(columns) {
                let width = widths[c];
                if c == 0 {
                    let _ = write!(text, "{:<width$}", truncate(cell, width));
                } else {
                    let _ = write!(text, "  {cell:>width$}");
                }
            }
            out.push_str(&truncate(text.trim_end(), WIDTH));
            out.push('\n');
        };
        line(&mut out, &self.header);
        for row in &self.rows {
            match row {
                Row::Text(text) => {
                    out.push_str(&truncate(text, WIDTH));
                    out.push('\n');
                }
                Row::Cells(cells) => {
                    let name = cells.first().map(String::as_str).unwrap_or_default();
                    if name.chars().count() > widths[0] {
                        // Wrapped: the name alone, then its figures.
                        let _ = writeln!(out, "{indent}{}", truncate(name, WIDTH - self.indent));
                        let mut rest = cells.clone();
                        rest[0] = String::new();
                        line(&mut out, &rest);
                    } else {
                        line(&mut out, cells);
                    }
                }
            }
        }
        out
    }
}

/// The table `sealstore bench` prints for one kind's results: per group a title line, then
/// each line's name, rate, ratio to the baseline and latency percentiles.
pub(crate) fn results(kind: &str, results: &[Measured]) -> String {
    let header = ["IMPLEMENTATION", "RATE", "VS BASE", "P50", "P99"];
    let mut table = Table {
        header: header.iter().map(|h| h.to_string()).collect(),
        rows: Vec::new(),
        indent: 2,
    };
    let mut group: Option<&str> = None;
    for r in results {
        if group != Some(r.group.as_str()) {
            table.rows.push(Row::Text(r.group.clone()));
            group = Some(&r.group);
        }
        let (p50, p99) = r.latency.as_ref().map_or(("-".into(), "-".into()), |l| {
            (format_latency(l.p50_us), format_latency(l.p99_us))
        });
        table.rows.push(Row::Cells(vec![
            r.name.clone(),
            format_rate(r.unit, r.value),
            r.ratio
                .map_or("-".into(), |x| format!("{}%", format_number(x * 100.0, 0))),
            p50,
            p99,
        ]));
    }
    format!("\n{}\n{}\n", kind.to_uppercase(), table.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{test_line, Latency, Unit};

    #[test]
    fn fits_80_columns_and_wraps_long_names() {
        let long = "sealstore serve in front of a SeaweedFS cluster on three machines";
        let mut lines = vec![
            test_line(
                "s3",
                "PUT 4 KiB objects, 32 clients",
                long,
                Unit::OpsPerSec,
                1_234_567.0,
                false,
            ),
            test_line(
                "s3",
                "PUT 4 KiB objects, 32 clients",
                "SeaweedFS",
                Unit::OpsPerSec,
                1500.0,
                true,
            ),
            test_line(
                "s3",
                &"a very long group ".repeat(10),
                "sealstore",
                Unit::BytesPerSec,
                3e9,
                false,
            ),
        ];
        lines[0].latency = Some(Latency {
            p50_us: 1234.0,
            p90_us: 2000.0,
            p99_us: 1_500_000.0,
            max_us: 2e6,
            cdf: Vec::new(),
        });
        lines[0].ratio = Some(823.0);
        let text = results("s3", &lines);
        for line in text.lines() {
            assert!(
                line.chars().count() <= WIDTH,
                "{} wide: {line:?}\n{text}",
                line.chars().count()
            );
        }
        // The long name is whole, on its own line, its figures below it.
        let at = text.lines().position(|l| l.trim() == long).expect(&text);
        let figures = text.lines().nth(at + 1).unwrap();
        assert!(
            figures.contains("1,234,567 ops/s") && figures.contains("82,300%"),
            "{figures}"
        );
        assert!(text.contains("  SeaweedFS "), "{text}");
        assert!(text.contains("PUT 4 KiB objects, 32 clients\n"), "{text}");
        assert!(text.contains("S3\n"), "{text}");
    }
}
