//! Small JSON files that must never be seen half-written (`serve.json`, the console's
//! sign-in failures): written to a temporary file, synced, then renamed over the old one.

use std::path::Path;

/// Writes `value` to `path` atomically (temp file beside it, fsync, rename).
pub(crate) fn write_atomically(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, serde_json::to_string_pretty(value)?.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
