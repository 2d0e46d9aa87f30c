//! `docs/S3.md` lists exactly the S3 operations the server implements: the names in its
//! operation table are the methods of the `S3` impl in `src/s3/mod.rs`.

use std::collections::BTreeSet;

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[test]
fn the_operation_table_matches_the_implementation() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/S3.md")).unwrap();
    let section = doc
        .split("## Operations")
        .nth(1)
        .expect("docs/S3.md has an Operations section");
    let section = section.split("\n## ").next().unwrap();
    let documented: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(snake_case)
        .collect();

    let code = std::fs::read_to_string(format!("{root}/src/s3/mod.rs")).unwrap();
    let s3_impl = code.split("impl S3 for S3Face").nth(1).expect("the S3 impl");
    let implemented: BTreeSet<String> = s3_impl
        .split("async fn ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .map(str::to_owned)
        .collect();

    assert!(implemented.len() >= 20, "found only {implemented:?}");
    assert_eq!(
        documented, implemented,
        "docs/S3.md's operation table and src/s3/mod.rs differ"
    );
}
