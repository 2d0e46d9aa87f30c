//! docs/FORMATS.md, "Object layout": the worked examples are what the code computes.

use object_store::path::Path;
use sealstore::object::layout::{key_of, object_location};

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
            let (Some(key), Some(location)) = (
                key.strip_prefix('`').and_then(|k| k.strip_suffix('`')),
                location.strip_prefix('`').and_then(|l| l.strip_suffix('`')),
            ) else {
                continue;
            };
            assert_eq!(object_location(key).as_ref(), location, "key {key:?}");
            assert_eq!(key_of(&Path::parse(location).unwrap()).as_deref(), Some(key));
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} examples found");
}
