//! docs/FORMATS.md, "Object layout": the worked examples are what the code computes.

use object_store::path::Path;
use sealstore::internals::layout::{self, key_of, object_location};

#[test]
fn layout_examples_in_formats_md_hold() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FORMATS.md")).unwrap();
    let section = doc
        .split("## Object layout")
        .nth(1)
        .expect("FORMATS.md has an Object layout section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut checked = 0;
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, key, location, _] = cells.as_slice() {
            let quoted = |cell: &str| {
                cell.strip_prefix('`')
                    .and_then(|k| k.strip_suffix('`'))
                    .map(str::to_owned)
            };
            // A key is `text`, or N × `text` (text repeated N times).
            let key = match key.split_once(" × ") {
                Some((n, text)) => quoted(text).zip(n.parse::<usize>().ok()).map(|(t, n)| t.repeat(n)),
                None => quoted(key),
            };
            let (Some(key), Some(location)) = (key, quoted(location)) else {
                continue;
            };
            assert_eq!(object_location(&key).as_ref(), location, "key {key:?}");
            let decoded = key_of(&Path::parse(&location).unwrap());
            if layout::is_hashed(&Path::parse(&location).unwrap()) {
                assert_eq!(decoded, None, "a hashed name does not spell its key");
            } else {
                assert_eq!(decoded.as_deref(), Some(key.as_str()));
            }
            checked += 1;
        }
    }
    assert!(checked >= 7, "only {checked} examples found");
}
