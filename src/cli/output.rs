//! Rendering command results: aligned tables and `field: value` blocks for people, JSON for
//! scripts.

use serde_json::Value;

/// A column of a table: header and the JSON field it shows.
pub type Column = (&'static str, &'static str);

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints `rows` (a JSON array of objects) as an aligned table.
pub fn table(rows: &Value, columns: &[Column]) {
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

/// Prints an object as `field: value` lines in its own field order.
pub fn fields(obj: &Value) {
    let Some(map) = obj.as_object() else {
        println!("{}", cell(obj));
        return;
    };
    let width = map.keys().map(|k| k.len()).max().unwrap_or(0);
    for (k, v) in map {
        println!("{k:<width$}  {}", cell(v));
    }
}

/// Pretty JSON.
pub fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("values serialize"));
}
