//! Rendering command results: aligned tables and `field: value` blocks for people, JSON for
//! scripts.

use serde_json::Value;

/// A column of a table: header and the JSON field it shows.
pub(super) type Column = (&'static str, &'static str);

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints `rows` (a JSON array of objects) as an aligned table.
pub(super) fn table(rows: &Value, columns: &[Column]) {
    let rows = rows.as_array().map(Vec::as_slice).unwrap_or_default();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|(_, field)| cell(&r[*field])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |items: Vec<String>| {
        let padded: Vec<String> = items.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|(h, _)| h.to_string()).collect());
    for r in cells {
        line(r);
    }
    if rows.is_empty() {
        println!("(none)");
    }
}

/// Prints an object as `field  value` lines in its own field order; nested objects are
/// flattened to dotted names (`autoKeyRotationDetails.rotationIntervalInDays`).
pub(super) fn fields(obj: &Value) {
    fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, v) in map {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&name, v, out);
                }
            }
            _ => out.push((prefix.to_owned(), cell(v))),
        }
    }
    if !obj.is_object() {
        println!("{}", cell(obj));
        return;
    }
    let mut rows = Vec::new();
    flatten("", obj, &mut rows);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}

/// Pretty JSON.
pub(super) fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("values serialize"));
}
